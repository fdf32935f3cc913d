#!/usr/bin/env bash
# One call on the GPU machine (the `device` tool): configure the `cuda` preset against the Debian
# packages carried in .deps/ (../shared/tools/device-deps.sh), build, run every test (CPU and GPU),
# the CUDA quickstart, and compute-sanitizer memcheck + racecheck on the GPU suite's small cases.
# Logs go to $OUT (or ./out). Usage on the device: bash scripts/device-check.sh
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
B=build/cuda
cmake --preset cuda -DCMAKE_PREFIX_PATH="$PWD/.deps/usr" -DTRANSMAMBA_INSTALL=ON >"$OUT/configure.log" 2>&1 || {
    tail -30 "$OUT/configure.log"; exit 1; }
cmake --build $B -j 16 >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
echo "== ctest (all)"
ctest --test-dir $B --output-on-failure -j 8 >"$OUT/ctest.log" 2>&1
echo "ctest rc=$?"; tail -6 "$OUT/ctest.log"
echo "== CUDA suite, verbose"
$B/tests/transmamba_cuda_tests >"$OUT/cuda_tests.log" 2>&1; echo "cuda tests rc=$?"; tail -4 "$OUT/cuda_tests.log"
grep -B2 -A6 "ERROR" "$OUT/cuda_tests.log" | head -40
echo "== quickstart_cuda"
$B/examples/quickstart_cuda; echo "quickstart_cuda rc=$?"
echo "== transmamba --device cuda"
P=$B/tools/transmamba/transmamba
$P init --out "$OUT/tiny" --layers 2 --d-model 64 --vocab 50 --schedule 0,6 >/dev/null &&
python3 -c "
import struct, json
ids = [[(i * 7 + b) % 50 for i in range(12)] for b in range(2)]
data = b''.join(struct.pack('<q', v) for row in ids for v in row)
h = json.dumps({'input_ids': {'dtype': 'I64', 'shape': [2, 12], 'data_offsets': [0, len(data)]}}).encode()
h += b' ' * (-len(h) % 8)
open('$OUT/ids.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + data)" &&
for dt in f32 bf16 f16; do
    $P run --model "$OUT/tiny" --input "$OUT/ids.safetensors" --output "$OUT/out_$dt.safetensors" --device cuda --dtype $dt --states || echo "run $dt FAILED"
    $P generate --model "$OUT/tiny" --prompt-ids 1,2,3 --max-new-tokens 8 --device cuda --dtype $dt --no-progress || echo "generate $dt FAILED"
done
$P run --model "$OUT/tiny" --input "$OUT/ids.safetensors" --output "$OUT/out_cpu.safetensors" >/dev/null
python3 -c "
import torch
from safetensors.torch import load_file
cpu = load_file('$OUT/out_cpu.safetensors')['logits']
for dt in ['f32', 'bf16', 'f16']:
    g = load_file('$OUT/out_' + dt + '.safetensors')['logits']
    print(dt, 'max |cuda - cpu| / max |cpu| =', float((g - cpu).abs().max() / cpu.abs().max()))
" 2>&1 | tail -4
rm -rf "$OUT/tiny" "$OUT"/*.safetensors
if [ "${SANITIZE:-1}" = 1 ]; then
    for tool in memcheck racecheck; do
        timeout 240 compute-sanitizer --tool $tool --error-exitcode 3 $B/tests/transmamba_cuda_tests \
            -tc="${SANITIZE_CASES:-cuda mixer*,cuda decoding*,cuda stack*}" >"$OUT/sanitizer_$tool.log" 2>&1
        echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|test cases" "$OUT/sanitizer_$tool.log" | head -4
    done
fi
