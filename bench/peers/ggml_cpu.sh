#!/usr/bin/env bash
# The CPU peer of bench/cpu/kernels.cpp: ggml's own operator benchmarks (`test-backend-ops perf`)
# on the CPU backend, float32, for the shapes our CPU benchmarks also measure, written as JSON
# records named by the project's convention, `<component>/ggml/<dtype>/<key>:<value>/...` (keys in
# the order b, L, h, p, n, g, P, cache), so that each lines up with ours:
#
#   SSM_SCAN           scan/ggml/fp32/b/L/h/p/n/g            (n_seq_tokens > 1)
#                      decode_ssm/ggml/fp32/b/h/p/n/g        (one token)
#   SSM_CONV           conv/ggml/fp32/b/L/h/p/n/g            (conv only; 3328 channels = 48 x 64 + 2 x 128,
#   SSM_CONV_BIAS_SILU conv/ggml_bias_silu/fp32/...           else a channels: key); ours is conv + bias + SiLU
#   FLASH_ATTN_EXT     attention/ggml/<K/V type>/b/L/h/p/n/g/cache   (prefill: L queries against cache keys;
#                      decode_attention/ggml/<K/V type>/...          g = K/V heads, h = query heads)
#   FLASH_ATTN_EXT at our shapes (bench/peers/ggml_attention.cpp, causal prefix of P tokens):
#                      attention/ggml/f16/b:1/L:P/h:24/p:64/n:128/g:1/P:P          one head per query head
#                      attention/ggml_grouped/f16/...                              one wide head per group
#
# ggml's figure for one invocation is its mean time per run over the runs it chose; we invoke it
# GGML_REPS times (default 3) and record the median of those means as median_ms, with every mean.
#
# Usage: bench/peers/ggml_cpu.sh [out.json]        (default out/ggml_cpu.json; out/ is ignored)
# Environment:
#   GGML_GIT_DIR   a git directory of ggml-org/ggml (e.g. a mirror) to export HEAD from into .peers/ggml
#                  when .peers/ggml is not there yet; without it the script clones github.com/ggml-org/ggml
#   GGML_REPS      invocations per operator (default 3)
#   GGML_THREADS   CPU threads; test-backend-ops uses every hardware thread, this only goes into the context
#   GGML_ATTENTION_P  the prefixes P for ggml_attention (default "512 2048", as bench_cpu_kernels)
# The source and the build stay in the git-ignored .peers/: never commit them.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
src="$root/.peers/ggml"
build="$src/build-cpu"
out=${1:-"$root/out/ggml_cpu.json"}
reps=${GGML_REPS:-3}
raw="$root/out/ggml_cpu_raw"

if [[ ! -f "$src/CMakeLists.txt" ]]; then
    mkdir -p "$src"
    if [[ -n "${GGML_GIT_DIR:-}" ]]; then
        git --git-dir="$GGML_GIT_DIR" archive HEAD | tar -x -C "$src"
        git --git-dir="$GGML_GIT_DIR" log -1 --format='%H %cI' > "$src/COMMIT"
    else
        git clone --depth 1 https://github.com/ggml-org/ggml "$src.clone"
        git -C "$src.clone" log -1 --format='%H %cI' > "$src.clone/COMMIT"
        rm -rf "$src.clone/.git" && rmdir "$src" && mv "$src.clone" "$src"
    fi
fi

# CPU only, Release, tuned for this machine (GGML_NATIVE adds -march=native).
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF -DGGML_NATIVE=ON \
      -DGGML_BUILD_TESTS=ON -DGGML_BUILD_EXAMPLES=OFF > "$build.configure.log"
cmake --build "$build" --target test-backend-ops -j"$(nproc)"
tbo="$build/bin/test-backend-ops"

# Our attention shapes (causal prefix of P tokens, C and B shared per group): bench/peers/ggml_attention.cpp
# against the ggml just built (its shared libraries, wherever the build put them).
libdirs=$(find "$build" -name 'libggml*.so' -printf '%h\n' | sort -u)
rpath=$(printf -- '-Wl,-rpath,%s ' $libdirs)
linkdirs=$(printf -- '-L%s ' $libdirs)
attn="$build/ggml_attention"
# shellcheck disable=SC2086  # word lists
c++ -std=c++17 -O3 -march=native -I "$src/include" "$root/bench/peers/ggml_attention.cpp" -o "$attn" \
    $linkdirs $rpath -lggml -lggml-base -lggml-cpu
