#!/usr/bin/env bash
# The MQAR experiment of docs/experiments.md, in one call: configures and builds only the example
# (Release, CPU: there is no GPU backward yet), runs the grid, makes the table and the plot.
#   bash scripts/experiment-mqar.sh [mqar_experiment flags...]     (extra flags change the grid)
# Writes ${OUT:-build/experiment}/: mqar.jsonl (one line per run), mqar_table.md, mqar.svg,
# machine.txt, run.log. On the GPU machine, carry .deps (/work/shared/tools/device-deps.sh): it has
# none of the Debian packages, so CMake looks in .deps/usr.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/experiment}
B=build/mqar-experiment
mkdir -p "$OUT"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
prefix=()
[ -d .deps/usr ] && prefix=(-DCMAKE_PREFIX_PATH="$PWD/.deps/usr")
cmake -S . -B "$B" "${generator[@]}" "${prefix[@]}" -DCMAKE_BUILD_TYPE=Release -DTRANSMAMBA_ENABLE_CUDA=OFF \
    -DTRANSMAMBA_BUILD_TESTS=OFF -DTRANSMAMBA_BUILD_CLI=OFF -DTRANSMAMBA_BUILD_BENCHMARKS=OFF \
    -DTRANSMAMBA_INSTALL=OFF -DTRANSMAMBA_BUILD_EXAMPLES=ON >"$OUT/configure.log" 2>&1 || {
    tail -30 "$OUT/configure.log"; exit 1; }
cmake --build "$B" --target mqar_experiment -j "$(nproc)" >"$OUT/build.log" 2>&1 || {
    grep -E "error" "$OUT/build.log" | head -30; exit 1; }
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cores: $(nproc)"
    echo "compiler: $(c++ --version | head -1)"
    echo "flags: $*"
} | tee "$OUT/machine.txt"
start=$(date +%s)
rc=0
"$B/examples/mqar_experiment" --out "$OUT/mqar.jsonl" "$@" 2>&1 | tee "$OUT/run.log" || rc=$?
echo "grid: $(( $(date +%s) - start )) s wall" | tee -a "$OUT/machine.txt"
python3 scripts/plot_mqar.py "$OUT/mqar.jsonl" "$OUT"
cat "$OUT/mqar_table.md"
exit $rc
