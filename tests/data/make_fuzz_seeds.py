#!/usr/bin/env python3
"""Writes the seed inputs of the libFuzzer targets (standard library only): small valid safetensors
files for tests/io/fuzz_safetensors.cpp into OUT/safetensors/, and config.json texts for
tests/io/fuzz_config.cpp into OUT/config/.

    python3 tests/data/make_fuzz_seeds.py tests/data/fuzz_seeds
"""
import json
import os
import struct
import sys


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes); laid out in the order given."""
    header, offset, data = {}, 0, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


MAMBA2_CONFIG = {
    "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "hidden_size": 64, "state_size": 16,
    "num_heads": 8, "head_dim": 16, "n_groups": 2, "expand": 2, "conv_kernel": 4, "chunk_size": 8,
    "num_hidden_layers": 2, "vocab_size": 96, "layer_norm_epsilon": 1e-05, "tie_word_embeddings": True,
    "use_conv_bias": True, "use_bias": False, "rms_norm": True, "residual_in_fp32": True, "hidden_act": "silu",
    "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0,
}


def config_seeds():
    """config.json texts: plain Mamba2 with both spellings of infinity, and each transmamba object form."""
    def text(extra, infinity="Infinity"):
        c = dict(MAMBA2_CONFIG, **extra)
        return json.dumps(c, indent=2, sort_keys=True).replace('"@inf"', infinity).encode()
    return {
        "mamba2.json": text({"time_step_limit": [0.0, "@inf"]}),
        "mamba2_float_object.json": text({"time_step_limit": [0.0, "@inf"]}, '{"__float__": "Infinity"}'),
        "cyclic.json": text({"transmamba": {"version": 1, "kind": "cyclic", "transpoints": [0, 128, 256],
                                            "attention": "paper"}}),
        "per_layer.json": text({"transmamba": {"version": 1, "kind": "per_layer", "transpoints": [9, 3],
                                               "attention": "rope"}}),
        "fixed_custom.json": text({"time_step_limit": [0.001, 0.1], "transmamba": {
            "version": 1, "kind": "fixed", "transpoints": [5],
            "attention": {"gate_by_z": True, "skip_D": False, "rope": True, "rope_theta": 500000.0, "scale": 0.25}}}),
        "defaults.json": b'{"hidden_size": 64, "num_heads": 2, "n_groups": 1}',
    }


def main():
    out = sys.argv[1]
    for sub in ("safetensors", "config"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    seeds = {
        "floats.safetensors": safetensors(
            [("w", "F32", [2, 3], struct.pack("<6f", 1, 2, 3, 4, 5, 6)), ("d", "F64", [1], struct.pack("<d", 0.5)),
             ("h", "F16", [2], struct.pack("<2H", 0x3C00, 0x7C00)), ("b", "BF16", [2], struct.pack("<2H", 0x3F80, 0xFF80))],
            {"format": "pt"}),
        "ints.safetensors": safetensors(
            [("input_ids", "I64", [1, 3], struct.pack("<3q", 0, 5, -1)), ("u", "U8", [2], b"\x01\xff"),
             ("z", "F32", [0, 4], b""), ("s", "I32", [], struct.pack("<i", 7)), ("f8", "F8_E4M3", [1], b"\x40")]),
        "empty.safetensors": safetensors([]),
    }
    for folder, files in (("safetensors", seeds), ("config", config_seeds())):
        for name, data in files.items():
            with open(os.path.join(out, folder, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