attn_P=${GGML_ATTENTION_P:-"512 2048"}

mkdir -p "$raw" "$(dirname "$out")"
# FLASH_ATTN_EXT's perf list is long (some cases take seconds per run on two cores): keep the
# f16 prefill of PERF.md's table and the f16 decode sweep.
fa_params='kv=10000,nb=512,.*type_K=f16,type_V=f16|nh=8,nr23=\[[14],1\],kv=(4096|8192|16384),nb=1,.*type_K=f16,type_V=f16'
for ((i = 0; i < reps; ++i)); do
    "$tbo" perf -b CPU -o SSM_SCAN > "$raw/SSM_SCAN.$i.txt"
    "$tbo" perf -b CPU -o SSM_CONV > "$raw/SSM_CONV.$i.txt"
    "$tbo" perf -b CPU -o SSM_CONV_BIAS_SILU > "$raw/SSM_CONV_BIAS_SILU.$i.txt"
    "$tbo" perf -b CPU -o FLASH_ATTN_EXT -p "$fa_params" > "$raw/FLASH_ATTN_EXT.$i.txt"
    # shellcheck disable=SC2086
    "$attn" "$(nproc)" $attn_P > "$raw/ATTENTION_SHAPES.$i.txt"
done

python3 - "$raw" "$out" "$src/COMMIT" "$reps" "${GGML_THREADS:-$(nproc)}" <<'PY'
import json, os, platform, re, statistics, sys, datetime

raw, out, commit_file, reps, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ansi = re.compile(r"\x1b\[[0-9;]*m")
line_re = re.compile(r"^\s*(\w+)\((.*)\):\s+(\d+) runs - \s*([0-9.]+) us/run - (.*)$")


def params(text):
    """key=value pairs; values may be bracketed lists holding commas."""
    out, depth, cur = {}, 0, ""
    for ch in text + ",":
        if ch == "," and depth == 0:
            if "=" in cur:
                k, v = cur.split("=", 1)
                out[k.strip()] = v.strip()
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    return out


def ints(v):
    return [int(x) for x in v.strip("[]").split(",")]


def ssm_heads(channels):
    # conv channels = h p + 2 g n; the shapes our benchmarks use
    known = {3328: (48, 64, 128, 1)}
    return known.get(channels)


def name_of(op, p):
    if op == "SSM_SCAN":
        if p.get("K", "1") != "1" or p.get("xbc_overlap", "0") != "0":
            return None
        b, L = int(p["n_seqs"]), int(p["n_seq_tokens"])
        keys = [("b", b)] + ([("L", L)] if L > 1 else []) + [
            ("h", int(p["n_head"])), ("p", int(p["head_dim"])), ("n", int(p["d_state"])), ("g", int(p["n_group"]))]
        return ("scan" if L > 1 else "decode_ssm"), "ggml", "fp32", keys
    if op in ("SSM_CONV", "SSM_CONV_BIAS_SILU"):
        a, w = ints(p["ne_a"]), ints(p["ne_b"])
        width, channels, b = w[0], a[1], a[2]
        L = a[0] - (width - 1)
        if L < 1:
            return None
        keys = [("b", b), ("L", L)]
        hpng = ssm_heads(channels)
        keys += list(zip("hpng", hpng)) if hpng else [("channels", channels)]
        keys += [("width", width)]
        return "conv", "ggml" if op == "SSM_CONV" else "ggml_bias_silu", "fp32", keys
    if op == "FLASH_ATTN_EXT":
        nr = ints(p["nr23"])
        nb, kv, nh = int(p["nb"]), int(p["kv"]), int(p["nh"])
        dtype = p["type_K"] if p["type_K"] == p["type_V"] else p["type_K"] + "-" + p["type_V"]
        keys = [("b", nr[1]), ("L", nb), ("h", nh * nr[0]), ("p", int(p["hsv"])), ("n", int(p["hsk"])), ("g", nh),
                ("cache", kv)]
        return ("attention" if nb > 1 else "decode_attention"), "ggml", dtype, keys
    return None


