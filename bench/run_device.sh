#!/usr/bin/env bash
# One call on the GPU machine: every bench_cuda_* program of a prebuilt build, every peer script,
# then bench/report.py over all of their JSON (markdown tables and PNG plots), and at the end all of
# it packed into ONE archive (the device tool brings back at most 8 files from $OUT).
#
#   [COMMIT=<sha>] [QUICK=1] [ONLY=<regex>] [BUDGET=<s>] [OUT=<dir>] bash bench/run_device.sh [build-dir]
#
# build-dir   default build/cuda (the `cuda` preset, benchmarks on), its bench_cuda_* programs
#             already built; .deps/ (Google Benchmark's shared library) and .peers/ (mamba_ssm's
#             Triton ops, see bench/peers/ssd_triton.py) present in the repository root.
# COMMIT      the commit the working tree was sent from, recorded in versions.txt; pass it from the
#             caller's checkout (`git rev-parse HEAD`, "-dirty" appended with uncommitted changes):
#             the device machine's copy of .git can be stale. Without it versions.txt records that
#             copy's `git rev-parse HEAD`, marked "(working tree copy; commit may be stale)".
# What the run writes under $OUT (default ./out):
#   ours/<program>.json      each program's --benchmark_out (Google Benchmark JSON)
#   peers/<script>.json      each peer script's --json
#   report/report.md, report/time_vs_L.png, report/time_vs_P.png
#   logs/<step>.log          each step's stdout and stderr
#   gpu.txt, gpu_after.txt   nvidia-smi before and after; versions.txt; summary.txt (rc and time per step)
# What is left under $OUT when it ends (also when its BUDGET cut steps, or SIGTERM/SIGINT stopped it):
#   results.tar.gz           all of the above (ours/, peers/, report/, logs/, summary.txt, versions.txt,
#                            gpu*.txt); over 15 MiB it is split into results.tar.gz.part00, part01, ...
#                            (the tool returns files of at most 16 MiB)
#   summary.txt              also left unpacked (readable in the tool's reply), with the archive's size
#   report/report.md         also left unpacked
# The unpacked copies of everything else are deleted, so that at most ~3 files come back.
# Here, after the call (files_at is read-only; unpack elsewhere):
#   mkdir -p <dir> && tar xzf <files_at>/results.tar.gz -C <dir>
#       (split: cat <files_at>/results.tar.gz.part* | tar xz -C <dir>)
#   python3 bench/report.py <dir>/ours <dir>/peers --md <dir>/report.md --plots <dir>/plots
#   (several calls split with ONLY: unpack each into its own <dir> and name all their ours/ and
#   peers/ folders to one bench/report.py)
# Steps, in this order (a component's ours next to its peer, so a budget cut leaves whole pairs):
#   ours-bench_cuda_attention, peer-attention_sdpa, ours-bench_cuda_attention_backward,
#   peer-attention_sdpa_backward, ours-bench_cuda_scan, peer-ssd_triton, ours-bench_cuda_scan_backward,
#   peer-ssd_backward_triton,
#   ours-bench_cuda_converter, ours-bench_cuda_layer, peer-layer_torch (layer and converter peers),
#   ours-bench_cuda_decode, peer-decode_peers, any other ours-bench_cuda_*, report.
# Every step runs under `timeout`; a failing step is logged and the next one runs.
# Knobs:
#   QUICK=1      peers with --quick; our programs with --benchmark_filter="$QUICK_FILTER" (default:
#                bf16 at L = 4096, P = 4096 and cache 1024, and the SSM decoding step)
#   ONLY=<regex> run only the steps whose names match (bash =~), e.g. ONLY='attention|report'
#   BUDGET=<s>   the whole call's time, default 570 (the device tool stops a command at 600 s); each
#                step gets the smaller of its own limit and what is left after a reserve for the
#                report and the packing; peer scripts get a --budget that ends them before their timeout
#   BENCH_ARGS   extra arguments for every bench_cuda_* program
# The default (full) run does not fit in one call: split it with ONLY across calls, e.g.
#   COMMIT=<sha> ONLY='attention' bash bench/run_device.sh, then ONLY='scan|converter', ...
set -u
BUILD=${1:-build/cuda}
OUT=${OUT:-out}
QUICK=${QUICK:-0}
ONLY=${ONLY:-}
BUDGET=${BUDGET:-570}
BENCH_ARGS=${BENCH_ARGS:-}
QUICK_FILTER=${QUICK_FILTER:-'/bf16/.*(/L:4096/|/P:4096(/|$)|/cache:1024/)|^decode_ssm/'}
REPORT_RESERVE=40 # s kept for the report and the packing
PACK_RESERVE=10   # s kept for the packing (gpu_after.txt, tar) after the report
START=$(date +%s)
DEADLINE=$((START + BUDGET))

