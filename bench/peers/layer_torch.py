#!/usr/bin/env python3
"""Peer for the whole TransMamba layer: the layer composed in PyTorch from the pieces a researcher
would pick today (the shared PERF.md's "A TransMamba layer composed in PyTorch"), timed eager and
captured in a CUDA graph, after a self-check against a float64 naive implementation of SPEC.md.

What the composed layer computes (SPEC.md section 3, the paper's default variant), for u (b, L, d):

    zxbcdt = F.linear(u, in_proj)                        cuBLAS; split into z, xBC, dt_raw
    xBC    = silu(F.conv1d(xBC, depthwise, causal))      x (b,L,h,p), B, C (b,L,g,n) are views of it
    dt     = softplus(dt_raw + dt_bias)   (float32),     A = -exp(A_log)
    t < P:   y = SDPA(q = C, k = B, v = x, causal) + D x  C and B repeated per head (repeat_interleave);
                                                          SDPA's default dispatch (FA2 where it applies;
                                                          with n != p it picks cuDNN or mem-efficient)
    at P:    S = sum_{t<P} exp(cumA_{P-1} - cumA_t) dt_t x_t B_t^T   the Memory Converter, one einsum
             (cumA_t = sum_{m<=t} dt_m A; weights in float32, the einsum in the input dtype, S float32)
    t >= P:  y, S_final = mamba_ssm mamba_chunk_scan_combined(x, dt, A, B, C, chunk 256, D=D,
                                                              initial_states=S, return_final_states=True)
    norm:    mamba_ssm layernorm_gated.rmsnorm_fn(y, norm.weight, group_size=d_inner/g,
             norm_before_gate=False), with z = None on the attention tokens (SPEC: attention outputs
             are NOT gated by z, but are normed) and z on the SSM tokens (rmsnorm(y * silu(z)));
             the two parts are concatenated along L
    out    = F.linear(normed, out_proj)                  cuBLAS

The D skip applies to the attention tokens too (SPEC). The converter runs whenever P > 0 (at P = L
its state is the layer's final state, what decoding would continue from), the scan whenever P < L;
the layer always ends with the final SSM state, as ours does.

Self-check (before any timing): for one small shape (d_model 128, 8 heads of 32, d_state 32, g 2,
b 2, L 160, chunk 64) and P in {0, 45, 100, 160}, the composed layer's output and final state are
compared with `naive_layer` below, a float64 loop over batch, head and token (attention prefix,
then the recurrence S_t = a_t S_{t-1} + dt_t x_t B_t^T from token 0, so the converter is checked
against the recurrence it must equal). Relative error = max|out - ref| / max|ref|; the output's must
be < 2e-2 in bf16 (the benchmark's own path, SDPA's default dispatch, in this process) and < 1e-4
in fp32, where the final state's must be < 1e-4 too. The fp32 check runs in a child process with
TRITON_F32_DEFAULT=ieee (Triton's fp32 dots would otherwise be TF32, ~1e-3), TF32 off in
cuBLAS/cuDNN and SDPA's math backend forced: it checks the composition, not the kernels' precision.
A failed check stops the script before any timing (--skip-self-check skips it).

Timing: d_model 2048, expand 2, headdim 64 (64 heads), d_state 128, d_conv 4, bf16, g in {1, 8},
b x L in {8 x 4096, 2 x 16384, 1 x 65536}, P in {0, L/8, L/4, L/2, L}; medians of
triton.testing.do_bench (L2 flushed before each call; at least ~5 timed calls), eager (graph:0,
the Python forward as written) and graph (graph:1, the forward captured once in a
torch.cuda.CUDAGraph and replayed). Names: layer/torch_layer/bf16/b:8/L:4096/h:64/p:64/n:128/g:1/
P:512/graph:1. TFLOP_per_s counts SPEC section 4's work plus the projections:
2*b*L*d_model*(d_in_proj + d_inner) + 2*b*P^2/2*(g*n + h*p) + 2*b*h*P*n*p
+ b*h*(L - P)*(2*256*(n + p) + 4*n*p). After the bf16 layer, in order of priority (the time
budget cuts from the end): the Memory Converter alone on bench/cuda/converter.cu's shapes
(P = 512 .. 65536, b = 65536 / P, h 32, p 64, n 128, g 1), as the einsum above
(converter/torch_einsum/...) and as mamba_ssm computes a final state, its chunk cumsum + chunk
states + state passing (converter/triton_ssd_state/...), bf16; the fp32 layer at 8 x 4096, g 1;
the converter in fp32. TFLOP_per_s of the converter: 2*b*h*P*n*p; GB_per_s: x, B, dt read, the
state read and written. --quick: 8 x 4096 g 1, the converter at P = 4096, the bf16 self-check.

Needs mamba_ssm's Triton ops under PYTHONPATH (.peers/, see ssd_triton.py's docstring).
Usage: python3 bench/peers/layer_torch.py [--json out.json] [--quick] [--budget SECONDS]
                                          [--skip-self-check] [--only REGEX]
The JSON file is rewritten after every shape, so a run cut short keeps what it measured.
"""
import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from convention import CEILING_TFLOPS, Results, base_context, bench_name, make_record, median_ms, run_cases

