#!/usr/bin/env python3
"""Makes the checkpoint fixtures under tests/data/ (run once, on a machine with torch and transformers 5.x):

    python3 tests/data/make_fixtures.py OUT_DIR [CPP_CHECKPOINTS_DIR]

and copy OUT_DIR/* into tests/data/. Everything is seeded: the same versions give the same files.

For each case below it builds a tiny random transformers Mamba2ForCausalLM (2 layers, hidden 64,
head_dim 16, state 16, vocab 96, chunk 8), saves it with save_pretrained (config.json +
model.safetensors, as a user's checkpoint would be) and writes OUT_DIR/<case>/expected.safetensors:

    input_ids              (2, 12) I64
    logits.transformers    (2, 12, 96) F32  transformers' own forward in float32 on the CPU
    logits.ref.<schedule>  (2, 12, 96) F64  the float64 re-implementation of SPEC.md below, at the
                                             TransPoint schedule <schedule> (one P per layer)
    __metadata__           "schedules" (JSON: name -> [P per layer]) and the differences measured here

About n_groups > 1: transformers' torch path (the one it takes when mamba_ssm's kernels are not
installed) normalizes the gated RMSNorm over all of d_inner, while SPEC.md section 3 follows mamba_ssm
and normalizes each of the n_groups groups of d_inner / n_groups channels. transformers' logits are
therefore a reference for TransPoint 0 only when n_groups == 1; the float64 reference follows SPEC and
is the reference for every case and every schedule. The script measures which norm transformers used
(metadata "transformers_norm") and how far its float64 forward is from the reference at P = 0 (about
1e-7 even for n_groups == 1, most likely because transformers computes A = -exp(A_log.float()) in
float32 whatever the model's precision).

It also writes OUT_DIR/dtypes.safetensors: the same float32 values converted by torch to F16, BF16
and back, and float64 values converted to float32, so that the C++ conversions are checked against
torch's.

With CPP_CHECKPOINTS_DIR (checkpoints written by transmamba's save_checkpoint, each with an
input_ids.safetensors), it loads each with transformers and writes OUT_DIR/cpp_<name>.safetensors
with transformers' float64 logits and the reference's at P = 0: the check that transformers reads
what transmamba writes. (Not kept in tests/data.)
"""
import json
import math
import os
import sys
import traceback

import torch
from safetensors.torch import load_file, save_file
from transformers import Mamba2Config, Mamba2ForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

BATCH, SEQLEN = 2, 12
SIZES = dict(vocab_size=96, hidden_size=64, state_size=16, num_heads=8, head_dim=16, expand=2, conv_kernel=4,
             chunk_size=8, num_hidden_layers=2, layer_norm_epsilon=1e-5)
CASES = [
    dict(name="mamba2_g1_tied", n_groups=1, tie=True, dtype=torch.float32, seed=1, transmamba=None),
    # A TransMamba checkpoint: the transmamba object is added to the config.json transformers wrote.
    dict(name="mamba2_g2_untied", n_groups=2, tie=False, dtype=torch.float32, seed=2,
         transmamba={"version": 1, "kind": "per_layer", "transpoints": [9, 3], "attention": "paper"}),
    dict(name="mamba2_g1_untied_bf16", n_groups=1, tie=False, dtype=torch.bfloat16, seed=3, transmamba=None),
]
# One TransPoint per layer; 12 = SEQLEN (all attention), 5 is not a multiple of the chunk size 8.
SCHEDULES = {"p0": [0, 0], "p5": [5, 5], "p12": [12, 12], "mixed": [9, 3]}


def from_pretrained(path, dtype):
    try:
        return Mamba2ForCausalLM.from_pretrained(path, dtype=dtype).eval()
    except TypeError:
        return Mamba2ForCausalLM.from_pretrained(path, torch_dtype=dtype).eval()