def flops_of(op, p):
    if op.startswith("FLASH_ATTN_EXT (bench"):  # our count (SPEC section 4): scores once per group, causal half
        P, h, pd, n, g = (int(p[k]) for k in ("P", "h", "p", "n", "g"))
        return 2.0 * (P * P / 2) * (g * n + h * pd)
    if op == "FLASH_ATTN_EXT":  # ggml's own count: matmuls only, no causal half
        nr = ints(p["nr23"])
        return 2.0 * int(p["nh"]) * nr[0] * int(p["nb"]) * (int(p["hsk"]) + int(p["hsv"])) * int(p["kv"]) * nr[1]
    if op == "SSM_SCAN":  # the recurrence's count, as ours: 4 n p per token and head
        return 4.0 * int(p["d_state"]) * int(p["head_dim"]) * int(p["n_head"]) * int(p["n_seq_tokens"]) * int(p["n_seqs"])
    return 0.0


runs = {}
for fname in sorted(os.listdir(raw)):
    for line in open(os.path.join(raw, fname)):
        m = line_re.match(ansi.sub("", line.rstrip()))
        if not m:
            continue
        op, ptext, nruns, us, tail = m.group(1), m.group(2), int(m.group(3)), float(m.group(4)), m.group(5)
        p = params(ptext)
        named = name_of(op, p)
        if named is None:
            continue
        component, impl, dtype, keys = named
        name = "/".join([component, impl, dtype] + [f"{k}:{v}" for k, v in keys])
        r = runs.setdefault(name, {"op": op, "ggml_params": ptext, "means_ms": [], "runs": [], "p": p, "tail": []})
        r["means_ms"].append(us / 1000.0)
        r["runs"].append(nruns)
        r["tail"].append(tail)

# ggml_attention's lines: "<name> <median ms> <runs>", one invocation per file.
shape_re = re.compile(r"^(attention/\S+) ([0-9.]+) (\d+)$")
for fname in sorted(os.listdir(raw)):
    if not fname.startswith("ATTENTION_SHAPES."):
        continue
    for line in open(os.path.join(raw, fname)):
        m = shape_re.match(line.strip())
        if not m:
            continue
        keys = dict(kv.split(":") for kv in m.group(1).split("/")[3:])
        r = runs.setdefault(m.group(1), {"op": "FLASH_ATTN_EXT (bench/peers/ggml_attention.cpp)", "ggml_params": "",
                                         "means_ms": [], "runs": [], "p": keys, "tail": []})
        r["means_ms"].append(float(m.group(2)))
        r["runs"].append(int(m.group(3)))

benchmarks = []
for name, r in runs.items():
    med = statistics.median(r["means_ms"])
    rec = {"name": name, "median_ms": med, "means_ms": r["means_ms"], "ggml_runs": r["runs"], "ggml_op": r["op"],
           "ggml_params": r["ggml_params"]}
    fl = flops_of(r["op"], r["p"])
    if fl > 0:
        rec["GFLOP_per_s"] = fl / (med * 1e-3) * 1e-9
    gbs = [float(x) for t in r["tail"] for x in re.findall(r"([0-9.]+) GB/s", t)]
    if gbs:
        rec["ggml_GB_per_s"] = statistics.median(gbs)
    benchmarks.append(rec)

commit = open(commit_file).read().split() if os.path.exists(commit_file) else ["unknown", ""]
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
doc = {
    "context": {
        "peer": "ggml test-backend-ops perf, CPU backend",
        "ggml_commit": commit[0],
        "ggml_commit_date": commit[1] if len(commit) > 1 else "",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_name": platform.node(),
        "cpu": cpu,
        "num_cpus": os.cpu_count(),
        "threads": threads,
        "build": "Release, GGML_NATIVE=ON (-march=native), GGML_CUDA=OFF",
        "invocations": reps,
        "timing": "median over invocations of ggml's mean time per run",
        "flops": "SSM_SCAN: 4 n p per token and head (the recurrence); FLASH_ATTN_EXT: ggml's matmul count",
    },
    "benchmarks": sorted(benchmarks, key=lambda r: r["name"]),
}
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
for r in doc["benchmarks"]:
    extra = f"  {r['GFLOP_per_s']:.1f} GFLOP/s" if "GFLOP_per_s" in r else ""
    print(f"{r['name']:<90} {r['median_ms']:10.4f} ms{extra}")
print(f"wrote {out}")
PY
