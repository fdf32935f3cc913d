#!/usr/bin/env python3
"""Tiny random layer-level hybrid checkpoints and transformers' logits for them (docs/checkpoints.md,
"Hybrid checkpoints"). Run where torch and transformers (5.x) are installed:

    python3 tests/data/make_hybrid_fixtures.py --out OUT_DIR     # then copy OUT_DIR/* to tests/data/

For each architecture it builds a small float32 model with a fixed seed, draws every parameter in a
trained-looking range (transformers' own init leaves norms at 1 and biases at 0, which would hide
mistakes), saves it with save_pretrained (config.json + model.safetensors) under OUT_DIR/<name>/,
reloads it to check the files reproduce the model, and writes OUT_DIR/<name>/expected.safetensors:

    input_ids   (2, 12) int64
    logits      (2, 12, vocab) float32: the float32 model's forward on the CPU (torch path, eager attention)
    logits_f64  (2, 12, vocab) float64: the same model cast to float64
    generated   (1, n) int64: a greedy generate() from the first 5 ids of sequence 0, prompt included
                (where generate() runs: it uses the model's own cache, i.e. transformers' decoding)

OUT_DIR/summary.txt lists versions, tensor names and shapes, and each config.json.
"""
import argparse
import json
import math
import os
import sys
import traceback

import torch
import transformers
from safetensors.torch import save_file

SEED = 20261203
VOCAB = 64
BATCH, LENGTH = 2, 12


def nemotron_h():
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=32, tie_word_embeddings=False,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, attention_bias=False,
        intermediate_size=48, mlp_hidden_act="relu2", mlp_bias=False,
        ssm_state_size=8, mamba_num_heads=4, mamba_head_dim=16, n_groups=2, conv_kernel=4, expand=2,
        use_conv_bias=True, chunk_size=8, mamba_proj_bias=False, use_bias=False,
        layer_norm_epsilon=1e-5, residual_in_fp32=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    pattern = "M*-M-"
    try:
        cfg = transformers.NemotronHConfig(layers_block_type=["mamba", "attention", "mlp", "mamba", "mlp"], **kwargs)
    except Exception:
        cfg = transformers.NemotronHConfig(hybrid_override_pattern=pattern, num_hidden_layers=len(pattern), **kwargs)
    return "nemotron_h_tiny", cfg, transformers.NemotronHForCausalLM


def bamba():
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=32, tie_word_embeddings=False, intermediate_size=32,
        num_hidden_layers=3, attn_layer_indices=[1], num_attention_heads=4, num_key_value_heads=2,
        hidden_act="silu", rms_norm_eps=1e-5,
        mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
        mamba_chunk_size=8, mamba_conv_bias=True, mamba_proj_bias=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    try:
        cfg = transformers.BambaConfig(rope_parameters={"rope_type": "default", "rope_theta": 5000.0}, **kwargs)
    except TypeError:
        cfg = transformers.BambaConfig(rope_theta=5000.0, **kwargs)
    return "bamba_tiny", cfg, transformers.BambaForCausalLM


def granite_hybrid():
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=32, tie_word_embeddings=True, intermediate_size=32,
        num_hidden_layers=3, layer_types=["mamba", "attention", "mamba"],
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-6,
        attention_bias=False, embedding_multiplier=2.0, logits_scaling=3.0, residual_multiplier=0.5,
        attention_multiplier=0.3, num_local_experts=0, shared_intermediate_size=32,
        position_embedding_type="rope",
        mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
        mamba_chunk_size=8, mamba_conv_bias=True, mamba_proj_bias=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    try:
        cfg = transformers.GraniteMoeHybridConfig(rope_parameters={"rope_type": "default", "rope_theta": 20000.0}, **kwargs)
    except TypeError:
        cfg = transformers.GraniteMoeHybridConfig(rope_theta=20000.0, **kwargs)
    return "granite_hybrid_tiny", cfg, transformers.GraniteMoeHybridForCausalLM


# Falcon-H1: every layer runs attention and Mamba2 in parallel on one normed input. Every muP
# multiplier differs from 1 and from the others, so that each one applied in the wrong place (or
# not at all) moves the logits. Three variants cover the Mamba2 output's three norm placements.
FALCON_MULTIPLIERS = dict(
    embedding_multiplier=1.7, lm_head_multiplier=0.6,
    attention_in_multiplier=0.8, attention_out_multiplier=1.3, key_multiplier=0.7,
    ssm_in_multiplier=1.2, ssm_out_multiplier=0.9, ssm_multipliers=[0.5, 1.5, 0.8, 1.25, 2.0],
    mlp_multipliers=[1.4, 0.75],
)


def falcon_h1_config(head_dim=None, **over):
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=32, tie_word_embeddings=False, intermediate_size=48,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
        rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False, projectors_bias=False,
        mamba_d_ssm=48, mamba_n_heads=4, mamba_d_head=12, mamba_n_groups=2, mamba_d_state=8,
        mamba_d_conv=4, mamba_expand=3, mamba_chunk_size=8, mamba_conv_bias=True, mamba_proj_bias=False,
        mamba_rms_norm=False, mamba_norm_before_gate=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
        **FALCON_MULTIPLIERS,
    )
    kwargs.update(over)
    if head_dim is not None:
        kwargs["head_dim"] = head_dim
    try:
        return transformers.FalconH1Config(rope_parameters={"rope_type": "default", "rope_theta": 3000.0}, **kwargs)
    except TypeError:
        return transformers.FalconH1Config(rope_theta=3000.0, **kwargs)