try:  # the timed path needs Triton and mamba_ssm; the float64 reference does not
    import triton
    from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    from mamba_ssm.ops.triton.ssd_chunk_state import _chunk_cumsum_fwd, _chunk_state_fwd
    from mamba_ssm.ops.triton.ssd_state_passing import _state_passing_fwd
except ImportError as _e:  # pragma: no cover - reported when the layer is called
    triton = None
    _IMPORT_ERROR = _e

SHAPES = [(8, 4096), (2, 16384), (1, 65536)]  # (batch, L)
GROUPS = [1, 8]
CONVERTER_P = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]  # b = 65536 / P
D_MODEL, EXPAND, HEADDIM, D_STATE, D_CONV, CHUNK = 2048, 2, 64, 128, 4, 256
SELF_CHECK_TOLERANCE = {"bf16": 2e-2, "fp32": 1e-4}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

# --- the layer ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LayerConfig:
    d_model: int = D_MODEL
    expand: int = EXPAND
    headdim: int = HEADDIM
    d_state: int = D_STATE
    ngroups: int = 1
    d_conv: int = D_CONV
    chunk_size: int = CHUNK
    eps: float = 1e-5

    @property
    def d_inner(self):
        return self.expand * self.d_model

    @property
    def nheads(self):
        return self.d_inner // self.headdim

    @property
    def conv_dim(self):
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def d_in_proj(self):
        return 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads


def make_weights(cfg, dtype, device, seed):
    """Random weights in Mamba2's trained ranges. Projections, conv and norm weight in `dtype`;
    dt_bias, A_log and D (one per head) in float32, as Mamba2 keeps them."""
    gen = torch.Generator().manual_seed(seed)
    h = cfg.nheads

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    dt = torch.exp(uniform(h, math.log(1e-3), math.log(1e-1)))
    w = {
        "in_proj": torch.randn(cfg.d_in_proj, cfg.d_model, generator=gen, dtype=torch.float64) / math.sqrt(cfg.d_model),
        "conv_w": uniform((cfg.conv_dim, 1, cfg.d_conv), -0.5, 0.5),
        "conv_b": uniform(cfg.conv_dim, -0.1, 0.1),
        "dt_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
        "A_log": torch.log(uniform(h, 1.0, 16.0)),
        "D": uniform(h, 0.5, 1.5),
        "norm_w": uniform(cfg.d_inner, 0.5, 1.5),
        "out_proj": torch.randn(cfg.d_model, cfg.d_inner, generator=gen, dtype=torch.float64) / math.sqrt(cfg.d_inner),
    }
    small = {"dt_bias", "A_log", "D"}
    return {k: v.to(device=device, dtype=torch.float32 if k in small else dtype) for k, v in w.items()}


