#!/usr/bin/env python3
"""Peer for bench/cuda/attention.cu: PyTorch `scaled_dot_product_attention(is_causal=True)` on the
TransMamba attention (SPEC section 3: Q = C, K = B, V = x, scale 1/sqrt(n), plus the D skip).

What is measured (every time a median of triton.testing.do_bench, which flushes the L2 before each
call; inputs are far above the 50 MiB L2 anyway):

- `attention/sdpa/...`: the path a PyTorch user writes, timed as a whole: x, B, C are views into
  one xBC buffer (b, L, h*p + 2*g*n) as the layer produces them; C and B are repeated per head
  (`repeat_interleave`, none when g = h), SDPA runs with the default dispatch, and
  `y = o + D * x` (float32, as our kernel writes y). The repeat IS in the time.
- `attention/sdpa_kernel/...`: the SDPA call alone on contiguous per-head q, k (b, h, L, n) and
  v (b, h, L, p). The call does not depend on g: it is timed once and written for every g so that
  it lines up with our rows.
- `attention/sdpa_kernel_<backend>/...` (full run only, g = 1): the same call with each SDPA
  backend forced (flash, efficient, cudnn); a backend that refuses the shapes (FA2 needs n == p)
  is listed in the context under "unsupported".
- `attention/fa2/...`: FlashAttention-2 (SDPA with the flash backend forced) at n = p = 64 and
  n = p = 128, its supported case: the reference rate for our kernel.

The default backend (kernel names from the profiler) is written into each record as "backend".
FLOP counts follow SPEC section 4 (causal half, L^2 / 2 pairs): TFLOP_per_s counts the algorithm,
2 * b * L^2/2 * (g*n + h*p) (scores once per group, values per head); equiv_TFLOP_per_s counts what
SDPA executes per head, 2 * b * L^2/2 * h * (n + p); fa2 counts 4 * b * h * L^2/2 * d.
flop_fraction is TFLOP_per_s over the measured GEMM ceiling of the dtype (bf16 676, fp32 52).

Shapes: h = 32, p = 64, n = 128, b * L = 65536 tokens, L = 512 .. 65536, g = 1, 8, 32; at
L = 4096 also p in {64, 128} x n in {64, 128}; fp32 for L <= 8192 and the L = 4096 variants (full
run; SDPA runs fp32 on the mem-efficient backend). Names follow the
project's convention, e.g. attention/sdpa/bf16/b:16/L:4096/h:32/p:64/n:128/g:1/graph:0 (eager).

Usage: python3 bench/peers/attention_sdpa.py [--json out.json] [--quick] [--budget SECONDS]
The JSON file is rewritten after every shape, so a run cut short keeps what it measured.
"""
import argparse

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from convention import CEILING_TFLOPS, Results, base_context, bench_name, make_record, median_ms, run_cases

TOKENS = 65536
HEADS, HEADDIM, D_STATE = 32, 64, 128
SWEEP_L = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
QUICK_L = [1024, 4096, 16384]
GROUPS = [1, 8, 32]
VARIANT_L = 4096
VARIANTS = [(p, n) for p in (64, 128) for n in (64, 128) if (p, n) != (HEADDIM, D_STATE)]
FP32_MAX_L = 8192
FORCED = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
          "cudnn": SDPBackend.CUDNN_ATTENTION}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

# --- measurement ----------------------------------------------------------------------------------

