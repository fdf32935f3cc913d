#!/usr/bin/env python3
"""Writes the seed inputs of the libFuzzer target tests/io/fuzz_safetensors.cpp into tests/data/fuzz_seeds/
(standard library only): small valid safetensors files.

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


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
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
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
