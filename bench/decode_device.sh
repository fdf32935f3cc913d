#!/usr/bin/env bash
# One device call for issue 12's decoding step and chunk_state barrier items (branch h12-decode):
# builds only what it needs, runs the decode tests, the sanitizers, the decode_ssm benchmark (this
# kernel and the one before it, timed the same way) and the peer, and leaves the logs under $OUT.
#
#   bash bench/decode_device.sh            (repository root = a copy of this worktree; about 5 minutes)
#   PART=attention bash bench/decode_device.sh
#       the attention side instead (issue 12's flash-decoding step, branch h-fdec): its tests and the
#       session / mixer decoding tests, memcheck on its cases, the decode_attention benchmarks of
#       bench/cuda/decode.cu and decode_peers.py --attention (SDPA with q length 1 over the same
#       caches, flash_attn_with_kvcache where importable); no old kernel, no mamba_ssm needed.
#
# Needs: nvcc (CUDA 13.0), .deps/usr (Google Benchmark, doctest, Eigen, nlohmann-json), and for the
# peer .peers/mamba_ssm (bench/peers/ssd_triton.py says how it is made; without it the peer step
# says so and is skipped). The old kernel is read from git (commit OLD, default 4b0e545, main before
# this branch), or from .devtmp/old_decode_scan.cuh; without either the old benchmark is skipped.
#
# Order: build, tests, benchmarks (ours new, ours old, peer), racecheck, memcheck; every step is cut
# at BUDGET (default 560 s) from the start.
# Logs under $OUT: build_*.log, tests.log (the decoding, scan, converter and session cases),
# racecheck.log, memcheck.log, bench_new.json / .log, bench_old.json / .log, peer.json /
# .log, summary.txt (one line per step: rc and seconds).
set -u
OUT=${OUT:-out}
OLD=${OLD:-4b0e545}
PART=${PART:-ssm}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
START=$(date +%s)
DEADLINE=$((START + ${BUDGET:-560}))  # the device tool stops a command at 600 s
step() {  # step <name> <timeout s> <command...>: runs it (cut at the deadline), logs rc and time
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    [ $left -lt $limit ] && limit=$left
    if [ $limit -lt 5 ]; then echo "$name skipped: out of time" | tee -a "$SUMMARY"; return 124; fi
    local t0=$(date +%s)
    timeout "$limit" "$@"
    local rc=$?
    echo "$name rc=$rc $(($(date +%s) - t0))s" | tee -a "$SUMMARY"
    return $rc
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader >"$OUT/gpu.txt" 2>&1
nvcc --version | tail -1 >>"$OUT/gpu.txt"
git rev-parse HEAD >>"$OUT/gpu.txt" 2>/dev/null

NV="nvcc -std=c++20 --expt-relaxed-constexpr -arch=sm_90 -O3 -lineinfo -Xcudafe=--diag_suppress=esa_on_defaulted_function_ignored
    -isystem .deps/usr/include -isystem .deps/usr/include/eigen3 -DTRANSMAMBA_HAS_CUDA=1"
B=/tmp/decode_build
rm -rf "$B" && mkdir -p "$B/old/include/transmamba/backend/cuda"
HAVE_OLD=0
OLD_HEADER=$B/old/include/transmamba/backend/cuda/decode_scan.cuh
if [ "$PART" = attention ]; then
    :  # the flash-decoding kernel has no old program to compare with here
elif git show "$OLD:include/transmamba/backend/cuda/decode_scan.cuh" >"$OLD_HEADER" 2>/dev/null; then
    HAVE_OLD=1
elif [ -f .devtmp/old_decode_scan.cuh ]; then  # a copy made beside the checkout (untracked)
    cp .devtmp/old_decode_scan.cuh "$OLD_HEADER" && HAVE_OLD=1
fi

# The old header has no run_with (the benchmark names the kernel's shape through it): a shim that
# ignores the shape, so the old program builds from the same benchmark source.
if [ $HAVE_OLD = 1 ]; then
    python3 - "$OLD_HEADER" <<'EOF' || HAVE_OLD=0
import sys
path = sys.argv[1]
s = open(path).read().rstrip()
tail = "};\n\n}  // namespace transmamba"
assert s.endswith(tail), "unexpected end of the old decode_scan.cuh"
shim = ("    template <class T>\n"
        "    static void run_with(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in,\n"
        "                         tensor_view<float, 4> y, tensor_view<float, 4> state, int) {\n"
        "        run<T>(ctx, cfg, in, y, state);\n"
        "    }\n")
i = s.rfind(tail)
open(path, "w").write(s[:i] + shim + s[i:] + "\n")
EOF
fi

# ---- build: every translation unit in parallel -----------------------------------------------------
t0=$(date +%s)
TESTS="main_cuda.cpp cuda/test_scan_cuda.cu cuda/test_session_cuda.cu cuda/test_mixer_cuda.cu cuda/test_streams_cuda.cu"
[ "$PART" = attention ] && TESTS="main_cuda.cpp cuda/test_decode_attention_cuda.cu cuda/test_session_cuda.cu cuda/test_mixer_cuda.cu cuda/test_streams_cuda.cu"
pids=()
for src in $TESTS; do
    obj=$B/$(basename "$src").o
    ( $NV -Iinclude -Itests -x cu -c "tests/$src" -o "$obj" >"$OUT/build_$(basename "$src").log" 2>&1 ) &
    pids+=($!)
done
( $NV -Iinclude -Ibench bench/cuda/decode.cu -o "$B/bench_new" -L.deps/usr/lib/x86_64-linux-gnu -lbenchmark \
      -lcublas -lcublasLt -lpthread >"$OUT/build_bench_new.log" 2>&1 ) &
pids+=($!)
if [ $HAVE_OLD = 1 ]; then
    ( $NV -I"$B/old/include" -Iinclude -Ibench bench/cuda/decode.cu -o "$B/bench_old" -L.deps/usr/lib/x86_64-linux-gnu \
          -lbenchmark -lcublas -lcublasLt -lpthread >"$OUT/build_bench_old.log" 2>&1 ) &
    pids+=($!)
fi
build_rc=0
for pid in "${pids[@]}"; do wait "$pid" || build_rc=1; done
objs=""
for src in $TESTS; do objs="$objs $B/$(basename "$src").o"; done
$NV $objs -o "$B/tests" -lcublas -lcublasLt >"$OUT/build_link.log" 2>&1 || build_rc=1
echo "build rc=$build_rc $(($(date +%s) - t0))s (old kernel from $OLD: $HAVE_OLD)" | tee -a "$SUMMARY"
[ $build_rc = 0 ] || grep -h -B2 -A6 "error" "$OUT"/build_*.log | head -60

# ---- the attention side (PART=attention): tests, memcheck, ours, the peer; then the table -------
if [ "$PART" = attention ]; then
    if [ -x "$B/tests" ]; then
        step tests 90 "$B/tests" -tc='decode attention cuda*,cuda session*,cuda decoding*' >"$OUT/tests.log" 2>&1
        grep -E "^\[doctest\] (test cases|assertions)|ERROR|^decode attention" "$OUT/tests.log" | head -60
        step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 3 "$B/tests" -tc='decode attention cuda*' \
            >"$OUT/memcheck.log" 2>&1
        grep -E "ERROR SUMMARY|test cases" "$OUT/memcheck.log"
    fi
    if [ -x "$B/bench_new" ]; then
        step bench 80 "$B/bench_new" --benchmark_filter='^decode_attention/' --benchmark_out="$OUT/bench_attention.json" \
            --benchmark_out_format=json >"$OUT/bench_attention.log" 2>&1
    fi
    PYTHONPATH=$PWD/bench/peers step peer 90 python3 bench/peers/decode_peers.py --attention --budget 70 \
        --json "$OUT/peer_attention.json" >"$OUT/peer_attention.log" 2>&1
    python3 - "$OUT" <<'EOF' | tee "$OUT/table.txt"
import json, os, re, sys
out = sys.argv[1]
rows = {}
def load(path, impl_of):
    if os.path.exists(path):
        for b in json.load(open(path))["benchmarks"]:
            if "median_ms" in b:
                key = re.sub(r"^decode_attention/[a-z_]+/", "", b["name"].split("/iterations:")[0])
                rows.setdefault(key, {})[impl_of(b)] = (b["median_ms"] * 1e3, b.get("GB_per_s", 0) / 4300)
load(os.path.join(out, "bench_attention.json"), lambda b: "ours")
load(os.path.join(out, "peer_attention.json"), lambda b: b["name"].split("/")[1])
cols = ["ours", "sdpa_kvcache", "flash_kvcache"]
print(f"{'decode_attention (us, fraction of 4.3 TB/s)':62s}" + "".join(f"{c:>22s}" for c in cols) + f"{'sdpa/ours':>10s}")
def order(k):
    num = lambda key: int(m.group(1)) if (m := re.search(key + r":(\d+)", k)) else 0
    return ("graph:1" in k, "p:128" in k, num("g"), num("cache"), num("b"))
for key in sorted(rows, key=order):
    r = rows[key]
    cells = "".join(f"{r[c][0]:14.1f} ({r[c][1]:4.2f})" if c in r else f"{'-':>22s}" for c in cols)
    ratio = f"{r['sdpa_kvcache'][0] / r['ours'][0]:10.2f}" if "ours" in r and "sdpa_kvcache" in r else ""
    print(f"{key:62s}{cells}{ratio}")
EOF
    cat "$SUMMARY"
    exit 0
fi

# ---- tests (the decoding step's cases, old and new, and the scan files' others) -----------------
DECODE='cuda decode_scan*,cuda session*'
if [ -x "$B/tests" ]; then
    step tests 120 "$B/tests" -tc="$DECODE,cuda decoding*,cuda ssd*,cuda chunked_ssd_scan*,cuda exact_converter*,cuda sequential_scan*,cuda warp_mma*" \
        >"$OUT/tests.log" 2>&1
    grep -E "^\[doctest\] (test cases|assertions)|ERROR" "$OUT/tests.log" | head -40
    grep -E "^decode" "$OUT/tests.log" | head -40
fi

# ---- benchmarks: ours (new, old) and the peer, one after the other ------------------------------
FILTER='^decode_ssm/'
if [ -x "$B/bench_new" ]; then
    step bench_new 60 "$B/bench_new" --benchmark_filter="$FILTER" --benchmark_out="$OUT/bench_new.json" \
        --benchmark_out_format=json >"$OUT/bench_new.log" 2>&1
fi
if [ -x "$B/bench_old" ]; then
    step bench_old 60 "$B/bench_old" --benchmark_filter='^decode_ssm/transmamba(_call)?/' --benchmark_out="$OUT/bench_old.json" \
        --benchmark_out_format=json >"$OUT/bench_old.log" 2>&1
fi
if [ -d .peers/mamba_ssm ]; then
    PYTHONPATH=$PWD/.peers:$PWD/bench/peers step peer 100 python3 bench/peers/decode_peers.py --ssm-only --budget 70 \
        --json "$OUT/peer.json" >"$OUT/peer.log" 2>&1
else
    echo "peer: .peers/mamba_ssm is missing here (carry .peers); mamba_ssm's selective_state_update not run" | tee -a "$SUMMARY"
fi

# ---- sanitizers: the decoding kernels, and the scan's sanitizer subset (among them the float
# chunk_state blocks that walk several tiles through the cp.async stages, without the old barriers)
if [ -x "$B/tests" ]; then
    step racecheck 150 compute-sanitizer --tool racecheck --error-exitcode 3 "$B/tests" -tc="$DECODE,*sanitizer*" \
        >"$OUT/racecheck.log" 2>&1
    grep -E "RACECHECK SUMMARY|test cases|several per block" "$OUT/racecheck.log"
    grep -m 20 -E "Race reported|Error:|Warning:" "$OUT/racecheck.log"
    step memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$B/tests" -tc="$DECODE,*sanitizer*" \
        >"$OUT/memcheck.log" 2>&1
    grep -E "ERROR SUMMARY|test cases" "$OUT/memcheck.log"
fi

# ---- the figures side by side: median_ms per name, in us ---------------------------------------------
python3 - "$OUT" <<'EOF' | tee "$OUT/table.txt"
import json, os, re, sys
out = sys.argv[1]
rows = {}
def put(name, impl, us):
    key = re.sub(r"/(transmamba\w*|ssu)/", "/*/", name.split("/iterations:")[0])
    rows.setdefault(key, {})[impl] = us
for tag in ("new", "old"):
    path = os.path.join(out, f"bench_{tag}.json")
    if os.path.exists(path):
        for b in json.load(open(path))["benchmarks"]:
            if "median_ms" in b:
                impl = b["name"].split("/")[1]
                put(b["name"], f"{tag}:{impl}", b["median_ms"] * 1e3)
path = os.path.join(out, "peer.json")
if os.path.exists(path):
    data = json.load(open(path))
    for r in data["benchmarks"]:
        put(r["name"], "peer:ssu", r["median_ms"] * 1e3)
cols = ["new:transmamba", "old:transmamba", "peer:ssu", "new:transmamba_call", "old:transmamba_call",
        "new:transmamba_r1", "new:transmamba_r2", "new:transmamba_r4"]
print(f"{'decode_ssm (us; b2b = back to back, call = one isolated call)':64s}" + "".join(f"{c:>22s}" for c in cols)
      + f"{'peer/new':>10s}")
for key in sorted(rows, key=lambda k: (int(re.search(r'/g:(\d+)', k).group(1)), 'graph:1' in k, int(re.search(r'/b:(\d+)', k).group(1)))):
    r = rows[key]
    ratio = f"{r['peer:ssu'] / r['new:transmamba']:10.2f}" if "peer:ssu" in r and "new:transmamba" in r else ""
    print(f"{key:64s}" + "".join(f"{r[c]:22.2f}" if c in r else f"{'-':>22s}" for c in cols) + ratio)
EOF
cat "$SUMMARY"
