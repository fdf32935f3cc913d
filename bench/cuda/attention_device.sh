#!/usr/bin/env bash
# One device call for the CUDA attention kernel: tests, compute-sanitizer (memcheck + racecheck on
# the small fp16 cases), the benchmark and the SDPA peer, logs under $OUT (or ./out).
# The binaries are built beforehand into build-attn/ (carried with the call; rebuilt here when
# missing or not runnable), the Debian packages (doctest, benchmark) come from .deps/.
#   nvcc -std=c++20 -arch=sm_90 --expt-relaxed-constexpr -O2 -I include -I tests -I .deps/usr/include \
#        tests/cuda/test_attention_cuda.cu tests/main_cuda.cpp -o build-attn/test_attention_cuda
#   nvcc -std=c++20 -arch=sm_90 --expt-relaxed-constexpr -O3 -I include -I .deps/usr/include \
#        bench/cuda/attention.cu -o build-attn/bench_attention -L .deps/usr/lib/x86_64-linux-gnu -lbenchmark
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
B=build-attn
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
NVCC="nvcc -std=c++20 -arch=sm_90 --expt-relaxed-constexpr -I include -I tests -I .deps/usr/include"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

if ! "$B/test_attention_cuda" --version >/dev/null 2>&1; then
  echo "rebuilding the test"; mkdir -p $B
  $NVCC -O2 tests/cuda/test_attention_cuda.cu tests/main_cuda.cpp -o $B/test_attention_cuda || exit 1
fi
if ! "$B/bench_attention" --help >/dev/null 2>&1; then
  echo "rebuilding the benchmark"
  $NVCC -O3 bench/cuda/attention.cu -o $B/bench_attention -L .deps/usr/lib/x86_64-linux-gnu -lbenchmark || exit 1
fi

echo "== tests"
"$B/test_attention_cuda" 2>&1 | tee "$OUT/test.log"
echo "== compute-sanitizer memcheck (fp16 cases)"
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 "$B/test_attention_cuda" -tc='*fp16*' >"$OUT/sanitizer.log" 2>&1
echo "memcheck rc=$?" | tee -a "$OUT/sanitizer.log"
echo "== compute-sanitizer racecheck (fp16 cases)"
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 3 "$B/test_attention_cuda" -tc='*fp16*' >>"$OUT/sanitizer.log" 2>&1
echo "racecheck rc=$?" | tee -a "$OUT/sanitizer.log"
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Invalid|test cases" "$OUT/sanitizer.log" | head -20
[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
echo "== benchmark"
"$B/bench_attention" --benchmark_out="$OUT/bench.json" --benchmark_out_format=json 2>&1 | tee "$OUT/bench.log" |
  grep -E "median|Benchmark|ERROR"
echo "== SDPA peer"
PYTHONUNBUFFERED=1 timeout 240 python3 bench/peers/attention_sdpa.py --json "$OUT/sdpa.json" 2>&1 | tee "$OUT/sdpa.log" | tail -14
