#!/usr/bin/env python3
"""Peer for bench/cuda/scan_backward.cu: mamba_ssm's Triton SSD backward, `mamba_chunk_scan_combined`
(chunk 256, with D and an initial state) under autograd: the backward alone, timed from the saved
graph of one forward (torch.autograd.grad with retain_graph), and forward + backward.

What is measured, on contiguous x (b, L, h, p), B, C (b, L, g, n) bf16, dt (b, L, h) float32,
A (h), D (h), S0 (b, h, p, n) float32, all requiring gradients, dy random:
  backward:   torch.autograd.grad(y, (x, dt, A, B, C, D, S0), dy, retain_graph=True)
  fwd_bwd:    the forward call, then the same gradients
Medians of triton.testing.do_bench (L2 flushed before each call) after the autotuning calls.

Counters: TFLOP_per_s on a nominal count of twice the forward's (SPEC section 4),
2 * b*L*h*(2*chunk*(n + p) + 4*n*p), three times for fwd_bwd, as bench/cuda/scan_backward.cu counts
its backward; flop_fraction against the bf16 ceiling (676 TFLOP/s).

Shapes: b 16, L 4096, h 32, p 64, n 128, g 1 and 8, bf16. Names follow the project's convention,
scan_backward/triton_ssd/bf16/b:16/L:4096/h:32/p:64/n:128/g:1 (the backward alone) and
scan_backward/triton_ssd_fwd_bwd/... (forward + backward).

mamba_ssm is not installed on the device machine: its Triton ops are extracted into .peers/ as
bench/peers/ssd_triton.py says; run with PYTHONPATH=.peers. Without them the script says so, times
nothing, and writes a JSON file that records the error.

Usage: python3 bench/peers/ssd_backward_triton.py [--json out.json] [--quick] [--budget SECONDS]
"""
import argparse
import time

import torch
import triton
import triton.testing

from convention import CEILING_TFLOPS, Results, base_context, bench_name, make_record, mamba_commit, run_cases

HEADS, HEADDIM, D_STATE, CHUNK = 32, 64, 128, 256
SHAPES = [(16, 4096, 1), (16, 4096, 8)]  # (batch, L, g)


def backward_shape(results, combined, batch, L, h, p, n, g):
    dev, dtype = "cuda", torch.bfloat16

    def leaf(*shape, lo=-1.0, hi=1.0, dt=dtype):
        return torch.empty(*shape, device=dev, dtype=dt).uniform_(lo, hi).requires_grad_()

    x, B, C = leaf(batch, L, h, p), leaf(batch, L, g, n), leaf(batch, L, g, n)
    dt = leaf(batch, L, h, lo=1e-3, hi=0.1, dt=torch.float32)
    A = leaf(h, lo=-1.5, hi=-0.05, dt=torch.float32)
    D = leaf(h, lo=0.5, hi=1.5, dt=torch.float32)
    init = leaf(batch, h, p, n, dt=torch.float32)
    inputs = (x, dt, A, B, C, D, init)
    dy = torch.empty(batch, L, h, p, device=dev, dtype=dtype).uniform_(-1, 1)

    def forward():
        return combined(x, dt, A, B, C, CHUNK, D=D, initial_states=init)

    t0 = time.monotonic()
    y = forward()
    torch.autograd.grad(y, inputs, dy, retain_graph=True)  # autotuning and compilation
    torch.cuda.synchronize()
    first_call_s = time.monotonic() - t0

    backward_ms = triton.testing.do_bench(lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True),
                                          warmup=25, rep=200, return_mode="median")
    fwd_bwd_ms = triton.testing.do_bench(lambda: torch.autograd.grad(forward(), inputs, dy),
                                         warmup=25, rep=200, return_mode="median")
    rows = batch * L
    forward_flops = rows * h * (2 * CHUNK * (n + p) + 4 * n * p)
    extra = {"chunk": CHUNK, "dot_precision": "bf16", "first_call_s": first_call_s}
    for impl, ms, flops in (("triton_ssd", backward_ms, 2 * forward_flops), ("triton_ssd_fwd_bwd", fwd_bwd_ms, 3 * forward_flops)):
        name = bench_name("scan_backward", impl, "bf16", b=batch, L=L, h=h, p=p, n=n, g=g)
        results.add(make_record(name, ms, flops=flops, nbytes=0, tokens=rows, ceiling=CEILING_TFLOPS["bf16"], **extra))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the records here (rewritten after every shape)")
    ap.add_argument("--quick", action="store_true", help="g = 1 only")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds; shapes left when it is spent are skipped")
    args = ap.parse_args()
    torch.manual_seed(0)
    context = base_context("bench/peers/ssd_backward_triton.py", args)
    results = Results(args.json, context)
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError as e:
        message = f"mamba_ssm is not importable ({e}): nothing timed; extract its Triton ops into .peers/ (see the docstring)"
        print(message, flush=True)
        context["errors"].append(message)
        results.save()
        return
    context["mamba_ssm_commit"] = mamba_commit()
    print(f"{context['device']}  torch {torch.__version__}  triton {triton.__version__}  "
          f"mamba_ssm {context['mamba_ssm_commit'][:12]}", flush=True)
    shapes = SHAPES[:1] if args.quick else SHAPES
    cases = [(f"bf16 b={b} L={L} g={g}",
              lambda b=b, L=L, g=g: backward_shape(results, mamba_chunk_scan_combined, b, L, HEADS, HEADDIM, D_STATE, g))
             for b, L, g in shapes]
    run_cases(cases, args.budget, results)
    print(f"{len(results.records)} records; skipped {len(context['skipped'])}; errors {len(context['errors'])}")


if __name__ == "__main__":
    main()
