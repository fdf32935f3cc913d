#!/usr/bin/env python3
"""Convert a mamba_ssm Mamba2 checkpoint to the Hugging Face Mamba2 layout transmamba loads.

mamba_ssm's MambaLMHeadModel (the state-spaces/mamba2-* models) stores a config.json of its own
(d_model, n_layer, ssm_cfg, ...) and its weights in pytorch_model.bin. transmamba, like
transformers' Mamba2ForCausalLM, reads config.json with Mamba2Config's fields and model.safetensors.
This script writes that layout:

    python3 tools/convert_mamba_ssm.py SRC DST [--dtype keep|float32|bfloat16|float16]
                                               [--tokenizer tokenizer.json] [--eos-token-id N]

SRC: config.json + pytorch_model.bin (or model.safetensors with mamba_ssm's names).
DST: config.json, model.safetensors, and, when given, tokenizer.json and generation_config.json.
The state-spaces models use the GPT-NeoX tokenizer (EleutherAI/gpt-neox-20b's tokenizer.json,
whose <|endoftext|> is id 0): pass it with --tokenizer so that `transmamba generate --prompt`
works; its <|endoftext|> becomes the end-of-sequence id unless --eos-token-id says otherwise.

Only what maps exactly is converted: Mamba2 layers (ssm_cfg.layer == "Mamba2") with RMSNorm, no
attention layers, no MLP blocks, the gated norm after the gate, a full-width SSM (d_ssm == d_inner),
no biases on the projections. Anything else is refused with the field that says so. Needs PyTorch
(and safetensors or numpy to write the file); no GPU, no mamba_ssm.
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys

# mamba_ssm's Mamba2 defaults (mamba_ssm/modules/mamba2.py) for ssm_cfg fields a config leaves out.
MAMBA2_DEFAULTS = {
    "d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "d_ssm": None, "ngroups": 1,
    "A_init_range": [1, 16], "D_has_hdim": False, "rmsnorm": True, "norm_before_gate": False,
    "dt_min": 0.001, "dt_max": 0.1, "dt_init_floor": 1e-4, "dt_limit": [0.0, float("inf")],
    "bias": False, "conv_bias": True, "chunk_size": 256, "use_mem_eff_path": True,
    "layer_idx": None, "process_group": None, "sequence_parallel": True, "learnable_init_states": False,
    "activation": "swish",
}
# Settings that change only initialisation or the kernels' execution, never the function computed.
INIT_OR_EXECUTION_ONLY = {"A_init_range", "dt_min", "dt_max", "dt_init_floor", "use_mem_eff_path", "layer_idx",
                          "process_group", "sequence_parallel", "layer"}
# MambaConfig's top-level fields (mamba_ssm/models/config_mamba.py) and their defaults.
MAMBA_CONFIG_DEFAULTS = {
    "d_model": 2560, "d_intermediate": 0, "n_layer": 64, "vocab_size": 50277, "ssm_cfg": {},
    "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
    "pad_vocab_size_multiple": 8, "tie_embeddings": True,
}


class ConversionError(Exception):
    pass


def hf_config(mamba_config, vocab_size):
    """The Hugging Face Mamba2Config fields of a mamba_ssm MambaConfig (a dict, as in config.json).

    vocab_size: rows of the embedding (mamba_ssm pads vocab_size to pad_vocab_size_multiple).
    Pure Python: the caller passes the embedding's row count.
    """
    unknown = set(mamba_config) - set(MAMBA_CONFIG_DEFAULTS)
    if unknown:
        raise ConversionError(f"config.json: unknown MambaConfig fields {sorted(unknown)}")
    c = dict(MAMBA_CONFIG_DEFAULTS, **mamba_config)
    ssm = dict(c["ssm_cfg"] or {})
    layer = ssm.pop("layer", "Mamba1")
    if layer != "Mamba2":
        raise ConversionError(f"ssm_cfg.layer = {layer!r}: only Mamba2 layers convert (transmamba has no Mamba1 layer)")
    if c["attn_layer_idx"]:
        raise ConversionError(f"attn_layer_idx = {c['attn_layer_idx']}: attention layers do not convert to a Mamba2ForCausalLM")
    if c["d_intermediate"]:
        raise ConversionError(f"d_intermediate = {c['d_intermediate']}: MLP blocks do not convert to a Mamba2ForCausalLM")
    if not c["rms_norm"]:
        raise ConversionError("rms_norm = false: LayerNorm blocks do not convert (Mamba2ForCausalLM uses RMSNorm)")
    unknown = set(ssm) - set(MAMBA2_DEFAULTS)
    if unknown:
        raise ConversionError(f"ssm_cfg: unknown Mamba2 fields {sorted(unknown)}")
    s = dict(MAMBA2_DEFAULTS, **ssm)
    d_model = int(c["d_model"])
    d_inner = int(s["expand"]) * d_model
    if s["d_ssm"] is not None and int(s["d_ssm"]) != d_inner:
        raise ConversionError(f"ssm_cfg.d_ssm = {s['d_ssm']} != expand * d_model = {d_inner}: a partial SSM does not convert")
    required = {"rmsnorm": True, "norm_before_gate": False, "D_has_hdim": False, "bias": False,
                "learnable_init_states": False}
    for field, value in required.items():
        if bool(s[field]) != value:
            raise ConversionError(f"ssm_cfg.{field} = {s[field]!r}: only {value!r} converts")
    if s["activation"] not in ("swish", "silu"):
        raise ConversionError(f"ssm_cfg.activation = {s['activation']!r}: only swish / silu converts")
    headdim = int(s["headdim"])
    if d_inner % headdim:
        raise ConversionError(f"expand * d_model = {d_inner} is not a multiple of ssm_cfg.headdim = {headdim}")
    nheads = d_inner // headdim
    if nheads % int(s["ngroups"]):
        raise ConversionError(f"ssm_cfg.ngroups = {s['ngroups']} does not divide the {nheads} heads")
    lo, hi = (float(x) for x in s["dt_limit"])
    return {
        "architectures": ["Mamba2ForCausalLM"],
        "model_type": "mamba2",
        "hidden_size": d_model,
        "state_size": int(s["d_state"]),
        "num_heads": nheads,
        "head_dim": headdim,
        "n_groups": int(s["ngroups"]),
        "expand": int(s["expand"]),
        "conv_kernel": int(s["d_conv"]),
        "chunk_size": int(s["chunk_size"]),
        "num_hidden_layers": int(c["n_layer"]),
        "vocab_size": int(vocab_size),
        "layer_norm_epsilon": 1e-5,  # mamba_ssm's RMSNorm and RMSNormGated default, not in its config
        "tie_word_embeddings": bool(c["tie_embeddings"]),
        "time_step_limit": [lo, hi],
        "time_step_min": float(s["dt_min"]),
        "time_step_max": float(s["dt_max"]),
        "time_step_floor": float(s["dt_init_floor"]),
        "use_conv_bias": bool(s["conv_bias"]),
        "use_bias": False,
        "hidden_act": "silu",
        "rms_norm": True,
        "residual_in_fp32": bool(c["residual_in_fp32"]),
    }


def expected_names(config):
    """mamba_ssm's parameter names -> the Hugging Face names, for every tensor of the model."""
    names = {"backbone.embedding.weight": "backbone.embeddings.weight", "backbone.norm_f.weight": "backbone.norm_f.weight"}
    per_layer = ["norm.weight", "mixer.in_proj.weight", "mixer.conv1d.weight", "mixer.dt_bias", "mixer.A_log",
                 "mixer.D", "mixer.norm.weight", "mixer.out_proj.weight"]
    if config["use_conv_bias"]:
        per_layer.append("mixer.conv1d.bias")
    for i in range(config["num_hidden_layers"]):
        for leaf in per_layer:
            names[f"backbone.layers.{i}.{leaf}"] = f"backbone.layers.{i}.{leaf}"
    names["lm_head.weight"] = "lm_head.weight"  # dropped below when tied
    return names


