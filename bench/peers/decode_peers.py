#!/usr/bin/env python3
"""Peers for one decoding step (bench/cuda/decode.cu): what a PyTorch user runs per token.

What is measured:

- `decode_ssm/ssu/bf16/b:B/h:64/p:64/n:128/g:G/graph:{0,1}`: mamba_ssm's Triton
  `selective_state_update` (the kernel Mamba2.step calls), 64 heads x headdim 64 x d_state 128,
  float32 state (b, h, p, n) updated in place, bf16 x (b, h, p), B and C (b, g, n), dt (b, h) with
  dt_bias and softplus, A, D per head (broadcast over p and n with stride 0, as Mamba2.step passes
  them), no z (the gate is applied in the norm); batch 1, 16, 64, 256, g 1 and 8. S = a S + dt x B^T,
  y = S C + D x: the state update alone, not a whole mixer step.
- `decode_attention/sdpa_kvcache/bf16/b:B/h:64/p:128/n:128/cache:T/graph:{0,1}`: one query token
  attending over a bf16 KV cache of T = 1024 or 8192 tokens, 64 heads x 128 (q (b, 64, 1, 128),
  k, v (b, 64, T, 128), the layout of a transformers cache), SDPA's default dispatch, no mask
  (the shared PERF.md's reference row).
- `decode_attention/sdpa_kvcache/bf16/b:B/h:64/p:64/n:128/g:G/cache:T/graph:{0,1}`: the same on
  TransMamba's decode shape: q = C (b, h, 1, n) repeated per head, keys B (b, g, T, n) cached once
  per group and brought to the heads in the call (g = 1: `expand`, a stride-0 view; g > 1:
  `repeat_interleave`, a copy), values x (b, h, T, p). With n != p FA2 does not apply; the
  dispatch picks another backend (which may copy the expanded keys itself). Batch 1, 16, 64 at T =
  4096 and 32768, the shapes of bench/cuda/decode.cu's decode_attention benchmarks.

- `decode_attention/sdpa_kvcache/bf16/b:B/h:64/p:128/n:128/g:64/cache:T/graph:{0,1}`: plain
  multi-head attention (g = h, nothing repeated), the shape every decoding kernel serves; and
  `decode_attention/flash_kvcache/...` the same through flash_attn's `flash_attn_with_kvcache`
  (q (b, 1, h, d), caches (b, T, h, d), cache_seqlens = T), when the module is importable.
- `--attention`: only these two (the flash-decoding comparison, batch 1, 16, 64 at caches of 4096
  and 32768 tokens, TransMamba's shape at g 1 and 8 and the multi-head shape); a full run (no
  --quick, no --ssm-only) runs them after the SSM and reference cases.

Ours (bench/cuda/decode.cu) times a whole mixer step (projections, conv, norm included) at batch
1; these peers time the state update or the attention alone, so their ratio to ours bounds how
much of our step is overhead rather than comparing like with like.

Timing: CUDA events around a loop of back-to-back calls (eager, graph:0: the Python call, launch
overhead included) or of replays of a CUDA graph holding those calls (graph:1); the time per call is
the loop's time over its calls, and the figure is the median of 7 loops. Inputs are rotated: when
one call's state or cache is under 150 MB, K copies (K * size >= 150 MB, three times the 50 MB L2)
are made and the calls cycle through them, so no call finds its data in L2 from the call before.
GB_per_s: the float32 state read and written (ssu) or the K and V cache read (SDPA).

Usage: python3 bench/peers/decode_peers.py [--json out.json] [--quick] [--ssm-only] [--attention] [--budget SECONDS]
(PYTHONPATH=.peers for mamba_ssm, see ssd_triton.py). The JSON file is rewritten after every shape.
"""
import argparse
import math

import torch
import torch.nn.functional as F
import triton

from convention import CEILING_TFLOPS, Results, base_context, bench_name, make_record, run_cases

HEADS, HEADDIM, D_STATE = 64, 64, 128
BATCHES = [1, 16, 64, 256]
CACHES = [1024, 8192]
ATTENTION_BATCHES = [1, 16, 64]
ATTENTION_CACHES = [4096, 32768]
SSM_GROUPS = [1, 8]
REF_HEADS, REF_HEADDIM = 64, 128
ROTATE_BYTES = 150 * 2**20
LOOPS = 7

# --- measurement ----------------------------------------------------------------------------------

def copies_for(nbytes):
    """How many input sets to rotate through so that the working set is >= ROTATE_BYTES."""
    return max(1, math.ceil(ROTATE_BYTES / max(nbytes, 1)))