def kernels_of(fn):
    """Names of the CUDA kernels one call launches (which SDPA backend the dispatch chose)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
    return "; ".join(n[:80] for n in names)


def sdpa_flops(b, L, h, p, n, g):
    """(algorithm flops per SPEC 4, flops SDPA executes per head), causal half."""
    pairs = L * L / 2
    return 2 * b * pairs * (g * n + h * p), 2 * b * pairs * h * (n + p)


def transmamba_attention(results, L, p, n, groups, dtype_name):
    """SDPA on one TransMamba attention shape: the kernel alone, then the user path for each g."""
    dtype, dev, h = DTYPES[dtype_name], "cuda", HEADS
    b = TOKENS // L
    ceiling = CEILING_TFLOPS[dtype_name]
    q = torch.empty(b, h, L, n, device=dev, dtype=dtype).uniform_(-1, 1)
    k = torch.empty(b, h, L, n, device=dev, dtype=dtype).uniform_(-1, 1)
    v = torch.empty(b, h, L, p, device=dev, dtype=dtype).uniform_(-1, 1)
    call = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    backend = kernels_of(call)
    kernel_ms = median_ms(call)
    for g in groups:
        algo, equiv = sdpa_flops(b, L, h, p, n, g)
        name = bench_name("attention", "sdpa_kernel", dtype_name, b=b, L=L, h=h, p=p, n=n, g=g, graph=0)
        results.add(make_record(name, kernel_ms, flops=algo, tokens=b * L, ceiling=ceiling,
                                equiv_TFLOP_per_s=equiv / (kernel_ms * 1e-3) * 1e-12, backend=backend,
                                note="the same call for every g"))
    del q, k, v
    D = torch.empty(h, device=dev, dtype=torch.float32).uniform_(0.5, 1.5)
    for g in groups:
        width = h * p + 2 * g * n
        xbc = torch.empty(b, L, width, device=dev, dtype=dtype).uniform_(-1, 1)
        x = xbc[..., :h * p].view(b, L, h, p)
        B = xbc[..., h * p:h * p + g * n].view(b, L, g, n)
        C = xbc[..., h * p + g * n:].view(b, L, g, n)
        per_head = (lambda t: t) if g == h else (lambda t: t.repeat_interleave(h // g, dim=2))

        def user_path():
            o = F.scaled_dot_product_attention(per_head(C).transpose(1, 2), per_head(B).transpose(1, 2),
                                               x.transpose(1, 2), is_causal=True)
            return o.transpose(1, 2) + D[:, None] * x  # (b, L, h, p), float32

        ms = median_ms(user_path)
        algo, equiv = sdpa_flops(b, L, h, p, n, g)
        name = bench_name("attention", "sdpa", dtype_name, b=b, L=L, h=h, p=p, n=n, g=g, graph=0)
        results.add(make_record(name, ms, flops=algo, tokens=b * L, ceiling=ceiling,
                                equiv_TFLOP_per_s=equiv / (ms * 1e-3) * 1e-12, backend=backend,
                                note="repeat of C, B per head and y = o + D x included"))
        del xbc, x, B, C


def forced_backends(results, L):
    """The SDPA call on the base shape (g = 1) with each backend forced in turn."""
    dev, h, p, n = "cuda", HEADS, HEADDIM, D_STATE
    b = TOKENS // L
    q = torch.empty(b, h, L, n, device=dev, dtype=torch.bfloat16).uniform_(-1, 1)
    k = torch.empty(b, h, L, n, device=dev, dtype=torch.bfloat16).uniform_(-1, 1)
    v = torch.empty(b, h, L, p, device=dev, dtype=torch.bfloat16).uniform_(-1, 1)
    call = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    algo, equiv = sdpa_flops(b, L, h, p, n, 1)
    for label, which in FORCED.items():
        try:
            with sdpa_kernel([which]):
                ms = median_ms(call)
        except RuntimeError as e:  # FA2 refuses n != p
            results.context.setdefault("unsupported", []).append(
                f"{label} at L={L} p={p} n={n}: {str(e).splitlines()[0][:120]}")
            continue
        name = bench_name("attention", f"sdpa_kernel_{label}", "bf16", b=b, L=L, h=h, p=p, n=n, g=1, graph=0)
        results.add(make_record(name, ms, flops=algo, tokens=b * L, ceiling=CEILING_TFLOPS["bf16"],
                                equiv_TFLOP_per_s=equiv / (ms * 1e-3) * 1e-12))


def fa2_reference(results, L):
    """FlashAttention-2 (flash backend forced) at n = p = 64 and 128: the reference rate."""
    b, h = TOKENS // L, HEADS
    for d in (64, 128):
        q, k, v = (torch.empty(b, h, L, d, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1) for _ in range(3))
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        flops = 4 * b * h * (L * L / 2) * d
        name = bench_name("attention", "fa2", "bf16", b=b, L=L, h=h, p=d, n=d, graph=0)
        results.add(make_record(name, ms, flops=flops, tokens=b * L, ceiling=CEILING_TFLOPS["bf16"]))
        del q, k, v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the records here (rewritten after every shape)")
    ap.add_argument("--quick", action="store_true", help="L = 1024, 4096, 16384 only, bf16, no variants")
    ap.add_argument("--l4096", action="store_true",
                    help="bf16 at L = 4096 only: every (p, n) of the sweep and the FA2 reference rate")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds; shapes left when it is spent are skipped")
    args = ap.parse_args()
    torch.manual_seed(0)
    context = base_context("bench/peers/attention_sdpa.py", args, cudnn=True)
    context["timing"] = ("triton.testing.do_bench(warmup >= 25 ms, rep >= 200 ms and >= 5 calls) median, "
                         "L2 flushed before each call, eager")
    results = Results(args.json, context)
    print(f"{context['device']}  torch {torch.__version__}  cuDNN {context['cudnn_version']}  "
          f"triton {triton.__version__}", flush=True)

    lengths = QUICK_L if args.quick else SWEEP_L
    cases = []
    if args.l4096:
        for p, n in [(HEADDIM, D_STATE)] + VARIANTS:
            cases.append((f"bf16 L={VARIANT_L} p={p} n={n}",
                          lambda p=p, n=n: transmamba_attention(results, VARIANT_L, p, n, GROUPS, "bf16")))
        cases.append((f"fa2 L={VARIANT_L}", lambda: fa2_reference(results, VARIANT_L)))
        lengths = []
    for L in lengths:  # the main sweep first: ours against SDPA, and the FA2 reference rate
        cases.append((f"bf16 L={L}", lambda L=L: transmamba_attention(results, L, HEADDIM, D_STATE, GROUPS, "bf16")))
        cases.append((f"fa2 L={L}", lambda L=L: fa2_reference(results, L)))
    if not args.quick and not args.l4096:
        for p, n in VARIANTS:
            cases.append((f"bf16 L={VARIANT_L} p={p} n={n}",
                          lambda p=p, n=n: transmamba_attention(results, VARIANT_L, p, n, GROUPS, "bf16")))
        for L in lengths:
            cases.append((f"forced backends L={L}",
                          lambda L=L: forced_backends(results, L)))
        for L in [L for L in lengths if L <= FP32_MAX_L]:
            cases.append((f"fp32 L={L}", lambda L=L: transmamba_attention(results, L, HEADDIM, D_STATE, GROUPS, "fp32")))
        for p, n in VARIANTS:
            cases.append((f"fp32 L={VARIANT_L} p={p} n={n}",
                          lambda p=p, n=n: transmamba_attention(results, VARIANT_L, p, n, GROUPS, "fp32")))
    run_cases(cases, args.budget, results)
    for line in context.get("unsupported", []):
        print("unsupported:", line)
    print(f"{len(results.records)} records; skipped {len(context['skipped'])}; errors {len(context['errors'])}")


if __name__ == "__main__":
    main()
