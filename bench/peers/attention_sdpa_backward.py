#!/usr/bin/env python3
"""Peer for bench/cuda/attention_backward.cu: the backward of PyTorch
`scaled_dot_product_attention(is_causal=True)` on the TransMamba attention (SPEC section 3: Q = C,
K = B, V = x, scale 1/sqrt(n)), bf16, b = 16, L = 4096, h = 32, p = 64, n = 128, g = 1, 8, 32.

What is measured (median of triton.testing.do_bench, L2 flushed before each call): the backward
alone, `torch.autograd.grad(o, inputs, do, retain_graph=True)` after one forward.

- `attention_backward/sdpa_kernel_<backend>/...`: SDPA's backward on contiguous per-head q, k
  (b, h, L, n) and v (b, h, L, p), with each backend forced (flash, efficient, cudnn) and the
  default dispatch; a backend that refuses the shapes (FA2 needs n == p) is listed under
  "unsupported". The call does not depend on g: written for every g to line up with our rows.
- `attention_backward/sdpa_kernel/...`: the fastest of those, its backend in "backend".
- `attention_backward/sdpa/...`: the path a PyTorch user writes, timed as a whole: C and B views of
  one xBC buffer repeated per head (`repeat_interleave`, none when g = h) under the fastest
  backend, so the backward also sums dC and dB over the group's heads; the D skip is left out
  (its backward is one elementwise pass, ours does it too).

TFLOP_per_s counts what ours counts: 2.5 x the forward's 2 * b * L^2/2 * (g*n + h*p);
equiv_TFLOP_per_s counts what SDPA executes per head, 2.5 * 2 * b * L^2/2 * h * (n + p).

Usage: python3 bench/peers/attention_sdpa_backward.py [--json out.json] [--budget SECONDS]
"""
import argparse
import contextlib

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from convention import CEILING_TFLOPS, Results, base_context, bench_name, make_record, median_ms, run_cases

B_, L_, H_, P_, N_ = 16, 4096, 32, 64, 128
GROUPS = [1, 8, 32]
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "default": None}


def flops(g):
    pairs = L_ * L_ / 2
    return 2.5 * 2 * B_ * pairs * (g * N_ + H_ * P_), 2.5 * 2 * B_ * pairs * H_ * (N_ + P_)


def backward_ms(make_inputs, backend):
    """Median ms of the backward of one SDPA forward under `backend` (None: default dispatch)."""
    leaves, q, k, v = make_inputs()
    ctx = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()
    with ctx:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        do = torch.randn_like(o)
        ms = median_ms(lambda: torch.autograd.grad(o, leaves, do, retain_graph=True))
    return ms


def per_head_inputs():
    dev, dt = "cuda", torch.bfloat16
    q = torch.empty(B_, H_, L_, N_, device=dev, dtype=dt).uniform_(-1, 1).requires_grad_()
    k = torch.empty(B_, H_, L_, N_, device=dev, dtype=dt).uniform_(-1, 1).requires_grad_()
    v = torch.empty(B_, H_, L_, P_, device=dev, dtype=dt).uniform_(-1, 1).requires_grad_()
    return (q, k, v), q, k, v


def user_inputs(g):
    def make():
        width = H_ * P_ + 2 * g * N_
        xbc = torch.empty(B_, L_, width, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1).requires_grad_()
        x = xbc[..., :H_ * P_].view(B_, L_, H_, P_)
        Bm = xbc[..., H_ * P_:H_ * P_ + g * N_].view(B_, L_, g, N_)
        C = xbc[..., H_ * P_ + g * N_:].view(B_, L_, g, N_)
        per_head = (lambda t: t) if g == H_ else (lambda t: t.repeat_interleave(H_ // g, dim=2))
        return (xbc,), per_head(C).transpose(1, 2), per_head(Bm).transpose(1, 2), x.transpose(1, 2)
    return make


def kernels(results):
    best = None
    for label, which in BACKENDS.items():
        try:
            ms = backward_ms(per_head_inputs, which)
        except RuntimeError as e:
            results.context.setdefault("unsupported", []).append(f"{label}: {str(e).splitlines()[0][:120]}")
            continue
        for g in GROUPS:
            algo, equiv = flops(g)
            name = bench_name("attention_backward", f"sdpa_kernel_{label}", "bf16", b=B_, L=L_, h=H_, p=P_, n=N_, g=g)
            results.add(make_record(name, ms, flops=algo, tokens=B_ * L_, ceiling=CEILING_TFLOPS["bf16"],
                                    equiv_TFLOP_per_s=equiv / (ms * 1e-3) * 1e-12, note="the same call for every g"))
        if label != "default" and (best is None or ms < best[1]):
            best = (label, ms)
    if best is None:
        return None
    for g in GROUPS:
        algo, equiv = flops(g)
        name = bench_name("attention_backward", "sdpa_kernel", "bf16", b=B_, L=L_, h=H_, p=P_, n=N_, g=g)
        results.add(make_record(name, best[1], flops=algo, tokens=B_ * L_, ceiling=CEILING_TFLOPS["bf16"],
                                equiv_TFLOP_per_s=equiv / (best[1] * 1e-3) * 1e-12, backend=best[0],
                                note="the fastest forced backend"))
    return best[0]


def user_path(results, g, backend):
    ms = backward_ms(user_inputs(g), BACKENDS[backend])
    algo, equiv = flops(g)
    name = bench_name("attention_backward", "sdpa", "bf16", b=B_, L=L_, h=H_, p=P_, n=N_, g=g)
    results.add(make_record(name, ms, flops=algo, tokens=B_ * L_, ceiling=CEILING_TFLOPS["bf16"],
                            equiv_TFLOP_per_s=equiv / (ms * 1e-3) * 1e-12, backend=backend,
                            note="C, B repeated per head: the backward sums their gradients over the group"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the records here (rewritten after every shape)")
    ap.add_argument("--quick", action="store_true", help="accepted for run_device.sh; the run is already small")
    ap.add_argument("--budget", type=float, default=120.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    context = base_context("bench/peers/attention_sdpa_backward.py", args, cudnn=True)
    context["timing"] = "triton.testing.do_bench median of the backward alone, L2 flushed before each call"
    results = Results(args.json, context)
    print(f"{context['device']}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    chosen = {}
    cases = [("sdpa backward kernels", lambda: chosen.setdefault("backend", kernels(results)))]
    for g in GROUPS:
        cases.append((f"user path g={g}", lambda g=g: chosen.get("backend") and user_path(results, g, chosen["backend"])))
    run_cases(cases, args.budget, results)
    for line in context.get("unsupported", []):
        print("unsupported:", line)
    print(f"{len(results.records)} records; skipped {len(context['skipped'])}; errors {len(context['errors'])}")


if __name__ == "__main__":
    main()