def randomize(model, seed):
    """Weights in the ranges of a trained model (as transmamba's randomize draws them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied head is listed once, as the embeddings
            u = torch.rand(p.shape, generator=gen, dtype=torch.float64)
            if name.endswith("embeddings.weight"):
                v = 2 * u - 1
            elif name.endswith("conv1d.weight"):
                v = u - 0.5
            elif name.endswith("conv1d.bias"):
                v = 0.2 * (u - 0.5)
            elif name.endswith("dt_bias"):
                dt = torch.exp(math.log(1e-3) + u * (math.log(1e-1) - math.log(1e-3)))
                v = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
            elif name.endswith("A_log"):
                v = torch.log(1 + 15 * u)
            elif name.endswith(".D") or "norm" in name:
                v = 0.5 + u
            else:  # in_proj, out_proj, lm_head
                v = (2 * u - 1) / math.sqrt(p.shape[-1])
            p.copy_(v.to(p.dtype))


# ---------------------------------------------------------------------------------------------
# SPEC.md in float64, written plainly (loops over batch, head and token).
# ---------------------------------------------------------------------------------------------

def softplus(x):
    return torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))


def silu(x):
    return x * torch.sigmoid(x)


def rmsnorm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def mixer(u, W, c, P, grouped):
    b, L, d = u.shape
    di, h, p, n, g, K = c["expand"] * d, c["num_heads"], c["head_dim"], c["state_size"], c["n_groups"], c["conv_kernel"]
    eps, (dt_lo, dt_hi) = c["layer_norm_epsilon"], c["time_step_limit"]
    P = min(P, L)
    zxbcdt = u @ W["in_proj.weight"].T
    z, xBC, dt_raw = zxbcdt[..., :di], zxbcdt[..., di:2 * di + 2 * g * n], zxbcdt[..., 2 * di + 2 * g * n:]
    cw = W["conv1d.weight"][:, 0, :]  # (conv_dim, K): out[t] = bias + sum_k w[k] in[t - (K-1) + k]
    padded = torch.nn.functional.pad(xBC, (0, 0, K - 1, 0))
    conv = W["conv1d.bias"] + sum(cw[:, k] * padded[:, k:k + L, :] for k in range(K))
    xBC = silu(conv)
    x = xBC[..., :di].reshape(b, L, h, p)
    B = xBC[..., di:di + g * n].reshape(b, L, g, n)
    C = xBC[..., di + g * n:].reshape(b, L, g, n)
    dt = softplus(dt_raw + W["dt_bias"]).clamp(dt_lo, dt_hi)
    A, D = -torch.exp(W["A_log"]), W["D"]
    y = torch.zeros(b, L, h, p, dtype=torch.float64)
    for bi in range(b):
        for k in range(h):
            grp = k // (h // g)
            for t in range(P):  # causal softmax attention, Q = C, K = B, V = x, plus D x; no gate
                weights = torch.softmax((B[bi, :t + 1, grp] @ C[bi, t, grp]) / math.sqrt(n), 0)
                y[bi, t, k] = weights @ x[bi, :t + 1, k] + D[k] * x[bi, t, k]
            # Memory Converter: S = sum_{j<P} (prod_{m=j+1}^{P-1} a_m) dt_j x_j B_j^T
            S = torch.zeros(p, n, dtype=torch.float64)
            for j in range(P):
                decay = torch.exp(A[k] * dt[bi, j + 1:P, k].sum())
                S = S + decay * dt[bi, j, k] * torch.outer(x[bi, j, k], B[bi, j, grp])
            for t in range(P, L):  # S_t = a_t S_{t-1} + dt_t x_t B_t^T, y_t = S_t C_t + D x_t
                S = torch.exp(dt[bi, t, k] * A[k]) * S + dt[bi, t, k] * torch.outer(x[bi, t, k], B[bi, t, grp])
                y[bi, t, k] = S @ C[bi, t, grp] + D[k] * x[bi, t, k]
    gated = (torch.arange(L) >= P)[None, :, None]
    v = y.reshape(b, L, di) * torch.where(gated, silu(z), torch.ones_like(z))
    if grouped:  # SPEC / mamba_ssm: per group of d_inner / g channels
        vg = v.reshape(b, L, g, di // g)
        v = (vg / torch.sqrt((vg * vg).mean(-1, keepdim=True) + eps)).reshape(b, L, di)
    else:  # transformers' torch path: over all of d_inner
        v = v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps)
    return (v * W["norm.weight"]) @ W["out_proj.weight"].T


def reference_logits(T, c, ids, points, grouped=True):
    eps = c["layer_norm_epsilon"]
    hidden = T["backbone.embeddings.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        pre = f"backbone.layers.{i}."
        W = {k[len(pre) + len("mixer."):]: v for k, v in T.items() if k.startswith(pre + "mixer.")}
        if "conv1d.bias" not in W:
            W["conv1d.bias"] = torch.zeros(W["conv1d.weight"].shape[0], dtype=torch.float64)
        hidden = hidden + mixer(rmsnorm(hidden, T[pre + "norm.weight"], eps), W, c, points[i], grouped)
    hidden = rmsnorm(hidden, T["backbone.norm_f.weight"], eps)
    head = T["lm_head.weight"] if "lm_head.weight" in T else T["backbone.embeddings.weight"]
    return hidden @ head.T


def relative(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def decode_float_objects(d):
    # transformers 5.x writes non-finite floats as {"__float__": "Infinity"}; 4.x (json.dumps) as the bare
    # token Infinity, which json.load reads by itself.
    if len(d) == 1 and "__float__" in d:
        return float(d["__float__"])
    return d


def read_config(path):
    with open(path) as f:
        c = json.load(f, object_hook=decode_float_objects)
    c.setdefault("time_step_limit", [0.0, float("inf")])
    return c


def make_case(case, out_dir):
    name = case["name"]
    case_dir = os.path.join(out_dir, name)
    torch.manual_seed(case["seed"])
    config = Mamba2Config(n_groups=case["n_groups"], tie_word_embeddings=case["tie"], use_conv_bias=True, use_bias=False,
                          **SIZES)
    model = Mamba2ForCausalLM(config).eval()
    randomize(model, case["seed"])
    if case["tie"]:
        assert model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr(), "head not tied"
    model.to(case["dtype"]).save_pretrained(case_dir)
    tensors = load_file(os.path.join(case_dir, "model.safetensors"))
    print(f"[{name}] saved: {sorted((k, str(v.dtype)) for k, v in tensors.items())}")
    T = {k: v.double() for k, v in tensors.items()}
    c = read_config(os.path.join(case_dir, "config.json"))

    gen = torch.Generator().manual_seed(100 + case["seed"])
    ids = torch.randint(0, SIZES["vocab_size"], (BATCH, SEQLEN), generator=gen, dtype=torch.int64)
    ids[0, 0], ids[1, -1] = 0, SIZES["vocab_size"] - 1  # both ends of the vocabulary

    meta = {"schedules": json.dumps(SCHEDULES), "n_groups": str(case["n_groups"]),
            "note": "logits.ref.* follow SPEC.md (grouped gated RMSNorm); logits.transformers is transformers' "
                    "float32 forward, comparable at P = 0 only when n_groups == 1"}
    with torch.no_grad():
        hf32 = from_pretrained(case_dir, torch.float32)(input_ids=ids, use_cache=False).logits.float()
        hf64 = from_pretrained(case_dir, torch.float64)(input_ids=ids, use_cache=False).logits
        refs = {k: reference_logits(T, c, ids, v) for k, v in SCHEDULES.items()}
        full = reference_logits(T, c, ids, SCHEDULES["p0"], grouped=False)
    grouped_err, full_err = relative(hf64, refs["p0"]), relative(hf64, full)
    meta["transformers_norm"] = "grouped" if grouped_err <= full_err else "full d_inner"
    meta["transformers64_vs_ref_p0"] = f"{grouped_err:.3e}"
    meta["transformers64_vs_full_norm_ref_p0"] = f"{full_err:.3e}"
    meta["transformers32_vs_transformers64"] = f"{relative(hf32, hf64):.3e}"
    for k in SCHEDULES:
        meta[f"ref_{k}_vs_ref_p0"] = f"{relative(refs[k], refs['p0']):.3e}"
    print(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in meta.items() if k not in ("note", "schedules")))
    if case["n_groups"] == 1 and grouped_err > 1e-6:
        print(f"[{name}] WARNING: transformers (float64) differs from the SPEC reference at P = 0 by {grouped_err:.3e}")

    out = {"input_ids": ids, "logits.transformers": hf32.contiguous()}
    out.update({f"logits.ref.{k}": v.contiguous() for k, v in refs.items()})
    save_file(out, os.path.join(case_dir, "expected.safetensors"), metadata=meta)

    if case["transmamba"] is not None:  # after transformers read the file: it keeps the field as is anyway
        path = os.path.join(case_dir, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["transmamba"] = case["transmamba"]
        with open(path, "w") as f:
            f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        try:
            reread = from_pretrained(case_dir, torch.float32)
            print(f"[{name}] transformers reads the config with the transmamba object: "
                  f"{getattr(reread.config, 'transmamba', None)}")
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"[{name}] transformers refuses the transmamba object: {e!r}")


def make_dtypes(out_dir):
    gen = torch.Generator().manual_seed(7)
    edges = [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 65504.0, 65505.0, 65519.0, 65520.0, 65536.0, 1e6, -1e6,
             2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -26, 2.0 ** -14, 1023 * 2.0 ** -24, 1.0 + 2.0 ** -8,
             1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 3.3895314e38, 3.4028235e38, -3.4028235e38,
             1.1754944e-38, 1e-45, float("inf"), float("-inf"), float("nan")]
    rand = torch.randn(2000, generator=gen, dtype=torch.float64) * torch.pow(10.0, torch.rand(2000, generator=gen) * 20 - 10)
    values = torch.cat([torch.tensor(edges, dtype=torch.float64), rand]).float()
    doubles = torch.randn(500, generator=gen, dtype=torch.float64) * torch.pow(10.0, torch.rand(500, generator=gen) * 80 - 40)
    save_file({"f32": values, "f16": values.half(), "bf16": values.bfloat16(), "f16_as_f32": values.half().float(),
               "bf16_as_f32": values.bfloat16().float(), "f64": doubles, "f64_as_f32": doubles.float(),
               "i64": torch.arange(-5, 5, dtype=torch.int64) * (2 ** 40)},
              os.path.join(out_dir, "dtypes.safetensors"), metadata={"format": "pt"})
    print(f"[dtypes] {values.numel()} float32 values, {doubles.numel()} float64 values")


def check_cpp(cpp_dir, out_dir):
    for name in sorted(os.listdir(cpp_dir)):
        path = os.path.join(cpp_dir, name)
        if not os.path.isfile(os.path.join(path, "config.json")):
            continue
        try:
            ids = load_file(os.path.join(path, "input_ids.safetensors"))["input_ids"]
            c = read_config(os.path.join(path, "config.json"))
            T = {k: v.double() for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
            with torch.no_grad():
                hf64 = from_pretrained(path, torch.float64)(input_ids=ids, use_cache=False).logits
                ref = reference_logits(T, c, ids, [0] * c["num_hidden_layers"])
                full = reference_logits(T, c, ids, [0] * c["num_hidden_layers"], grouped=False)
            save_file({"logits.transformers64": hf64.contiguous(), "logits.ref.p0": ref.contiguous()},
                      os.path.join(out_dir, f"cpp_{name}.safetensors"))
            print(f"[cpp {name}] transformers read it; float64 transformers vs reference at P = 0: {relative(hf64, ref):.3e}, "
                  f"vs the full-d_inner-norm reference: {relative(hf64, full):.3e} (n_groups {c['n_groups']})")
        except Exception:  # noqa: BLE001 - report and go on
            print(f"[cpp {name}] FAILED:\n{traceback.format_exc()}")


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for case in CASES:
        try:
            make_case(case, out_dir)
        except Exception:  # noqa: BLE001 - one broken case must not cost the others
            print(f"[{case['name']}] FAILED:\n{traceback.format_exc()}")
    make_dtypes(out_dir)
    if len(sys.argv) > 2:
        check_cpp(sys.argv[2], out_dir)


if __name__ == "__main__":
    main()
