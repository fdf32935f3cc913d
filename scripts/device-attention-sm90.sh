#!/bin/bash
# One device call for the sm90 prefill attention (issue 12): build the attention tests and the
# attention benchmark for sm_90a, run the tests, compute-sanitizer memcheck on the sm90 tile cases,
# then the benchmark beside the SDPA peer (bf16, L = 4096). Run from the repository root with
# DEPS=<prefix holding doctest, Eigen and Google Benchmark>; logs go to $OUT.
set -o pipefail
DEPS=${DEPS:-/usr}
OUT=${OUT:-/tmp/out}
STEP=${STEP:-all}  # all | test
export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
NV="nvcc -std=c++20 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -O2
    -Xcudafe=--diag_suppress=esa_on_defaulted_function_ignored -Iinclude -Itests -Ibench -isystem $DEPS/include
    -isystem $DEPS/include/eigen3 -DTRANSMAMBA_HAS_CUDA=1 -DTRANSMAMBA_CUDA_SM90A=1"
( $NV -Xptxas -v tests/main_cuda.cpp tests/cuda/test_attention_cuda.cu -o /tmp/att_tests -lcublas -lcublasLt \
    > $OUT/test_build.log 2>&1; echo "test build rc=$?" >> $OUT/test_build.log ) &
if [ "$STEP" = all ]; then
  ( $NV bench/cuda/attention.cu -o /tmp/att_bench -L$DEPS/lib/x86_64-linux-gnu -lbenchmark -lcublas -lcublasLt \
      -lpthread > $OUT/bench_build.log 2>&1; echo "bench build rc=$?" >> $OUT/bench_build.log ) &
fi
wait
tail -1 $OUT/test_build.log; grep -E "error" $OUT/test_build.log | head -20
[ "$STEP" = all ] && { tail -1 $OUT/bench_build.log; grep -E "error" $OUT/bench_build.log | head -20; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
echo "== sm90 tile cases"
timeout 60 /tmp/att_tests -tc="*tiles of the sm90*" > $OUT/tests_sm90.log 2>&1; echo "rc=$?"
grep -E "attention cuda|worst|^  [ .0-9-]+$|test cases|ERROR|error" $OUT/tests_sm90.log | head -60
echo "== whole attention test file"
timeout 120 /tmp/att_tests > $OUT/tests_all.log 2>&1; echo "rc=$?"; grep -E "test cases|assertions" $OUT/tests_all.log
grep -E "sm90\)" $OUT/tests_all.log | awk '{print $(NF-3)}' | sort -g | tail -1 | sed 's/^/largest sm90 rel err: /'
echo "== memcheck (sm90 bf16 tiles)"
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/att_tests -tc="*bf16, the tiles of the sm90*" \
  > $OUT/memcheck.log 2>&1; echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|test cases" $OUT/memcheck.log
[ "$STEP" = all ] || exit 0
cuobjdump --dump-sass /tmp/att_bench 2>/dev/null | grep -oE "HGMMA\.[A-Z0-9.]+|UTMALDG[.A-Z0-9]*|USETMAXREG[.A-Z0-9]*" | sort | uniq -c | head
echo "== ours"
timeout 100 /tmp/att_bench --benchmark_filter='bf16/.*L:4096' --benchmark_out=$OUT/ours.json \
  --benchmark_out_format=json > $OUT/ours.log 2>&1; echo "rc=$?"
grep -E "^attention" $OUT/ours.log | sed -E 's/ +bytes_per_second.*//' | awk '{print $1, $2, $3}' | head -20
python3 - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/ours.json"))
for b in d["benchmarks"]:
    print(f'{b["name"]:60s} {b["real_time"]:8.3f} {b.get("time_unit","")} exec {b.get("exec_TFLOP_per_s",0):6.1f} TF {b.get("TFLOP_per_s",0):6.1f} vw {b.get("value_width",0):.0f} sm90 {b.get("sm90",0):.0f}')
PY
echo "== SDPA"
cd bench/peers && PYTHONUNBUFFERED=1 timeout 120 python3 attention_sdpa.py --l4096 --budget 90 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "rc=$?"
grep -E "sdpa_kernel|fa2|sdpa/" $OUT/sdpa.log | head -30
