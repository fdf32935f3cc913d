#!/usr/bin/env python3
"""Checks tools/convert_mamba_ssm.py end to end (run where torch and transformers 5.x are; no GPU,
no mamba_ssm needed):

    python3 tests/data/make_mamba_ssm_fixture.py OUT_DIR [--program build/.../transmamba]

For each case it writes a tiny random model in mamba_ssm's format by hand, as MambaLMHeadModel's
state_dict() and config.json would be (OUT_DIR/<case>/mamba_ssm: config.json with d_model /
n_layer / ssm_cfg, pytorch_model.bin with mamba_ssm's parameter names, the vocabulary padded to
pad_vocab_size_multiple, a tied lm_head.weight listed beside the embedding as torch lists shared
parameters), converts it (OUT_DIR/<case>/converted), loads the result with transformers'
Mamba2ForCausalLM (refusing any missing or unexpected tensor) and writes OUT_DIR/<case>/expected.safetensors:
input_ids (2, 12) int64 and transformers' float32 logits.

With --program (the transmamba program), it also runs `transmamba run` on the converted directory
and compares its logits with transformers' (bound 1e-4 relative to the largest logit; n_groups is 1,
where transformers' torch path and mamba_ssm agree on the gated norm), and checks that the
program refuses the unconverted directory, naming mamba_ssm and the converter. Exit status 0 only
when every check passes.
"""
import argparse
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import convert_mamba_ssm  # noqa: E402