def falcon_h1():
    # As the released Falcon-H1 models: no Mamba norm, a Mamba2 width (mamba_d_ssm 48) of 1.5 x
    # hidden_size that mamba_expand (3) does not give, attention head_dim (16) != hidden / heads.
    try:
        cfg = falcon_h1_config(head_dim=16)
    except Exception:  # a FalconH1Config that refuses head_dim: hidden_size / heads (8) then
        cfg = falcon_h1_config()
    return "falcon_h1_tiny", cfg, transformers.FalconH1ForCausalLM


def falcon_h1_norm_before_gate():
    # mamba_rms_norm with the norm before the gate, the width a multiple of hidden_size, tied.
    cfg = falcon_h1_config(mamba_rms_norm=True, mamba_norm_before_gate=True, mamba_d_ssm=64, mamba_d_head=16,
                           tie_word_embeddings=True, num_hidden_layers=2)
    return "falcon_h1_norm_before_gate_tiny", cfg, transformers.FalconH1ForCausalLM


def falcon_h1_norm_after_gate():
    # mamba_rms_norm after the gate (Mamba2's own placement).
    cfg = falcon_h1_config(mamba_rms_norm=True, mamba_norm_before_gate=False, num_hidden_layers=2)
    return "falcon_h1_norm_after_gate_tiny", cfg, transformers.FalconH1ForCausalLM


def randomize(model, gen):
    """Every parameter in a trained-looking range, by its name."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            u = torch.rand(p.shape, generator=gen, dtype=torch.float64)
            if leaf == "A_log":
                v = torch.log(1.0 + 7.0 * u)
            elif leaf == "D":
                v = 0.5 + u
            elif leaf == "dt_bias":
                dt = torch.exp(math.log(1e-3) + u * (math.log(1e-1) - math.log(1e-3)))
                v = dt + torch.log(-torch.expm1(-dt))
            elif p.ndim == 1 and "norm" in name:
                v = 0.6 + 0.8 * u
            elif p.ndim == 1:  # biases (the conv's)
                v = 0.2 * (u - 0.5)
            elif "embed" in name:
                v = 2.0 * u - 1.0
            else:
                fan_in = p.shape[-1] if p.ndim == 2 else p.shape[-1] * (p.shape[1] if p.ndim == 3 else 1)
                v = (2.0 * u - 1.0) * math.sqrt(3.0 / fan_in)
            p.copy_(v.to(p.dtype))


def build(maker, out, summary):
    name, cfg, cls = maker()
    try:
        cfg._attn_implementation = "eager"
    except Exception:
        pass
    torch.manual_seed(SEED)
    model = cls(cfg).to(torch.float32).eval()
    gen = torch.Generator().manual_seed(SEED)
    randomize(model, gen)
    ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=gen, dtype=torch.int64)
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits.float()
    directory = os.path.join(out, name)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    # The saved files must give the same model (a conversion mapping could rename tensors).
    reloaded = cls.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        again = reloaded(input_ids=ids, use_cache=False).logits.float()
    reload_diff = (again - logits).abs().max().item()
    tensors = {"input_ids": ids.contiguous(), "logits": logits.contiguous()}
    f64_diff = float("nan")
    try:
        with torch.no_grad():
            logits64 = reloaded.to(torch.float64)(input_ids=ids, use_cache=False).logits.double()
        f64_diff = ((logits64 - logits.double()).abs().max() / logits64.abs().max()).item()
        tensors["logits_f64"] = logits64.contiguous()
    except Exception as e:  # the float64 reference is a bonus; the float32 logits are the bar
        summary.append(f"  ({name}: no float64 forward: {e!r})")
    try:
        with torch.no_grad():
            # An explicit all-ones mask: without one, generate() takes every id equal to
            # pad_token_id in the prompt for padding and masks it out.
            prompt = ids[:1, :5]
            generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                       max_new_tokens=8, do_sample=False, pad_token_id=0)
        tensors["generated"] = generated.to(torch.int64).contiguous()
        summary.append(f"  ({name}: greedy generate {generated.tolist()})")
    except Exception as e:  # a bonus, as the float64 logits
        summary.append(f"  ({name}: no generate(): {e!r})")
    save_file(tensors, os.path.join(directory, "expected.safetensors"))
    for extra in ("generation_config.json",):
        path = os.path.join(directory, extra)
        if os.path.exists(path):
            os.remove(path)
    sizes = {f: os.path.getsize(os.path.join(directory, f)) for f in sorted(os.listdir(directory))}
    summary.append(f"== {name}: {cls.__name__}, reload max|diff| {reload_diff:.3e}, "
                   f"f32 vs f64 rel {f64_diff:.3e}, files {sizes}")
    from safetensors import safe_open
    with safe_open(os.path.join(directory, "model.safetensors"), "pt") as f:
        for key in sorted(f.keys()):
            summary.append(f"  {key} {tuple(f.get_slice(key).get_shape())}")
    with open(os.path.join(directory, "config.json")) as f:
        summary.append(f.read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default=None,
                        help="build only the fixtures whose names start with this (e.g. nemotron_h_tiny, falcon_h1)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    summary = [f"torch {torch.__version__}, transformers {transformers.__version__}"]
    failed = 0
    makers = (nemotron_h, bamba, granite_hybrid, falcon_h1, falcon_h1_norm_before_gate, falcon_h1_norm_after_gate)
    for maker in makers:
        if args.only and not maker()[0].startswith(args.only):
            continue
        try:
            build(maker, args.out, summary)
        except Exception:
            failed += 1
            summary.append(f"== {maker.__name__} FAILED\n{traceback.format_exc()}")
    text = "\n".join(summary)
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