def loop_ms(calls, graph):
    """Median time of one call: `calls` (one closure per input copy) run back to back, eager or as
    replays of a CUDA graph that holds them all. Returns ms per call."""
    for fn in calls:  # compilation, cuDNN plans, first-touch
        fn()
    torch.cuda.synchronize()
    if graph:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for fn in calls:
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for fn in calls:
                fn()
        body, per_body = g.replay, len(calls)
    else:
        def body():
            for fn in calls:
                fn()
        per_body = len(calls)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    body()
    stop.record()
    stop.synchronize()
    once = start.elapsed_time(stop)
    repeats = max(1, math.ceil(2.0 / max(once, 1e-3)))  # each timed loop >= ~2 ms
    times = []
    for _ in range(LOOPS):
        start.record()
        for _ in range(repeats):
            body()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / (repeats * per_body))
    times.sort()
    return times[len(times) // 2]


def ssu_case(results, batch, g):
    """mamba_ssm selective_state_update on (batch, 64, 64, 128), float32 state, bf16 inputs."""
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    dev, h, p, n = "cuda", HEADS, HEADDIM, D_STATE
    A = -torch.empty(h, device=dev).uniform_(1, 16)
    dt_bias = torch.empty(h, device=dev).uniform_(-4, -1)
    D = torch.ones(h, device=dev)
    # As Mamba2.step: per-head values broadcast over p (and n) with stride 0.
    A_b = A[:, None, None].expand(h, p, n)
    dt_bias_b, D_b = dt_bias[:, None].expand(h, p), D[:, None].expand(h, p)
    state_bytes = batch * h * p * n * 4
    calls = []
    for _ in range(copies_for(state_bytes)):
        state = torch.empty(batch, h, p, n, device=dev).uniform_(-1, 1)
        x = torch.empty(batch, h, p, device=dev, dtype=torch.bfloat16).uniform_(-1, 1)
        dt = torch.empty(batch, h, device=dev, dtype=torch.bfloat16).uniform_(-1, 1)[:, :, None].expand(batch, h, p)
        B = torch.empty(batch, g, n, device=dev, dtype=torch.bfloat16).uniform_(-1, 1)
        C = torch.empty(batch, g, n, device=dev, dtype=torch.bfloat16).uniform_(-1, 1)
        calls.append(lambda state=state, x=x, dt=dt, B=B, C=C: selective_state_update(
            state, x, dt, A_b, B, C, D=D_b, z=None, dt_bias=dt_bias_b, dt_softplus=True))
    nbytes = 2 * state_bytes + batch * (2 * h * p + 2 * g * n + h) * 2
    flops = batch * h * p * n * 6  # a S + dt x B^T (4 per element), S C (2 per element)
    for flag in (0, 1):
        ms = loop_ms(calls, graph=bool(flag))
        name = bench_name("decode_ssm", "ssu", "bf16", b=batch, h=h, p=p, n=n, g=g, graph=flag)
        results.add(make_record(name, ms, flops=flops, nbytes=nbytes, tokens=batch, ceiling=CEILING_TFLOPS["bf16"],
                                state_dtype="fp32", copies=len(calls)))


def flash_kvcache():
    """flash_attn's decoding entry, or None where flash_attn is not installed."""
    try:
        from flash_attn import flash_attn_with_kvcache
        return flash_attn_with_kvcache
    except Exception:  # ImportError, or a build for another torch / CUDA
        return None


def multi_head_case(results, batch, cache):
    """Plain multi-head decoding (64 heads x 128, g = h): SDPA with q length 1, and
    flash_attn_with_kvcache when importable, over the same bf16 caches."""
    dev, bf, h, d = "cuda", torch.bfloat16, REF_HEADS, REF_HEADDIM
    cache_bytes = 2 * batch * cache * h * d * 2
    flash = flash_kvcache()
    sdpa_calls, flash_calls = [], []
    for _ in range(copies_for(cache_bytes)):
        k = torch.empty(batch, h, cache, d, device=dev, dtype=bf).uniform_(-1, 1)
        v = torch.empty(batch, h, cache, d, device=dev, dtype=bf).uniform_(-1, 1)
        q = torch.empty(batch, h, 1, d, device=dev, dtype=bf).uniform_(-1, 1)
        sdpa_calls.append(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
        if flash is not None:  # its own layout, (b, T, heads, d), in caches of its own
            qf, kf, vf = (t.transpose(1, 2).contiguous() for t in (q, k, v))
            seqlens = torch.full((batch,), cache, device=dev, dtype=torch.int32)
            flash_calls.append(lambda q=qf, k=kf, v=vf, s=seqlens: flash(q, k, v, cache_seqlens=s))
    flops = 2 * batch * cache * 2 * h * d
    impls = [("sdpa_kvcache", sdpa_calls)] + ([("flash_kvcache", flash_calls)] if flash is not None else [])
    if flash is None:
        note = "flash_attn is not importable: flash_attn_with_kvcache not run"
        if note not in results.context.setdefault("notes", []):
            results.context["notes"].append(note)
            print(note, flush=True)
    for impl, calls in impls:
        for flag in (0, 1):
            try:
                ms = loop_ms(calls, graph=bool(flag))
            except Exception as e:  # e.g. flash_attn refusing a non-contiguous cache
                results.context["errors"].append(f"{impl} b={batch} cache={cache}: {str(e).splitlines()[0][:200]}")
                continue
            name = bench_name("decode_attention", impl, "bf16", b=batch, h=h, p=d, n=d, g=h, cache=cache, graph=flag)
            results.add(make_record(name, ms, flops=flops, nbytes=cache_bytes, tokens=batch,
                                    ceiling=CEILING_TFLOPS["bf16"], copies=len(calls),
                                    of_4300_GB_per_s=cache_bytes / (ms * 1e-3) / 4.3e12))
    del sdpa_calls, flash_calls


def kvcache_case(results, batch, cache, transmamba_groups=None):
    """SDPA of one query over a bf16 KV cache: the reference shape (64 x 128), or, with
    transmamba_groups = g, TransMamba's decode shape (keys per group, values per head)."""
    dev, bf = "cuda", torch.bfloat16
    if transmamba_groups is None:
        h, p, n, g = REF_HEADS, REF_HEADDIM, REF_HEADDIM, None
        key_heads = h
    else:
        h, p, n, g = HEADS, HEADDIM, D_STATE, transmamba_groups
        key_heads = g
    cache_bytes = batch * cache * (key_heads * n + h * p) * 2
    calls = []
    for _ in range(copies_for(cache_bytes)):
        k = torch.empty(batch, key_heads, cache, n, device=dev, dtype=bf).uniform_(-1, 1)
        v = torch.empty(batch, h, cache, p, device=dev, dtype=bf).uniform_(-1, 1)
        if g is None:
            q = torch.empty(batch, h, 1, n, device=dev, dtype=bf).uniform_(-1, 1)
            calls.append(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
        else:
            q_group = torch.empty(batch, g, 1, n, device=dev, dtype=bf).uniform_(-1, 1)

            def call(q_group=q_group, k=k, v=v):
                q = q_group.repeat_interleave(h // g, dim=1)
                k_heads = k.expand(batch, h, cache, n) if g == 1 else k.repeat_interleave(h // g, dim=1)
                return F.scaled_dot_product_attention(q, k_heads, v)
            calls.append(call)
    flops = 2 * batch * cache * ((g if g else h) * n + h * p)
    for flag in (0, 1):
        ms = loop_ms(calls, graph=bool(flag))
        name = bench_name("decode_attention", "sdpa_kvcache", "bf16", b=batch, h=h, p=p, n=n, g=g, cache=cache,
                          graph=flag)
        results.add(make_record(name, ms, flops=flops, nbytes=cache_bytes, tokens=batch,
                                ceiling=CEILING_TFLOPS["bf16"], copies=len(calls),
                                of_4300_GB_per_s=cache_bytes / (ms * 1e-3) / 4.3e12))
    del calls


def add_attention_cases(cases, results):
    """The shapes of bench/cuda/decode.cu's decode_attention kernel benchmarks."""
    for cache in ATTENTION_CACHES:
        for b in ATTENTION_BATCHES:
            for g in SSM_GROUPS:
                cases.append((f"sdpa kv transmamba b={b} g={g} cache={cache}",
                              lambda b=b, g=g, cache=cache: kvcache_case(results, b, cache, g)))
            cases.append((f"multi-head kv b={b} cache={cache}", lambda b=b, cache=cache: multi_head_case(results, b, cache)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the records here (rewritten after every shape)")
    ap.add_argument("--quick", action="store_true", help="batch 1 and 64, g = 1, the reference SDPA shape only")
    ap.add_argument("--budget", type=float, default=90.0, help="seconds; shapes left when it is spent are skipped")
    ap.add_argument("--attention", action="store_true",
                    help="only the flash-decoding comparison: batch 1, 16, 64, caches 4096 and 32768, "
                         "g 1 and 8 and plain multi-head")
    ap.add_argument("--ssm-only", action="store_true",
                    help="only selective_state_update, every batch and group (the SDPA cases are skipped)")
    args = ap.parse_args()
    torch.manual_seed(0)
    context = base_context("bench/peers/decode_peers.py", args)
    context["timing"] = ("CUDA events around back-to-back calls (eager) or graph replays (graph:1), ms per call, "
                         f"median of {LOOPS} loops; inputs rotated over copies totalling >= 150 MB")
    results = Results(args.json, context, print_unit="us")
    print(f"{context['device']}  torch {torch.__version__}  triton {triton.__version__}", flush=True)

    cases = []
    if args.attention:
        add_attention_cases(cases, results)
        run_cases(cases, args.budget, results)
        print(f"{len(results.records)} records; skipped {len(context['skipped'])}; errors {len(context['errors'])}")
        return
    batches = [1, 64] if args.quick else BATCHES
    for g in ([1] if args.quick else SSM_GROUPS):
        for b in batches:
            cases.append((f"ssu b={b} g={g}", lambda b=b, g=g: ssu_case(results, b, g)))
    for cache in ([] if args.ssm_only else CACHES):
        for b in batches:
            cases.append((f"sdpa kv b={b} cache={cache}", lambda b=b, cache=cache: kvcache_case(results, b, cache)))
    if not args.quick and not args.ssm_only:
        add_attention_cases(cases, results)
    run_cases(cases, args.budget, results)
    print(f"{len(results.records)} records; skipped {len(context['skipped'])}; errors {len(context['errors'])}")


if __name__ == "__main__":
    main()