BATCH, SEQLEN = 2, 12
CASES = [
    # vocab 50 padded to 56 rows; tied; mamba_ssm's defaults for everything ssm_cfg leaves out but sizes.
    dict(name="mamba_ssm_tied", seed=11,
         config={"d_model": 64, "d_intermediate": 0, "n_layer": 2, "vocab_size": 50,
                 "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16, "chunk_size": 8},
                 "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
                 "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True}),
    dict(name="mamba_ssm_untied", seed=12,
         config={"d_model": 48, "n_layer": 3, "vocab_size": 64,
                 "ssm_cfg": {"layer": "Mamba2", "d_state": 8, "headdim": 12, "expand": 2, "d_conv": 3, "chunk_size": 4},
                 "pad_vocab_size_multiple": 16, "tie_embeddings": False}),
]


def mamba_ssm_state_dict(config, seed):
    """MambaLMHeadModel's state dict for `config`, random weights in trained ranges, mamba_ssm's names."""
    c = dict(convert_mamba_ssm.MAMBA_CONFIG_DEFAULTS, **config)
    s = dict(convert_mamba_ssm.MAMBA2_DEFAULTS, **{k: v for k, v in c["ssm_cfg"].items() if k != "layer"})
    d = c["d_model"]
    multiple = c["pad_vocab_size_multiple"]
    V = (c["vocab_size"] + multiple - 1) // multiple * multiple
    di = s["expand"] * d
    h = di // s["headdim"]
    g, n, k = s["ngroups"], s["d_state"], s["d_conv"]
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    state = {"backbone.embedding.weight": uniform((V, d), -1, 1) / d ** 0.5}
    for i in range(c["n_layer"]):
        pre = f"backbone.layers.{i}."
        dt = torch.exp(uniform((h,), torch.log(torch.tensor(1e-3)), torch.log(torch.tensor(1e-1))))
        state.update({
            pre + "norm.weight": uniform((d,), 0.5, 1.5),
            pre + "mixer.in_proj.weight": uniform((2 * di + 2 * g * n + h, d), -1, 1) / d ** 0.5,
            pre + "mixer.conv1d.weight": uniform((di + 2 * g * n, 1, k), -0.5, 0.5),
            pre + "mixer.conv1d.bias": uniform((di + 2 * g * n,), -0.1, 0.1),
            pre + "mixer.dt_bias": dt + torch.log(-torch.expm1(-dt)),
            pre + "mixer.A_log": torch.log(uniform((h,), 1, 16)),
            pre + "mixer.D": uniform((h,), 0.5, 1.5),
            pre + "mixer.norm.weight": uniform((di,), 0.5, 1.5),
            pre + "mixer.out_proj.weight": uniform((d, di), -1, 1) / di ** 0.5,
        })
    state["backbone.norm_f.weight"] = uniform((d,), 0.5, 1.5)
    state["lm_head.weight"] = state["backbone.embedding.weight"] if c["tie_embeddings"] else uniform((V, d), -1, 1) / d ** 0.5
    return state, V


def transformers_logits(path, ids):
    from transformers import Mamba2ForCausalLM
    try:
        model, info = Mamba2ForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    except TypeError:
        model, info = Mamba2ForCausalLM.from_pretrained(path, torch_dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise SystemExit(f"transformers loaded {path} with {bad}")
    with torch.no_grad():
        return model.eval()(ids).logits.float()


def save_expected(path, ids, logits):
    from safetensors.torch import save_file
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()}, path, metadata={"format": "pt"})


def check_refusals():
    for bad, needle in [({"d_model": 8, "n_layer": 1, "ssm_cfg": {}}, "only Mamba2 layers"),
                        ({"d_model": 8, "n_layer": 1, "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [0]}, "attention layers"),
                        ({"d_model": 8, "n_layer": 1, "ssm_cfg": {"layer": "Mamba2", "norm_before_gate": True}}, "norm_before_gate")]:
        try:
            convert_mamba_ssm.hf_config(bad, 8)
        except convert_mamba_ssm.ConversionError as e:
            assert needle in str(e), (bad, str(e))
        else:
            raise SystemExit(f"the converter took {bad}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--program", help="the transmamba program, to check its logits against transformers'")
    args = parser.parse_args()
    check_refusals()
    failures = 0
    for case in CASES:
        root = os.path.join(args.out, case["name"])
        src, dst = os.path.join(root, "mamba_ssm"), os.path.join(root, "converted")
        os.makedirs(src, exist_ok=True)
        state, V = mamba_ssm_state_dict(case["config"], case["seed"])
        torch.save(state, os.path.join(src, "pytorch_model.bin"))
        with open(os.path.join(src, "config.json"), "w") as f:
            json.dump(case["config"], f, indent=4)
        config = convert_mamba_ssm.convert(src, dst)
        assert config["vocab_size"] == V, (config["vocab_size"], V)
        ids = torch.randint(0, case["config"]["vocab_size"], (BATCH, SEQLEN), generator=torch.Generator().manual_seed(case["seed"]))
        theirs = transformers_logits(dst, ids)
        expected = os.path.join(root, "expected.safetensors")
        save_expected(expected, ids, theirs)
        line = f"{case['name']}: converted ({config['num_hidden_layers']} layers, vocab {V}), transformers loaded it"
        if args.program:
            from safetensors.torch import load_file
            ours_path = os.path.join(root, "ours.safetensors")
            subprocess.run([args.program, "run", "--model", dst, "--input", expected, "--output", ours_path], check=True)
            ours = load_file(ours_path)["logits"].double()
            err = ((ours - theirs.double()).abs().max() / theirs.double().abs().max()).item()
            ok = err < 1e-4
            failures += not ok
            line += f"; transmamba's logits vs transformers': {err:.2e} relative ({'ok' if ok else 'FAILED'}, bound 1e-4)"
            refused = subprocess.run([args.program, "run", "--model", src, "--input", expected, "--output", ours_path],
                                     capture_output=True, text=True)
            named = refused.returncode != 0 and "mamba_ssm Mamba2 model" in refused.stderr and "convert_mamba_ssm.py" in refused.stderr
            failures += not named
            line += f"; the unconverted directory is {'refused, naming mamba_ssm' if named else 'NOT refused as mamba_ssm: ' + refused.stderr.strip()}"
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
