#!/usr/bin/env bash
# One call on the GPU machine: every bench_cuda_* program of a prebuilt build, every peer script,
# then bench/report.py over all of their JSON (markdown tables and PNG plots).
#
#   [QUICK=1] [ONLY=<regex>] [BUDGET=<s>] [OUT=<dir>] bash bench/run_device.sh [build-dir]
#
# build-dir   default build/cuda (the `cuda` preset, benchmarks on), its bench_cuda_* programs
#             already built; .deps/ (Google Benchmark's shared library) and .peers/ (mamba_ssm's
#             Triton ops, see bench/peers/ssd_triton.py) present in the repository root.
# Output under $OUT (default ./out):
#   ours/<program>.json      each program's --benchmark_out (Google Benchmark JSON)
#   peers/<script>.json      each peer script's --json
#   report/report.md, report/time_vs_L.png, report/time_vs_P.png
#   logs/<step>.log          each step's stdout and stderr
#   gpu.txt, gpu_after.txt   nvidia-smi before and after; versions.txt; summary.txt (rc and time per step)
# Steps, in this order (a component's ours next to its peer, so a budget cut leaves whole pairs):
#   ours-bench_cuda_attention, peer-attention_sdpa, ours-bench_cuda_scan, peer-ssd_triton,
#   ours-bench_cuda_converter, ours-bench_cuda_layer, peer-layer_torch (layer and converter peers),
#   ours-bench_cuda_decode, peer-decode_peers, any other ours-bench_cuda_*, report.
# Every step runs under `timeout`; a failing step is logged and the next one runs.
# Knobs:
#   QUICK=1      peers with --quick; our programs with --benchmark_filter="$QUICK_FILTER" (default:
#                bf16 at L = 4096, P = 4096 and cache 1024, and the SSM decoding step)
#   ONLY=<regex> run only the steps whose names match (bash =~), e.g. ONLY='attention|report'
#   BUDGET=<s>   the whole call's time, default 570 (the device tool stops a command at 600 s); each
#                step gets the smaller of its own limit and what is left after a reserve for the
#                report; peer scripts get a --budget that ends them before their timeout
#   BENCH_ARGS   extra arguments for every bench_cuda_* program
# The default (full) run does not fit in one call: split it with ONLY across calls and run
# `python3 bench/report.py <downloaded dirs...> --md report.md --plots plots/` afterwards.
set -u
BUILD=${1:-build/cuda}
OUT=${OUT:-out}
QUICK=${QUICK:-0}
ONLY=${ONLY:-}
BUDGET=${BUDGET:-570}
BENCH_ARGS=${BENCH_ARGS:-}
QUICK_FILTER=${QUICK_FILTER:-'/bf16/.*(/L:4096/|/P:4096(/|$)|/cache:1024/)|^decode_ssm/'}
REPORT_RESERVE=40
START=$(date +%s)
DEADLINE=$((START + BUDGET))