mkdir -p "$OUT/ours" "$OUT/peers" "$OUT/report" "$OUT/logs"
rm -f "$OUT/results.tar.gz" "$OUT"/results.tar.gz.part*  # of an earlier run into the same $OUT
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=$PWD/.peers${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

log() { echo "$*" | tee -a "$SUMMARY"; }

# pack: everything written under $OUT into $OUT/results.tar.gz (the device tool returns at most 8
# files of at most 16 MiB), then the unpacked copies deleted but summary.txt and report/report.md.
# Runs once: at the end, or from the EXIT trap when a signal or an error ends the script early.
PACKED=0
pack() {
    [ "$PACKED" = 1 ] && return 0
    PACKED=1
    local items=() item
    for item in ours peers report logs summary.txt versions.txt gpu.txt gpu_after.txt; do
        [ -e "$OUT/$item" ] && items+=("$item")
    done
    [ "${#items[@]}" -eq 0 ] && return 0
    if ! tar -czf "$OUT/results.tar.gz" -C "$OUT" "${items[@]}"; then
        log "packing failed: the unpacked files are left under $OUT"
        return 0
    fi
    rm -rf "$OUT/ours" "$OUT/peers" "$OUT/logs"
    rm -f "$OUT/versions.txt" "$OUT/gpu.txt" "$OUT/gpu_after.txt"
    [ -d "$OUT/report" ] && find "$OUT/report" -mindepth 1 ! -name report.md -exec rm -rf {} +
    local size
    size=$(stat -c %s "$OUT/results.tar.gz")
    if [ "$size" -gt $((15 * 1024 * 1024)) ]; then
        split -b 15M -d "$OUT/results.tar.gz" "$OUT/results.tar.gz.part" && rm -f "$OUT/results.tar.gz"
        log "packed ${items[*]} into $OUT/results.tar.gz.part* ($size bytes; cat them | tar xz -C <dir>)"
    else
        log "packed ${items[*]} into $OUT/results.tar.gz ($size bytes; tar xzf it -C <dir>)"
    fi
}

# A signal stops the running step (its `timeout`, which passes it on), then the EXIT trap packs.
CHILD=
on_signal() {
    log "interrupted by SIG$1: packing what was written"
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    exit "$2"
}
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT
trap pack EXIT

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
    [ "$name" = report ] && reserve=$PACK_RESERVE
    local left=$((DEADLINE - $(date +%s) - reserve))
    if [ "$left" -lt 20 ]; then
        log "$name: skipped (BUDGET spent)"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0 rc
    t0=$(date +%s)
    # In the background, so that a signal is handled at once (bash runs traps between commands).
    timeout -k 10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1 &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=
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
    if [ -n "${COMMIT:-}" ]; then
        echo "commit: $COMMIT (COMMIT, passed by the caller)"
    elif git status --porcelain >/dev/null 2>&1; then
        echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) (working tree copy; commit may be stale)"
    else
        echo "commit: unknown (no COMMIT passed and no usable git metadata)"
    fi
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
run_ours attention_backward 120
run_peer attention_sdpa_backward 120
run_ours scan 240
run_peer ssd_triton 180
run_ours scan_backward 120
run_peer ssd_backward_triton 120
run_ours converter 120
run_ours layer 240
run_peer layer_torch 210
run_ours decode 150
run_peer decode_peers 120
for stem in $(printf '%s\n' "${!PROGRAMS[@]}" | sort); do
    case $stem in attention | attention_backward | scan | scan_backward | converter | layer | decode) ;; *) run_ours "$stem" 240 ;; esac
done

run_step report 60 python3 bench/report.py "$OUT/ours" "$OUT/peers" --md "$OUT/report/report.md" --plots "$OUT/report"
gpu_info >"$OUT/gpu_after.txt" 2>&1
log "done in $(($(date +%s) - START)) s; the report: $OUT/report/report.md"
pack