def memory_converter(x, B, dt, A):
    """The einsum Memory Converter (SPEC eq. 8-9): the SSM state after the prefix x (b, P, h, p),
    B (b, P, g, n), dt (b, P, h), S = sum_t exp(cumA_{P-1} - cumA_t) dt_t x_t B_t^T, float32."""
    b, P, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    cum = torch.cumsum(dt * A, dim=1)  # cumA_t = sum_{m<=t} dt_m A, (b, P, h)
    weight = torch.exp(cum[:, -1:] - cum) * dt
    xw = (x.float() * weight[..., None]).to(x.dtype).view(b, P, g, h // g, p)
    return torch.einsum("btgkp,btgn->bgkpn", xw, B).reshape(b, h, p, n).float()


def layer_forward(u, W, cfg, P):
    """The composed layer (see the module docstring). u (b, L, d_model) -> (out, final SSM state)."""
    if triton is None:
        raise _IMPORT_ERROR
    b, L, _ = u.shape
    h, p, n, g, di = cfg.nheads, cfg.headdim, cfg.d_state, cfg.ngroups, cfg.d_inner
    P = min(P, L)
    zxbcdt = F.linear(u, W["in_proj"])
    z, xBC, dt_raw = torch.split(zxbcdt, [di, cfg.conv_dim, h], dim=-1)
    conv = F.conv1d(xBC.transpose(1, 2), W["conv_w"], W["conv_b"], padding=cfg.d_conv - 1, groups=cfg.conv_dim)
    xBC = F.silu(conv[..., :L]).transpose(1, 2).contiguous()  # (b, L, conv_dim)
    x = xBC[..., :di].view(b, L, h, p)
    B = xBC[..., di:di + g * n].view(b, L, g, n)
    C = xBC[..., di + g * n:].view(b, L, g, n)
    dt = F.softplus(dt_raw.float() + W["dt_bias"])  # (b, L, h)
    A = -torch.exp(W["A_log"])
    D = W["D"]
    normed, state = [], None
    if P > 0:
        xa, Ba, Ca = x[:, :P], B[:, :P], C[:, :P]
        per_head = (lambda t: t) if g == h else (lambda t: t.repeat_interleave(h // g, dim=2))
        o = F.scaled_dot_product_attention(per_head(Ca).transpose(1, 2), per_head(Ba).transpose(1, 2),
                                           xa.transpose(1, 2), is_causal=True)  # (b, h, P, p)
        ya = (o.transpose(1, 2).float() + D[:, None] * xa.float()).to(u.dtype)  # + D x, rounded once
        normed.append(rmsnorm_fn(ya.reshape(b, P, di), W["norm_w"], None, z=None, eps=cfg.eps,
                                 group_size=di // g, norm_before_gate=False))
        state = memory_converter(xa, Ba, dt[:, :P], A)
    if P < L:
        ys, state = mamba_chunk_scan_combined(x[:, P:], dt[:, P:], A, B[:, P:], C[:, P:], cfg.chunk_size, D=D,
                                              initial_states=state, return_final_states=True)
        normed.append(rmsnorm_fn(ys.reshape(b, L - P, di), W["norm_w"], None, z=z[:, P:], eps=cfg.eps,
                                 group_size=di // g, norm_before_gate=False))
    y = normed[0] if len(normed) == 1 else torch.cat(normed, dim=1)
    return F.linear(y, W["out_proj"]), state


def naive_layer(u, W, cfg, P):
    """SPEC.md section 3 in float64, written plainly: loops over batch, head and token."""
    u = u.double()
    W = {k: v.double() for k, v in W.items()}
    b, L, _ = u.shape
    h, p, n, g, di, K = cfg.nheads, cfg.headdim, cfg.d_state, cfg.ngroups, cfg.d_inner, cfg.d_conv
    P = min(P, L)
    zxbcdt = u @ W["in_proj"].T
    z, xBC, dt_raw = zxbcdt[..., :di], zxbcdt[..., di:di + cfg.conv_dim], zxbcdt[..., di + cfg.conv_dim:]
    conv = torch.zeros_like(xBC) + W["conv_b"]  # out[t] = bias + sum_k w[k] in[t - (K-1) + k]
    for k in range(K):
        shift = K - 1 - k
        conv[:, shift:, :] += W["conv_w"][:, 0, k] * xBC[:, :L - shift, :]
    xBC = conv * torch.sigmoid(conv)
    x = xBC[..., :di].reshape(b, L, h, p)
    B = xBC[..., di:di + g * n].reshape(b, L, g, n)
    C = xBC[..., di + g * n:].reshape(b, L, g, n)
    dt = torch.log1p(torch.exp(dt_raw + W["dt_bias"]))
    A, D = -torch.exp(W["A_log"]), W["D"]
    y = torch.zeros(b, L, h, p, dtype=torch.float64)
    final = torch.zeros(b, h, p, n, dtype=torch.float64)
    for bi in range(b):
        for k in range(h):
            grp = k // (h // g)
            for t in range(P):  # causal softmax attention, Q = C, K = B, V = x, plus D x
                weights = torch.softmax(B[bi, :t + 1, grp] @ C[bi, t, grp] / math.sqrt(n), dim=0)
                y[bi, t, k] = weights @ x[bi, :t + 1, k] + D[k] * x[bi, t, k]
            S = torch.zeros(p, n, dtype=torch.float64)
            for t in range(L):  # S_t = a_t S_{t-1} + dt_t x_t B_t^T from token 0: the converter's value at P
                S = torch.exp(dt[bi, t, k] * A[k]) * S + dt[bi, t, k] * torch.outer(x[bi, t, k], B[bi, t, grp])
                if t >= P:
                    y[bi, t, k] = S @ C[bi, t, grp] + D[k] * x[bi, t, k]
            final[bi, k] = S
    gate = torch.where((torch.arange(L) >= P)[None, :, None], z * torch.sigmoid(z), torch.ones_like(z))
    v = (y.reshape(b, L, di) * gate).reshape(b, L, g, di // g)
    v = (v / torch.sqrt((v * v).mean(-1, keepdim=True) + cfg.eps)).reshape(b, L, di) * W["norm_w"]
    return v @ W["out_proj"].T, final


def relative_error(out, ref):
    out, ref = out.double().cpu(), ref.double().cpu()
    return float((out - ref).abs().max() / ref.abs().max())


def self_check(dtype_name, device="cuda"):
    """Composed layer vs naive_layer on a tiny shape; returns {P: (output error, state error)}."""
    cfg = LayerConfig(d_model=128, expand=2, headdim=32, d_state=32, ngroups=2, chunk_size=64)
    b, L = 2, 160
    dtype = DTYPES[dtype_name]
    W = make_weights(cfg, dtype, device, seed=1)
    u = torch.randn(b, L, cfg.d_model, generator=torch.Generator().manual_seed(2)).to(device=device, dtype=dtype)
    errors = {}
    with torch.no_grad():
        for P in (0, 45, 100, L):  # P need not be a multiple of the chunk
            out, state = layer_forward(u, W, cfg, P)
            ref, ref_state = naive_layer(u.cpu(), {k: v.cpu() for k, v in W.items()}, cfg, P)
            errors[P] = (relative_error(out, ref), relative_error(state, ref_state))
    return errors


def check_report(dtype_name):
    """self_check as a JSON-able dict. The output error must be under the tolerance; the final
    state's too in fp32 (in bf16 the state is reported: its inputs are rounded to bf16 per stage)."""
    errors = self_check(dtype_name)
    worst = max(out for out, _ in errors.values())
    worst_state = max(state for _, state in errors.values())
    tolerance = SELF_CHECK_TOLERANCE[dtype_name]
    ok = worst < tolerance and (dtype_name != "fp32" or worst_state < tolerance)
    return {"dtype": dtype_name, "errors": {str(k): {"output": o, "state": st} for k, (o, st) in errors.items()},
            "worst": worst, "worst_state": worst_state, "tolerance": tolerance, "ok": ok}


def run_self_check_child(dtype_name):
    """--self-check-only: print one JSON line with the errors; exit 1 if over the tolerance."""
    if dtype_name == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel([SDPBackend.MATH]):
            report = check_report(dtype_name)
    else:
        report = check_report(dtype_name)
    print("SELF_CHECK " + json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


def self_check_in_child(dtype_name):
    """Runs the check in a fresh process (TRITON_F32_DEFAULT must be set before Triton compiles)."""
    env = dict(os.environ, TRITON_F32_DEFAULT="ieee")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--self-check-only", dtype_name],
                          env=env, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("SELF_CHECK "):
            return json.loads(line[len("SELF_CHECK "):])
    return {"dtype": dtype_name, "ok": False, "error": (proc.stdout + proc.stderr)[-2000:]}


# --- timing ---------------------------------------------------------------------------------------

def layer_flops(b, L, P, cfg):
    h, p, n, g = cfg.nheads, cfg.headdim, cfg.d_state, cfg.ngroups
    projections = 2 * b * L * cfg.d_model * (cfg.d_in_proj + cfg.d_inner)
    attention = 2 * b * (P * P / 2) * (g * n + h * p)
    converter = 2 * b * h * P * n * p
    scan = b * h * (L - P) * (2 * cfg.chunk_size * (n + p) + 4 * n * p)
    return projections + attention + converter + scan


def kernels_of(fn):
    """Names of the CUDA kernels one call launches."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name[:80] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})


def eager_and_graph(fn, label, results):
    """[(0, eager ms), (1, graph ms)]: medians of fn called as is and of its CUDA-graph replay
    (captured after a warm-up on a side stream); a refused capture keeps the eager figure."""
    for _ in range(2):  # Triton autotuning, cuDNN plans
        fn()
    timings = [(0, median_ms(fn))]
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        timings.append((1, median_ms(graph.replay)))
        del graph
    except RuntimeError as e:
        results.context["errors"].append(f"graph capture {label}: {str(e).splitlines()[0][:200]}")
    return timings


def layer_shape(results, batch, L, g, transpoints, dtype_name="bf16"):
    """One (b, L, g): every TransPoint, eager then graph."""
    cfg = LayerConfig(ngroups=g)
    dtype = DTYPES[dtype_name]
    W = make_weights(cfg, dtype, "cuda", seed=g)
    u = torch.randn(batch, L, cfg.d_model, device="cuda", dtype=dtype)
    shape_key = f"{dtype_name}/b:{batch}/L:{L}/g:{g}"
    results.context.setdefault("layer_kernels", {})[shape_key] = kernels_of(lambda: layer_forward(u, W, cfg, L // 2))
    extra = {"d_model": cfg.d_model, "chunk": cfg.chunk_size}
    if dtype_name == "fp32":
        extra["dot_precision"] = "cuBLAS and cuDNN fp32 (TF32 off), SDPA mem-efficient, Triton SSD tf32"
    for P in transpoints:
        for flag, ms in eager_and_graph(lambda: layer_forward(u, W, cfg, P), f"{shape_key} P={P}", results):
            name = bench_name("layer", "torch_layer", dtype_name, b=batch, L=L, h=cfg.nheads, p=cfg.headdim,
                              n=cfg.d_state, g=g, P=P, graph=flag)
            results.add(make_record(name, ms, flops=layer_flops(batch, L, P, cfg), tokens=batch * L,
                                    ceiling=CEILING_TFLOPS[dtype_name], P_fraction=P / L, **extra))
        torch.cuda.empty_cache()


def triton_converter(x, B, dt, A, chunk_size=CHUNK):
    """The converter as mamba_ssm computes a final state: its chunk cumsum, chunk states and state
    passing (the first half of mamba_chunk_scan_combined), float32 state (b, h, p, n)."""
    b, P, h, p = x.shape
    dA_cumsum, dt_chunks = _chunk_cumsum_fwd(dt, A, chunk_size)
    states = _chunk_state_fwd(B, x, dt_chunks, dA_cumsum, states_in_fp32=True)
    _, final = _state_passing_fwd(states.flatten(-2), dA_cumsum[:, :, :, -1], chunk_size=chunk_size)
    return final.view(b, h, p, -1)


def converter_case(results, P, dtype_name, tokens=65536, h=32, p=64, n=128, g=1):
    """The Memory Converter alone over a prefix of P tokens (bench/cuda/converter.cu's shapes):
    the einsum (torch_einsum) and mamba_ssm's chunk states + state passing (triton_ssd_state)."""
    dtype, b = DTYPES[dtype_name], tokens // P
    xbc = torch.empty(b, P, h * p + 2 * g * n, device="cuda", dtype=dtype).uniform_(-1, 1)
    x = xbc[..., :h * p].view(b, P, h, p)
    B = xbc[..., h * p:h * p + g * n].view(b, P, g, n)
    dt = torch.empty(b, P, h, device="cuda").uniform_(1e-3, 0.1)
    A = -torch.empty(h, device="cuda").uniform_(1.0, 16.0)
    flops = 2 * b * h * P * n * p
    nbytes = b * P * (h * p + g * n) * xbc.element_size() + b * P * h * 4 + 2 * b * h * p * n * 4
    ceiling = CEILING_TFLOPS["tf32" if dtype_name == "fp32" else dtype_name]
    impls = {"torch_einsum": lambda: memory_converter(x, B, dt, A),
             "triton_ssd_state": lambda: triton_converter(x, B, dt, A)}
    ref = impls["torch_einsum"]()  # the two must agree: a guard on the use of mamba_ssm's internals
    agreement = float((impls["triton_ssd_state"]() - ref).abs().max() / ref.abs().max())
    del ref
    for impl, fn in impls.items():
        for flag, ms in eager_and_graph(fn, f"converter {impl} {dtype_name} P={P}", results):
            name = bench_name("converter", impl, dtype_name, b=b, h=h, p=p, n=n, g=g, P=P, graph=flag)
            results.add(make_record(name, ms, flops=flops, nbytes=nbytes, tokens=b * P,
                                    ceiling=CEILING_TFLOPS[dtype_name] if impl == "torch_einsum" else ceiling,
                                    relative_difference_einsum_triton=agreement))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the records here (rewritten after every shape)")
    ap.add_argument("--quick", action="store_true",
                    help="8 x 4096, g = 1, bf16; the converter at P = 4096; the bf16 self-check only")
    ap.add_argument("--budget", type=float, default=170.0,
                    help="seconds from the start (self-checks included); shapes left then are skipped")
    ap.add_argument("--skip-self-check", action="store_true")
    ap.add_argument("--only", metavar="REGEX",
                    help="run only the cases whose label matches, e.g. 'L=16384|converter' (labels as printed "
                         "when skipped: 'bf16 b=8 L=4096 g=1', 'converter fp32 P=512')")
    ap.add_argument("--self-check-only", choices=sorted(DTYPES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.self_check_only:
        sys.exit(run_self_check_child(args.self_check_only))
    deadline = time.monotonic() + args.budget
    torch.manual_seed(0)
    context = base_context("bench/peers/layer_torch.py", args, cudnn=True)
    context["timing"] = ("triton.testing.do_bench median, L2 flushed before each call, >= ~5 timed calls; "
                         "graph:1 = the whole forward captured in a torch.cuda.CUDAGraph and replayed")
    context["composition"] = ("F.linear in_proj; F.conv1d depthwise causal + SiLU; SDPA(C, B repeated per head, x) "
                              "+ D x on t < P, no z gate; einsum converter; mamba_chunk_scan_combined on t >= P "
                              "from the converted state; rmsnorm_fn(group_size=d_inner/g, norm_before_gate=False), "
                              "z only on t >= P; F.linear out_proj")
    results = Results(args.json, context)
    print(f"{context['device']}  torch {torch.__version__}  triton {triton.__version__}", flush=True)

    if not args.skip_self_check:
        checks = [("bf16", lambda: check_report("bf16"))]
        if not args.quick:
            checks.append(("fp32", lambda: self_check_in_child("fp32")))
        context["self_check"] = {}
        for dtype_name, check in checks:
            res = check()
            context["self_check"][dtype_name] = res
            if "worst" in res:
                print(f"self-check {dtype_name}: relative error of the output {res['worst']:.2e}, of the final "
                      f"state {res['worst_state']:.2e} (tolerance {res['tolerance']:.0e}); per P {res['errors']}",
                      flush=True)
            else:
                print(f"self-check {dtype_name}: no result: {res.get('error', '')}", flush=True)
            if not res.get("ok"):
                results.save()
                sys.exit(f"self-check {dtype_name} FAILED: the composed layer does not compute SPEC's function")

    cases = []  # in order of priority: the time budget cuts from the end
    for g in ([1] if args.quick else GROUPS):
        for batch, L in (SHAPES[:1] if args.quick else SHAPES):
            points = [0, L // 8, L // 4, L // 2, L]
            cases.append((f"bf16 b={batch} L={L} g={g}", lambda batch=batch, L=L, g=g, points=points:
                          layer_shape(results, batch, L, g, points)))
    for P in ([4096] if args.quick else CONVERTER_P):
        cases.append((f"converter bf16 P={P}", lambda P=P: converter_case(results, P, "bf16")))
    if not args.quick:
        batch, L = SHAPES[0]
        cases.append((f"fp32 b={batch} L={L} g=1", lambda: layer_shape(
            results, batch, L, 1, [0, L // 8, L // 4, L // 2, L], "fp32")))
        for P in CONVERTER_P:
            cases.append((f"converter fp32 P={P}", lambda P=P: converter_case(results, P, "fp32")))
    if args.only:
        cases = [(label, fn) for label, fn in cases if re.search(args.only, label)]
    run_cases(cases, deadline - time.monotonic(), results)  # the budget counts from the start
    print(f"{len(results.records)} records; skipped {len(context['skipped'])}; errors {len(context['errors'])}")


if __name__ == "__main__":
    main()