mkdir -p "$OUT/ours" "$OUT/peers" "$OUT/report" "$OUT/logs"
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=$PWD/.peers${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

log() { echo "$*" | tee -a "$SUMMARY"; }

gpu_info() {
    nvidia-smi --query-gpu=name,driver_version,pstate,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu,memory.used,memory.total,compute_mode,mig.mode.current --format=csv
    nvidia-smi
    nvidia-smi -q -d CLOCK,PERFORMANCE
}

# run_step NAME LIMIT_S COMMAND...: runs COMMAND under timeout, output to logs/NAME.log.
run_step() {
    local name=$1 limit=$2
    shift 2
    if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then
        return 0
    fi
    local reserve=$REPORT_RESERVE
    [ "$name" = report ] && reserve=0
    local left=$((DEADLINE - $(date +%s) - reserve))
    if [ "$left" -lt 20 ]; then
        log "$name: skipped (BUDGET spent)"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0 rc
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
    rc=$?
    local status=ok
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status="TIMED OUT"
    [ "$rc" -ne 0 ] && [ "$status" = ok ] && status=FAILED
    log "$name: rc=$rc $status, $(($(date +%s) - t0)) s (limit $limit s)"
    [ "$rc" -ne 0 ] && tail -n 5 "$OUT/logs/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
    return 0
}

# A peer script: its --budget ends it ~30 s before the step's timeout (start-up and the last shape).
run_peer() {
    local script=$1 limit=$2
    local name=peer-$script
    local left=$((DEADLINE - $(date +%s) - REPORT_RESERVE))
    [ "$limit" -gt "$left" ] && limit=$left
    local budget=$((limit - 30))
    [ "$budget" -lt 10 ] && budget=10
    local quick=()
    [ "$QUICK" = 1 ] && quick=(--quick)
    run_step "$name" "$limit" python3 "bench/peers/$script.py" --json "$OUT/peers/$script.json" \
        --budget "$budget" "${quick[@]}"
}

run_ours() {
    local stem=$1 limit=$2
    local exe=${PROGRAMS[$stem]:-}
    if [ -z "$exe" ]; then
        [ -z "$ONLY" ] || [[ ours-bench_cuda_$stem =~ $ONLY ]] && log "ours-bench_cuda_$stem: not built under $BUILD"
        return 0
    fi
    local filter=()
    [ "$QUICK" = 1 ] && filter=(--benchmark_filter="$QUICK_FILTER")
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    run_step "ours-bench_cuda_$stem" "$limit" "$exe" --benchmark_out="$OUT/ours/bench_cuda_$stem.json" \
        --benchmark_out_format=json "${filter[@]}" $BENCH_ARGS
}

log "run_device.sh: build $BUILD, QUICK=$QUICK, ONLY=${ONLY:-<all>}, BUDGET=$BUDGET s, $(date -Is)"
gpu_info >"$OUT/gpu.txt" 2>&1 || log "nvidia-smi failed"
head -n 2 "$OUT/gpu.txt" | tee -a "$SUMMARY"
{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "mamba_ssm: $(cat .peers/MAMBA_COMMIT 2>/dev/null || echo 'no .peers/MAMBA_COMMIT')"
    python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)" 2>&1
    python3 -c "import matplotlib; print('matplotlib', matplotlib.__version__)" 2>&1
    python3 -c "import mamba_ssm.ops.triton.ssd_combined, mamba_ssm.ops.triton.selective_state_update; print('mamba_ssm Triton ops: importable')" 2>&1 | tail -n 1
} >"$OUT/versions.txt"
tee -a "$SUMMARY" <"$OUT/versions.txt"

declare -A PROGRAMS=()
if [ -d "$BUILD" ]; then
    while IFS= read -r exe; do
        stem=$(basename "$exe")
        PROGRAMS[${stem#bench_cuda_}]=$exe
    done < <(find "$BUILD" -type f -name 'bench_cuda_*' -perm -u+x | sort)
fi
[ "${#PROGRAMS[@]}" -eq 0 ] && log "no bench_cuda_* programs under $BUILD (cmake --preset cuda; cmake --build $BUILD)"

run_ours attention 240
run_peer attention_sdpa 180
run_ours scan 240
run_peer ssd_triton 180
run_ours converter 120
run_ours layer 240
run_peer layer_torch 210
run_ours decode 150
run_peer decode_peers 120
for stem in $(printf '%s\n' "${!PROGRAMS[@]}" | sort); do
    case $stem in attention | scan | converter | layer | decode) ;; *) run_ours "$stem" 240 ;; esac
done

run_step report 60 python3 bench/report.py "$OUT/ours" "$OUT/peers" --md "$OUT/report/report.md" --plots "$OUT/report"
gpu_info >"$OUT/gpu_after.txt" 2>&1
log "done in $(($(date +%s) - START)) s; the report: $OUT/report/report.md"
