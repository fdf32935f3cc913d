#!/usr/bin/env python3
"""Peer for bench/cuda/attention.cu: PyTorch scaled_dot_product_attention(is_causal=True) on the
same TransMamba attention (Q=C, K=B, V=x), bf16, batch * L = 16384 tokens, 32 heads, headdim p = 64,
d_state n = 128, as a PyTorch user runs it: C and B repeated per head,
q: (b, h, L, n), k: (b, h, L, n), v: (b, h, L, p).

Reports, per L: which SDPA backend the default dispatch runs (kernel names from the profiler), its
median time (triton.testing.do_bench) and TFLOP/s counted per head, 2*b*h*L^2/2*(n + p); the
time of the per-head repeat of C and B (g = 1, 8, 32) that the user also pays; each backend forced
in turn; and FA2 itself at n = p = 64 and n = p = 128 (FA2 needs n == p), the reference figure for
the speed goal. Also tried: the grouped formulation a careful user could write, one "head" per
group with value dim (h/g)*p (q, k: (b, g, L, n), v: (b, g, L, h/g*p)).

Usage: python3 bench/peers/attention_sdpa.py [--json out.json]
"""
import argparse
import json

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

TOKENS, HEADS, P, N = 16384, 32, 64, 128
LENGTHS = [1024, 2048, 4096, 8192, 16384]
GROUPS = [1, 8, 32]
BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}


def median_ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median")


def tflops(flops, ms):
    return flops / (ms * 1e-3) / 1e12


def kernels_of(fn):
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
    return [n[:90] for n in names]


def try_backend(backend, fn):
    try:
        with sdpa_kernel([backend]):
            fn()
            torch.cuda.synchronize()
            return median_ms(fn)
    except RuntimeError as e:  # the backend refuses the shapes
        return "unsupported: " + str(e).split("\n")[0][:100]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    results = []
    for L in LENGTHS:
        b = TOKENS // L
        pairs = L * L / 2
        row = {"L": L, "batch": b}
        # Per head, as a PyTorch user runs it (the repeated C and B are materialised once, outside
        # the timed call; their cost is timed separately below).
        q = torch.randn(b, HEADS, L, N, device=dev, dtype=torch.bfloat16)
        k = torch.randn(b, HEADS, L, N, device=dev, dtype=torch.bfloat16)
        v = torch.randn(b, HEADS, L, P, device=dev, dtype=torch.bfloat16)
        run = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        flops_equiv = 2 * b * HEADS * pairs * (N + P)
        row["default_kernels"] = kernels_of(run)
        ms = median_ms(run)
        row["sdpa_ms"] = ms
        row["sdpa_equiv_tflops"] = tflops(flops_equiv, ms)
        for name, backend in BACKENDS.items():
            r = try_backend(backend, run)
            row[f"sdpa_{name}_ms"] = r
        # The repeat per head of C and B (b, L, g, n) -> (b, h, L, n), for each g.
        for g in GROUPS:
            C = torch.randn(b, L, g, N, device=dev, dtype=torch.bfloat16)
            Bk = torch.randn(b, L, g, N, device=dev, dtype=torch.bfloat16)
            rep = lambda: (C.repeat_interleave(HEADS // g, dim=2).transpose(1, 2).contiguous(),
                           Bk.repeat_interleave(HEADS // g, dim=2).transpose(1, 2).contiguous())
            row[f"repeat_g{g}_ms"] = median_ms(rep)
            # Grouped: one head per group, value dim (h/g)*p.
            qg = C.transpose(1, 2).contiguous()
            kg = Bk.transpose(1, 2).contiguous()
            vg = torch.randn(b, g, L, HEADS // g * P, device=dev, dtype=torch.bfloat16)
            grouped = lambda: F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
            try:
                gms = median_ms(grouped)
                row[f"grouped_g{g}_ms"] = gms
                row[f"grouped_g{g}_kernels"] = kernels_of(grouped)
            except RuntimeError as e:
                row[f"grouped_g{g}_ms"] = "unsupported: " + str(e).split("\n")[0][:100]
            del C, Bk, qg, kg, vg
        del q, k, v
        # FA2 at n = p (its supported case): the reference rate.
        for d in (64, 128):
            q = torch.randn(b, HEADS, L, d, device=dev, dtype=torch.bfloat16)
            k = torch.randn(b, HEADS, L, d, device=dev, dtype=torch.bfloat16)
            v = torch.randn(b, HEADS, L, d, device=dev, dtype=torch.bfloat16)
            r = try_backend(SDPBackend.FLASH_ATTENTION,
                            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
            row[f"fa2_d{d}_ms"] = r
            if isinstance(r, float):
                row[f"fa2_d{d}_tflops"] = tflops(4 * b * HEADS * pairs * d, r)
            del q, k, v
        results.append(row)
        torch.cuda.empty_cache()

    print("\nSDPA on TransMamba attention, bf16, 16384 tokens, h=32, p=64, n=128 (C, B repeated per head)")
    print("default backend kernels:", {r["L"]: r["default_kernels"] for r in results})
    hdr = f"{'L':>6} {'b':>3} {'sdpa ms':>9} {'equivTF':>8} {'flash':>10} {'effic':>9} {'cudnn':>9} " \
          f"{'rep g1':>7} {'rep g8':>7} {'rep g32':>7} {'grp g1':>8} {'grp g8':>8} {'grp g32':>8} " \
          f"{'FA2 d64 ms/TF':>15} {'FA2 d128 ms/TF':>15}"
    print(hdr)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "n/a"
    for r in results:
        print(f"{r['L']:>6} {r['batch']:>3} {r['sdpa_ms']:>9.3f} {r['sdpa_equiv_tflops']:>8.1f} "
              f"{fmt(r['sdpa_flash_ms']):>10} {fmt(r['sdpa_efficient_ms']):>9} {fmt(r['sdpa_cudnn_ms']):>9} "
              f"{r['repeat_g1_ms']:>7.3f} {r['repeat_g8_ms']:>7.3f} {r['repeat_g32_ms']:>7.3f} "
              f"{fmt(r['grouped_g1_ms']):>8} {fmt(r['grouped_g8_ms']):>8} {fmt(r['grouped_g32_ms']):>8} "
              f"{fmt(r.get('fa2_d64_ms')):>7}/{r.get('fa2_d64_tflops', 0):>6.1f} "
              f"{fmt(r.get('fa2_d128_ms')):>7}/{r.get('fa2_d128_tflops', 0):>6.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
