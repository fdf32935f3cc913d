#!/bin/sh
# Runs bench_cpu_threads once per OpenMP wait policy (libgomp reads OMP_WAIT_POLICY when the program
# starts, so a policy is a process) and leaves Google Benchmark JSON per policy in OUT_DIR:
#   bench/cpu/threads.sh build/default/bench/bench_cpu_threads [OUT_DIR] [extra benchmark flags]
# The figures are in docs/PERF.md, "Threads under contention".
set -eu
bin=${1:?usage: threads.sh path/to/bench_cpu_threads [out_dir] [flags]}
out=${2:-threads-results}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$out"
for policy in default passive active; do
    if [ "$policy" = default ]; then
        env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$bin" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
            --benchmark_out="$out/threads_$policy.json" --benchmark_out_format=json "$@"
    else
        env -u GOMP_SPINCOUNT OMP_WAIT_POLICY="$policy" "$bin" --benchmark_repetitions=3 \
            --benchmark_report_aggregates_only=true --benchmark_out="$out/threads_$policy.json" \
            --benchmark_out_format=json "$@"
    fi
done