def expected_shapes(config):
    d, h, p, n, g, k = (config[f] for f in ("hidden_size", "num_heads", "head_dim", "state_size", "n_groups", "conv_kernel"))
    di = config["expand"] * d
    V = config["vocab_size"]
    shapes = {"backbone.embeddings.weight": (V, d), "backbone.norm_f.weight": (d,), "lm_head.weight": (V, d)}
    for i in range(config["num_hidden_layers"]):
        pre = f"backbone.layers.{i}."
        shapes.update({pre + "norm.weight": (d,), pre + "mixer.in_proj.weight": (2 * di + 2 * g * n + h, d),
                       pre + "mixer.conv1d.weight": (di + 2 * g * n, 1, k), pre + "mixer.conv1d.bias": (di + 2 * g * n,),
                       pre + "mixer.dt_bias": (h,), pre + "mixer.A_log": (h,), pre + "mixer.D": (h,),
                       pre + "mixer.norm.weight": (di,), pre + "mixer.out_proj.weight": (d, di)})
    return shapes


def load_state_dict(src):
    import torch
    bin_path, st_path = os.path.join(src, "pytorch_model.bin"), os.path.join(src, "model.safetensors")
    if os.path.exists(bin_path):
        return torch.load(bin_path, map_location="cpu", weights_only=True)
    if os.path.exists(st_path):
        from safetensors.torch import load_file
        return load_file(st_path)
    raise ConversionError(f"'{src}' has neither pytorch_model.bin nor model.safetensors")


