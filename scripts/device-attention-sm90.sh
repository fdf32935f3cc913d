#!/bin/bash
# Device steps for the sm90 prefill attention (issue 12), run from the repository root:
#   STEP=build  the attention tests and the attention benchmark for sm_90a (into $BIN)
#   STEP=test   the attention tests (sm90 tile cases first); MEMCHECK=1 / RACECHECK=1 add compute-sanitizer
#               on the bf16 sm90 cases (doctest splits -tc at commas: the filter uses ? for the comma)
#   STEP=bench  the benchmark, bf16 at L = 4096 (every p, n, g)
#   STEP=peer   the SDPA peer at the same shapes (bench/peers/attention_sdpa.py --l4096)
# DEPS = the prefix holding doctest, Eigen and Google Benchmark; logs go to $LOG (default /tmp).
set -o pipefail
DEPS=${DEPS:-/usr}
LOG=${LOG:-/tmp}
BIN=${BIN:-/tmp}
export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
LB=$(command -v stdbuf >/dev/null && echo "stdbuf -oL -eL")
NV="nvcc -std=c++20 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -O2
    -Xcudafe=--diag_suppress=esa_on_defaulted_function_ignored -Iinclude -Itests -Ibench -isystem $DEPS/include
    -isystem $DEPS/include/eigen3 -DTRANSMAMBA_HAS_CUDA=1 -DTRANSMAMBA_CUDA_SM90A=1"
case ${STEP:-build} in
build)
  ( $NV -Xptxas -v tests/main_cuda.cpp tests/cuda/test_attention_cuda.cu -o $BIN/att_tests -lcublas -lcublasLt \
      > $LOG/test_build.log 2>&1; echo "test build rc=$?" >> $LOG/test_build.log ) &
  ( $NV bench/cuda/attention.cu -o $BIN/att_bench -L$DEPS/lib/x86_64-linux-gnu -lbenchmark -lcublas -lcublasLt \
      -lpthread > $LOG/bench_build.log 2>&1; echo "bench build rc=$?" >> $LOG/bench_build.log ) &
  wait
  for f in test_build bench_build; do tail -1 $LOG/$f.log; grep -E "error|warning" $LOG/$f.log | head -10; done
  ;;
test)
  timeout 60 $LB $BIN/att_tests -tc="*tiles of the sm90*" > $LOG/tests_sm90.log 2>&1; rc=$?; echo "sm90 cases rc=$rc"
  grep -E "attention cuda|worst|^  [ .0-9-]+$|test cases|ERROR|error" $LOG/tests_sm90.log | head -70
  [ $rc = 124 ] && { echo "the sm90 cases hung"; exit 1; }
  [ -n "$SM90_ONLY" ] && exit 0
  timeout 120 $LB $BIN/att_tests -tc="attention cuda*" > $LOG/tests_all.log 2>&1; echo "prefill attention tests rc=$?"
  grep -E "test cases|assertions" $LOG/tests_all.log
  grep -E "\(sm90\)" $LOG/tests_all.log | sed -E 's/.*rel err ([0-9.e+-]+).*/\1/' | sort -g | tail -1 | sed 's/^/largest sm90 rel err: /'
  if [ -n "$RACECHECK" ]; then
    timeout 120 compute-sanitizer --tool racecheck --error-exitcode 3 $BIN/att_tests -tc="*bf16?*tiles of the sm90*" \
      > $LOG/racecheck.log 2>&1; echo "racecheck rc=$?"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|test cases" $LOG/racecheck.log
  fi
  if [ -n "$MEMCHECK" ]; then
    timeout 60 compute-sanitizer --tool memcheck --error-exitcode 3 $BIN/att_tests -tc="*bf16?*tiles of the sm90*" \
      > $LOG/memcheck.log 2>&1; echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|test cases" $LOG/memcheck.log
  fi
  ;;
bench)
  timeout 100 $BIN/att_bench --benchmark_filter='bf16/.*L:4096' --benchmark_out=$LOG/ours.json \
    --benchmark_out_format=json > $LOG/ours.log 2>&1; echo "bench rc=$?"
  python3 - "$LOG/ours.json" <<'PY'
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    print(f'{b["name"]:58s} {b["real_time"]:7.3f} {b.get("time_unit","")} exec {b.get("exec_TFLOP_per_s",0):6.1f} '
          f'TF {b.get("TFLOP_per_s",0):6.1f} vw {b.get("value_width",0):.0f} sm90 {b.get("sm90",0):.0f}')
PY
  ;;
peer)
  (cd bench/peers && PYTHONUNBUFFERED=1 timeout 120 python3 attention_sdpa.py --l4096 --budget 60 --json $LOG/sdpa.json \
     > $LOG/sdpa.log 2>&1; echo "peer rc=$?")
  grep -E "sdpa_kernel/|fa2/|error" $LOG/sdpa.log | grep -E "g:1/|g:8/|g:32/|fa2|error" | awk '{print $1, $2, $3}' | head -30
  ;;
esac
