#!/usr/bin/env bash
# Nsight Compute profiles of the kernels behind the headline benchmarks, for the bound written
# next to each figure in docs/PERF.md. One device call; the bench_cuda_* programs already built.
#
#   [OUT=<dir>] bash bench/profile_device.sh [build-dir]      (build-dir default build/cuda)
#
# For each case: one launch of the kernel (after 3 warm-up launches) under ncu with the sections
# that say what bounds it (SpeedOfLight, Occupancy, LaunchStats, WarpStateStats,
# ComputeWorkloadAnalysis, MemoryWorkloadAnalysis), as text in <OUT>/ncu/<case>.txt, and the
# headline metrics of all cases in <OUT>/ncu/summary.txt. Everything is packed into
# <OUT>/ncu.tar.gz (the device tool brings back few files); summary.txt is also left unpacked.
set -u
BUILD=${1:-build/cuda}
OUT=${OUT:-out}
mkdir -p "$OUT/ncu"
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
SUMMARY=$OUT/ncu/summary.txt
: >"$SUMMARY"

exe() { find "$BUILD" -type f -name "$1" -perm -u+x | head -n 1; }

# case program filter kernel-regex
profile() {
    local name=$1 program=$2 filter=$3 kernel=$4 path
    path=$(exe "$program")
    if [ -z "$path" ]; then
        echo "$name: $program not built under $BUILD" | tee -a "$SUMMARY"
        return
    fi
    timeout 120 ncu --kernel-name "regex:$kernel" --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        "$path" --benchmark_filter="$filter" >"$OUT/ncu/$name.txt" 2>&1
    local rc=$?
    {
        echo "== $name ($program, $filter, kernel ~ $kernel): rc=$rc"
        grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per Thread|Shared Memory Configuration Size|Dynamic Shared Memory Per Block|Block Limit|Issue Slots Busy|Executed Ipc Active|Warp Cycles Per Issued Instruction|L1/TEX Hit Rate|L2 Hit Rate" \
            "$OUT/ncu/$name.txt" | head -n 40
    } >>"$SUMMARY"
}

profile scan_chunk_scan_bf16_256k bench_cuda_scan '^scan/transmamba/bf16/b:16/L:16384/h:32/p:64/n:128/g:1/' chunk_scan_kernel
profile scan_chunk_state_bf16_256k bench_cuda_scan '^scan/transmamba/bf16/b:16/L:16384/h:32/p:64/n:128/g:1/' chunk_state_kernel
profile scan_state_passing_bf16_256k bench_cuda_scan '^scan/transmamba/bf16/b:16/L:16384/h:32/p:64/n:128/g:1/' state_passing_kernel
profile scan_chunk_scan_tf32_256k bench_cuda_scan '^scan/transmamba_tf32/fp32/b:16/L:16384/' chunk_scan_kernel
profile attention_bf16_L4096_g1 bench_cuda_attention '^attention/transmamba/bf16/b:16/L:4096/h:32/p:64/n:128/g:1/' attention_mma_kernel
profile attention_fp32_L4096_g1 bench_cuda_attention '^attention/transmamba/fp32/b:16/L:4096/h:32/p:64/n:128/g:1/' attention_simt_kernel
profile converter_bf16_P4096 bench_cuda_converter '^converter/transmamba/bf16/b:16/h:32/p:64/n:128/g:1/P:4096/' chunk_state_kernel
profile decode_ssm_b1 bench_cuda_decode '^decode_ssm/transmamba/bf16/b:1/h:64/p:64/n:128/g:1/graph:0/' state_update_kernel
profile decode_ssm_b256 bench_cuda_decode '^decode_ssm/transmamba/bf16/b:256/h:64/p:64/n:128/g:1/graph:0/' state_update_kernel
profile decode_attention_b16_32k bench_cuda_decode '^decode_attention/transmamba/bf16/b:16/h:64/p:64/n:128/g:1/cache:32768/graph:0/' split_kernel

tar -czf "$OUT/ncu.tar.gz" -C "$OUT" ncu && find "$OUT/ncu" -mindepth 1 ! -name summary.txt -delete
cat "$SUMMARY"
