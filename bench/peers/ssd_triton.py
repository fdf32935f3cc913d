"""Peer for bench/cuda/scan.cu: mamba_ssm's Triton SSD, `mamba_chunk_scan_combined`, on PERF.md's
scan shapes (H=32, headdim 64, d_state 128, chunk 256, with D and an initial state, the final state
returned), timed eager and captured in a CUDA graph.

mamba_ssm is not installed on the device machine, and its Triton ops are plain Python. Extract them
(never commit the copy; .peers/ is ignored):

    git --git-dir=<mirror of state-spaces/mamba> archive HEAD \
        mamba_ssm/__init__.py mamba_ssm/ops/__init__.py mamba_ssm/ops/triton/__init__.py \
        mamba_ssm/ops/triton/ssd_{bmm,chunk_state,state_passing,chunk_scan,combined}.py \
        mamba_ssm/ops/triton/{layernorm_gated,k_activations,softplus}.py \
        mamba_ssm/utils/{__init__,determinism,torch}.py | tar -x -C .peers
    echo > .peers/mamba_ssm/__init__.py    # the package __init__ imports CUDA extensions

then run with PYTHONPATH=.peers. Timing: triton.testing.do_bench, median, after the autotuning
call; inputs are above the 50 MB L2. Prints one line per shape and, with --json FILE, writes them.
"""
import argparse
import json

import torch
import triton

from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

H, P, N, CHUNK = 32, 64, 128, 256
SHAPES = [  # (name, batch, L, G, dtype), PERF.md's table
    ("16k_8x2048/g1/bf16", 8, 2048, 1, torch.bfloat16),
    ("16k_8x2048/g8/bf16", 8, 2048, 8, torch.bfloat16),
    ("64k_32x2048/g1/bf16", 32, 2048, 1, torch.bfloat16),
    ("64k_32x2048/g1/fp32", 32, 2048, 1, torch.float32),
    ("256k_128x2048/g1/bf16", 128, 2048, 1, torch.bfloat16),
    ("256k_16x16384/g1/bf16", 16, 16384, 1, torch.bfloat16),
    ("256k_16x16384/g8/bf16", 16, 16384, 8, torch.bfloat16),
    ("256k_16x16384/g1/fp32", 16, 16384, 1, torch.float32),
]


def bench(batch, L, G, dtype):
    dev = "cuda"
    x = torch.empty(batch, L, H, P, device=dev, dtype=dtype).uniform_(-1, 1)
    B = torch.empty(batch, L, G, N, device=dev, dtype=dtype).uniform_(-1, 1)
    C = torch.empty(batch, L, G, N, device=dev, dtype=dtype).uniform_(-1, 1)
    dt = torch.empty(batch, L, H, device=dev, dtype=torch.float32).uniform_(1e-3, 0.1)
    A = torch.empty(H, device=dev, dtype=torch.float32).uniform_(-1.5, -0.05)
    D = torch.empty(H, device=dev, dtype=torch.float32).uniform_(0.5, 1.5)
    init = torch.empty(batch, H, P, N, device=dev, dtype=torch.float32).uniform_(-1, 1)

    def fn():
        return mamba_chunk_scan_combined(x, dt, A, B, C, CHUNK, D=D, initial_states=init, return_final_states=True)

    fn()  # autotuning and compilation
    torch.cuda.synchronize()
    eager = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graphed = triton.testing.do_bench(graph.replay, warmup=25, rep=200, return_mode="median")
    del graph
    return eager, graphed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = {}
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    for name, batch, L, G, dtype in SHAPES:
        eager, graphed = bench(batch, L, G, dtype)
        results[name] = {"eager_ms": eager, "graph_ms": graphed}
        print(f"triton ssd {name:26s} eager {eager:7.3f} ms  graph {graphed:7.3f} ms", flush=True)
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
