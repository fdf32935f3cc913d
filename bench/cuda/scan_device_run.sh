#!/usr/bin/env bash
# One call on the GPU machine for the SSD scan: tests, the benchmark, the Triton peer, then
# compute-sanitizer (memcheck, racecheck) on the small subset. Expects build-cuda/ built here (or
# rebuilds it there), .deps/ (doctest, Google Benchmark) and .peers/ (mamba_ssm's Triton ops, see
# bench/peers/ssd_triton.py). Results under $OUT (or ./out).
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
NVCC="nvcc -std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -I include -I tests -I .deps/usr/include"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/summary.txt"

if ! ./build-cuda/test_scan_cuda --version >/dev/null 2>&1 || ! ./build-cuda/bench_scan --help >/dev/null 2>&1; then
    echo "carried binaries do not run here: rebuilding" | tee -a "$OUT/summary.txt"
    mkdir -p build-cuda
    $NVCC -c tests/main_cuda.cpp -o build-cuda/main_cuda.o &
    $NVCC -c tests/cuda/test_scan_cuda.cu -o build-cuda/test_scan_cuda.o &
    $NVCC -c bench/cuda/scan.cu -o build-cuda/bench_scan.o &
    wait
    $NVCC build-cuda/main_cuda.o build-cuda/test_scan_cuda.o -o build-cuda/test_scan_cuda
    $NVCC build-cuda/bench_scan.o -L .deps/usr/lib/x86_64-linux-gnu -lbenchmark -o build-cuda/bench_scan
fi

echo "== tests" | tee -a "$OUT/summary.txt"
timeout 150 ./build-cuda/test_scan_cuda > "$OUT/tests.log" 2>&1
echo "tests rc=$?" | tee -a "$OUT/summary.txt"
grep -E "^(fragments|chunked|sequential|converter)|FAILED|ERROR|test cases" "$OUT/tests.log" | tee -a "$OUT/summary.txt"

echo "== benchmark" | tee -a "$OUT/summary.txt"
timeout 150 ./build-cuda/bench_scan --benchmark_out="$OUT/bench.json" --benchmark_out_format=json \
    --benchmark_counters_tabular=true > "$OUT/bench.txt" 2>&1
echo "bench rc=$?" | tee -a "$OUT/summary.txt"

echo "== triton peer" | tee -a "$OUT/summary.txt"
PYTHONPATH=$PWD/.peers PYTHONUNBUFFERED=1 timeout 200 python3 bench/peers/ssd_triton.py --json "$OUT/peer.json" \
    > "$OUT/peer.txt" 2>&1
echo "peer rc=$?" | tee -a "$OUT/summary.txt"
tail -n 12 "$OUT/peer.txt" | tee -a "$OUT/summary.txt"

python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys, os
out = sys.argv[1]
try:
    ours = {b["name"].split("/iterations")[0].removeprefix("ssd/"): b for b in json.load(open(f"{out}/bench.json"))["benchmarks"]}
except Exception as e:
    print("no benchmark json:", e); ours = {}
try:
    peer = json.load(open(f"{out}/peer.json"))
except Exception as e:
    print("no peer json:", e); peer = {}
print(f"{'shape':30s} {'ours ms':>8s} {'graph':>6s} {'k1/k2/k3 ms':>18s} {'GB/s':>6s} {'TFLOP/s':>7s} {'xfloor':>6s} {'triton eager':>12s} {'graph':>7s} {'graph/graph':>10s} {'eager/eager':>11s}")
for name, b in ours.items():
    key = name.replace("fp32_3xtf32", "fp32").replace("fp32_tf32", "fp32").replace("_chunk128", "")
    p = peer.get(key, {})
    g = p.get("graph_ms")
    ratio = f"{b.get('graph_ms', b['median_ms']) / g:10.2f}" if g else f"{'-':>10s}"
    parts = "/".join(f"{b.get(k, float('nan')):.2f}" for k in ("chunk_state_ms", "state_passing_ms", "chunk_scan_ms"))
    e = p.get("eager_ms")
    eratio = f"{b['median_ms'] / e:11.2f}" if e else f"{'-':>11s}"
    print(f"{name:30s} {b['median_ms']:8.3f} {b.get('graph_ms', float('nan')):6.3f} {parts:>18s} {b['GB_per_s']:6.0f} {b['TFLOP_per_s']:7.1f} {b['x_bytes_floor']:6.2f} "
          f"{e or float('nan'):12.3f} {g or float('nan'):7.3f} {ratio} {eratio}")
EOF

echo "== compute-sanitizer" | tee -a "$OUT/summary.txt"
for tool in memcheck racecheck; do
    timeout 120 compute-sanitizer --tool $tool --error-exitcode 9 ./build-cuda/test_scan_cuda -tc="*sanitizer*,*fragments*" \
        >> "$OUT/sanitizer.log" 2>&1
    echo "$tool rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log" | tail -n 1 | tee -a "$OUT/summary.txt"
done
