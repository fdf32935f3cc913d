#!/usr/bin/env python3
"""Peer for bench/cuda/scan.cu: mamba_ssm's Triton SSD, `mamba_chunk_scan_combined` (chunk 256,
with D and an initial state, the final state returned), timed eager and captured in a CUDA graph.

What is measured: one call of `mamba_chunk_scan_combined(x, dt, A, B, C, 256, D=D,
initial_states=S0, return_final_states=True)` on contiguous x (b, L, h, p), B, C (b, L, g, n) in
the dtype named, dt (b, L, h) float32, S0 (b, h, p, n) float32. Eager (graph:0): the Python call
as a user makes it, launches included; graph (graph:1): the same call captured once in a
torch.cuda.CUDAGraph and replayed. Both are medians of triton.testing.do_bench (L2 flushed before
each call) after the autotuning call. With fp32 inputs Triton's dots run in TF32 (its default), so
fp32 records carry "dot_precision": "tf32" and are rated against the TF32 ceiling.

Counters: tokens_per_s; TFLOP_per_s on SPEC section 4's count, b*L*h*(2*chunk*(n + p) + 4*n*p);
GB_per_s on the bytes that must move: x, B, C in, dt in (float32), y out (the input dtype), the
initial and final state (float32); flop_fraction and byte_fraction against the measured ceilings
(bf16 676, tf32 352 TFLOP/s; 3000 GB/s).

Shapes: h = 32, p = 64, n = 128, g = 1, b * L = 65536 tokens, L = 512 .. 65536, bf16; at L = 4096
also p in {64, 128} x n in {64, 128} x g in {1, 8, 32}; the same sweep in fp32; and the shapes of
the shared PERF.md table (16k and 256k tokens). Names follow the project's convention, e.g.
scan/triton_ssd/bf16/b:8/L:2048/h:32/p:64/n:128/g:1/graph:1.

mamba_ssm is not installed on the device machine, and its Triton ops are plain Python. Extract them
(never commit the copy; .peers/ is ignored):

    git --git-dir=<mirror of state-spaces/mamba> archive HEAD \\
        mamba_ssm/__init__.py mamba_ssm/ops/__init__.py mamba_ssm/ops/triton/__init__.py \\
        mamba_ssm/ops/triton/ssd_{bmm,chunk_state,state_passing,chunk_scan,combined}.py \\
        mamba_ssm/ops/triton/{layernorm_gated,k_activations,softplus,selective_state_update}.py \\
        mamba_ssm/utils/{__init__,determinism,torch}.py | tar -x -C .peers
    echo > .peers/mamba_ssm/__init__.py    # the package __init__ imports CUDA extensions

and record the commit in .peers/MAMBA_COMMIT; then run with PYTHONPATH=.peers.

Usage: python3 bench/peers/ssd_triton.py [--json out.json] [--quick] [--budget SECONDS]
The JSON file is rewritten after every shape, so a run cut short keeps what it measured.
"""
import argparse
import time

import torch
import triton
import triton.testing

from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

from convention import CEILING_TFLOPS, Results, base_context, bench_name, make_record, mamba_commit, run_cases

TOKENS = 65536
HEADS, HEADDIM, D_STATE, CHUNK = 32, 64, 128, 256
SWEEP_L = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
QUICK_L = [1024, 4096, 16384]
VARIANT_L = 4096
VARIANTS = [(p, n, g) for p in (64, 128) for n in (64, 128) for g in (1, 8, 32)
            if (p, n, g) != (HEADDIM, D_STATE, 1)]
PERF_MD_SHAPES = [  # (batch, L, g, dtype): the shared PERF.md table
    (8, 2048, 1, "bf16"), (8, 2048, 8, "bf16"), (128, 2048, 1, "bf16"),
    (16, 16384, 1, "bf16"), (16, 16384, 8, "bf16"), (16, 16384, 1, "fp32"),
]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

# --- measurement ----------------------------------------------------------------------------------

def eager_and_graph_ms(fn):
    """(eager, graph) medians of triton.testing.do_bench; fn has been called (autotuned) before."""
    eager = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graph requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graphed = triton.testing.do_bench(graph.replay, warmup=25, rep=200, return_mode="median")
    del graph
    return eager, graphed