def convert_state_dict(state, config):
    """The Hugging Face state dict of mamba_ssm's `state`, checked name by name and shape by shape."""
    import torch
    names = expected_names(config)
    shapes = expected_shapes(config)
    unexpected = sorted(set(state) - set(names))
    if unexpected:
        raise ConversionError(f"tensors the converted model has no place for: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    out = {}
    for old, new in names.items():
        if old == "lm_head.weight" and config["tie_word_embeddings"]:
            if old in state and not torch.equal(state[old], state["backbone.embedding.weight"]):
                raise ConversionError("tie_embeddings is true but lm_head.weight differs from the embeddings")
            continue
        if old not in state:
            raise ConversionError(f"missing tensor {old}")
        t = state[old]
        if tuple(t.shape) != shapes[new]:
            raise ConversionError(f"tensor {old}: shape {tuple(t.shape)}, expected {shapes[new]}")
        if not torch.isfinite(t.float()).all():
            raise ConversionError(f"tensor {old} holds a non-finite value")
        out[new] = t.contiguous()
    return out


def save_safetensors(tensors, path):
    """model.safetensors (metadata format = pt), through safetensors when installed, else by hand."""
    try:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})
        return
    except ImportError:
        pass
    import torch
    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def eos_of_tokenizer(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    for t in doc.get("added_tokens", []):
        if t.get("content") == "<|endoftext|>":
            return int(t["id"])
    return None


def convert(src, dst, dtype="keep", tokenizer=None, eos_token_id=None):
    import torch
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        mamba_config = json.load(f)
    if "hidden_size" in mamba_config or "model_type" in mamba_config:
        raise ConversionError(f"'{src}/config.json' is already a Hugging Face config (hidden_size / model_type)")
    state = load_state_dict(src)
    if "backbone.embedding.weight" not in state:
        raise ConversionError("no backbone.embedding.weight: not a mamba_ssm MambaLMHeadModel state dict")
    config = hf_config(mamba_config, state["backbone.embedding.weight"].shape[0])
    tensors = convert_state_dict(state, config)
    if dtype != "keep":
        target = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        tensors = {k: v.to(target) for k, v in tensors.items()}
    os.makedirs(dst, exist_ok=True)
    if tokenizer:
        shutil.copyfile(tokenizer, os.path.join(dst, "tokenizer.json"))
        if eos_token_id is None:
            eos_token_id = eos_of_tokenizer(tokenizer)
    if eos_token_id is not None:
        config.update({"eos_token_id": eos_token_id, "bos_token_id": eos_token_id, "pad_token_id": eos_token_id})
        with open(os.path.join(dst, "generation_config.json"), "w", encoding="utf-8") as f:
            json.dump({"eos_token_id": eos_token_id, "bos_token_id": eos_token_id, "pad_token_id": eos_token_id}, f, indent=2)
            f.write("\n")
    config["dtype"] = str(next(iter(tensors.values())).dtype).replace("torch.", "")
    save_safetensors(tensors, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as f:
        # json.dumps writes inf as Infinity, which transformers (json.loads) and transmamba read.
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="mamba_ssm checkpoint directory (config.json + pytorch_model.bin)")
    parser.add_argument("dst", help="directory to write (config.json + model.safetensors)")
    parser.add_argument("--dtype", default="keep", choices=["keep", "float32", "bfloat16", "float16"])
    parser.add_argument("--tokenizer", help="a tokenizer.json to copy into DST (GPT-NeoX's for state-spaces models)")
    parser.add_argument("--eos-token-id", type=int, help="the end-of-sequence id (default: the tokenizer's <|endoftext|>)")
    args = parser.parse_args(argv)
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        parser.error("DST must not be SRC")
    try:
        config = convert(args.src, args.dst, args.dtype, args.tokenizer, args.eos_token_id)
    except ConversionError as e:
        print(f"convert_mamba_ssm: {args.src}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}: {config['num_hidden_layers']} layers, hidden_size {config['hidden_size']}, "
          f"vocab {config['vocab_size']}, {config['dtype']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