def scan_shape(results, batch, L, h, p, n, g, dtype_name):
    """One shape, eager and graph, two records."""
    dev, dtype = "cuda", DTYPES[dtype_name]
    x = torch.empty(batch, L, h, p, device=dev, dtype=dtype).uniform_(-1, 1)
    B = torch.empty(batch, L, g, n, device=dev, dtype=dtype).uniform_(-1, 1)
    C = torch.empty(batch, L, g, n, device=dev, dtype=dtype).uniform_(-1, 1)
    dt = torch.empty(batch, L, h, device=dev, dtype=torch.float32).uniform_(1e-3, 0.1)
    A = torch.empty(h, device=dev, dtype=torch.float32).uniform_(-1.5, -0.05)
    D = torch.empty(h, device=dev, dtype=torch.float32).uniform_(0.5, 1.5)
    init = torch.empty(batch, h, p, n, device=dev, dtype=torch.float32).uniform_(-1, 1)

    def fn():
        return mamba_chunk_scan_combined(x, dt, A, B, C, CHUNK, D=D, initial_states=init, return_final_states=True)

    t0 = time.monotonic()
    fn()  # autotuning and compilation
    torch.cuda.synchronize()
    first_call_s = time.monotonic() - t0
    eager, graphed = eager_and_graph_ms(fn)

    rows, size = batch * L, torch.finfo(dtype).bits // 8
    flops = rows * h * (2 * CHUNK * (n + p) + 4 * n * p)
    nbytes = rows * (h * p + 2 * g * n) * size + rows * h * 4 + rows * h * p * size + 2 * batch * h * p * n * 4
    precision = "tf32" if dtype_name == "fp32" else dtype_name
    extra = {"chunk": CHUNK, "dot_precision": precision, "first_call_s": first_call_s}
    for graph_flag, ms in ((0, eager), (1, graphed)):
        name = bench_name("scan", "triton_ssd", dtype_name, b=batch, L=L, h=h, p=p, n=n, g=g, graph=graph_flag)
        results.add(make_record(name, ms, flops=flops, nbytes=nbytes, tokens=rows,
                                ceiling=CEILING_TFLOPS[precision], **extra))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the records here (rewritten after every shape)")
    ap.add_argument("--quick", action="store_true", help="L = 1024, 4096, 16384 (g = 1) and L = 4096 g = 8, bf16")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds; shapes left when it is spent are skipped")
    args = ap.parse_args()
    torch.manual_seed(0)
    context = base_context("bench/peers/ssd_triton.py", args)
    context["mamba_ssm_commit"] = mamba_commit()
    context["timing"] = ("triton.testing.do_bench(warmup=25 ms, rep=200 ms) median, L2 flushed before each call; "
                         "graph:1 = one call captured in a torch.cuda.CUDAGraph and replayed")
    results = Results(args.json, context)
    print(f"{context['device']}  torch {torch.__version__}  triton {triton.__version__}  "
          f"mamba_ssm {context['mamba_ssm_commit'][:12]}", flush=True)

    h, p, n = HEADS, HEADDIM, D_STATE
    cases = []
    for L in (QUICK_L if args.quick else SWEEP_L):
        cases.append((f"bf16 L={L}", lambda L=L: scan_shape(results, TOKENS // L, L, h, p, n, 1, "bf16")))
    if args.quick:
        cases.append((f"bf16 L={VARIANT_L} g=8", lambda: scan_shape(results, TOKENS // VARIANT_L, VARIANT_L, h, p, n, 8, "bf16")))
    else:
        for vp, vn, vg in VARIANTS:
            cases.append((f"bf16 L={VARIANT_L} p={vp} n={vn} g={vg}",
                          lambda vp=vp, vn=vn, vg=vg: scan_shape(results, TOKENS // VARIANT_L, VARIANT_L, h, vp, vn, vg, "bf16")))
        for L in SWEEP_L:
            cases.append((f"fp32 L={L}", lambda L=L: scan_shape(results, TOKENS // L, L, h, p, n, 1, "fp32")))
        for batch, L, g, dt in PERF_MD_SHAPES:
            cases.append((f"PERF.md {batch}x{L} g={g} {dt}",
                          lambda batch=batch, L=L, g=g, dt=dt: scan_shape(results, batch, L, h, p, n, g, dt)))
    run_cases(cases, args.budget, results)
    print(f"{len(results.records)} records; skipped {len(context['skipped'])}; errors {len(context['errors'])}")


if __name__ == "__main__":
    main()
