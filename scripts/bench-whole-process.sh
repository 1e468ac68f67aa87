#!/usr/bin/env bash
# Whole-process benchmark: `graph-remediate mock` in one process, `graph-remediate run` in another,
# timed from outside (process start-up, input check, every request and the results file included).
#
# usage: scripts/bench-whole-process.sh [throughput|rss] [options]
#
#   throughput (default)  `run` over --rows rows (default 100000), --runs times (default 5) after
#                         --warmup untimed runs (default 1); prints each wall time and the median
#                         rows/s.
#   rss                   `run` over --rows rows (default 1000000) under /usr/bin/time -v, --runs
#                         times (default 1); prints each "Maximum resident set size" and the median.
#
# options:
#   --rows N          input rows (written once with scripts/generate-accounts.py)
#   --runs N          measured runs
#   --warmup N        untimed runs first (throughput mode)
#   --concurrency N   `run --concurrency` (default 64)
#   --port N          mock port on 127.0.0.1 (default 0: a free one)
#   --bin PATH        the binary (default target/release/graph-remediate; build it with
#                     `cargo build --release`)
#
# Rate limiting is effectively off (`--rate 1000000/s --burst 1000`), the mock accepts any token
# (GRAPH_ACCESS_TOKEN=x) and adds no latency. Every run must exit 0 (every row succeeded) and write
# one record per row, or the script stops. Needs bash, python3 and, for rss, /usr/bin/time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=throughput
rows=""
runs=""
warmup=1
concurrency=64
port=0
bin=target/release/graph-remediate

die() {
    echo "bench-whole-process: $*" >&2
    exit 1
}

if [[ $# -gt 0 && $1 != -* ]]; then
    mode=$1
    shift
fi
while [[ $# -gt 0 ]]; do
    case $1 in
        --rows) rows=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h|--help) sed -n '/^set -euo/q; 2,$ s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $mode in
    throughput) rows=${rows:-100000}; runs=${runs:-5} ;;
    rss) rows=${rows:-1000000}; runs=${runs:-1}
        [[ -x /usr/bin/time ]] || die "/usr/bin/time is needed for rss mode (GNU time)" ;;
    *) die "unknown mode $mode: throughput or rss" ;;
esac
[[ -x $bin ]] || die "$bin not found: build it with cargo build --release"
command -v python3 >/dev/null || die "python3 is needed to generate the input"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-whole-process.XXXXXX")
mock_pid=""
cleanup() {
    if [[ -n $mock_pid ]] && kill -0 "$mock_pid" 2>/dev/null; then
        kill -TERM "$mock_pid" 2>/dev/null || true
        wait "$mock_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `run` asks for confirmation off a terminal once it has a confirmation prompt; --yes answers it.
confirm=()
run_help=$("$bin" run --help)
[[ $run_help == *--yes* ]] && confirm=(--yes)

input=$work/accounts.csv
echo "generating $rows rows into $input" >&2
python3 scripts/generate-accounts.py "$rows" "$input"

: >"$work/mock.out"
"$bin" mock --listen "127.0.0.1:$port" --accept-any-token >"$work/mock.out" 2>"$work/mock.err" &
mock_pid=$!
url=""
for ((tries = 0; tries < 100; tries++)); do
    if read -r line 2>/dev/null <"$work/mock.out" && [[ $line == *"listening on "* ]]; then
        url=${line##*listening on }
        break
    fi
    kill -0 "$mock_pid" 2>/dev/null || { cat "$work/mock.err" >&2; die "the mock did not start"; }
    sleep 0.1
done
[[ -n $url ]] || die "the mock did not say where it listens within 10 s"
echo "mock: $url (pid $mock_pid)" >&2

# Runs `run` once into a fresh results file; $1 names the run, the rest goes before the binary
# (e.g. /usr/bin/time -v -o FILE). Sets $elapsed (seconds) and checks the exit code and the records.
run_once() {
    local name=$1
    shift
    local results=$work/results-$name.jsonl
    local start end status=0
    start=$EPOCHREALTIME
    GRAPH_ACCESS_TOKEN=x "$@" "$bin" run "$input" --graph-url "$url" \
        --rate 1000000/s --burst 1000 --concurrency "$concurrency" -o "$results" "${confirm[@]}" \
        >"$work/run-$name.out" 2>"$work/run-$name.err" || status=$?
    end=$EPOCHREALTIME
    if [[ $status -ne 0 ]]; then
        tail -n 20 "$work/run-$name.err" >&2
        die "run $name exited $status (0 means every row succeeded)"
    fi
    local records
    records=$(python3 -c 'import sys; print(sum(1 for _ in open(sys.argv[1], "rb")))' "$results")
    [[ $records -eq $rows ]] || die "run $name wrote $records records for $rows rows"
    rm -f "$results"
    elapsed=$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$start" "$end")
}

median() {
    python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"
}

echo "run: GRAPH_ACCESS_TOKEN=x $bin run INPUT --graph-url $url --rate 1000000/s --burst 1000 --concurrency $concurrency -o RESULTS ${confirm[*]} ($rows rows)"
case $mode in
    throughput)
        for ((i = 1; i <= warmup; i++)); do
            run_once "warmup-$i"
            echo "warm-up $i: ${elapsed} s (not counted)"
        done
        times=()
        for ((i = 1; i <= runs; i++)); do
            run_once "$i"
            times+=("$elapsed")
            echo "run $i: ${elapsed} s, $(python3 -c 'import sys; print(f"{int(sys.argv[1]) / float(sys.argv[2]):.0f}")' "$rows" "$elapsed") rows/s"
        done
        med=$(median "${times[@]}")
        python3 -c 'import sys; r, t = int(sys.argv[1]), float(sys.argv[2]); print(f"median: {t:.3f} s, {r / t:.0f} rows/s over {sys.argv[3]} runs of {r} rows")' "$rows" "$med" "$runs"
        ;;
    rss)
        peaks=()
        for ((i = 1; i <= runs; i++)); do
            run_once "$i" /usr/bin/time -v -o "$work/time-$i.txt"
            peak=$(python3 -c '
import sys
for line in open(sys.argv[1]):
    if "Maximum resident set size" in line:
        print(line.split(":")[1].strip())' "$work/time-$i.txt")
            peaks+=("$peak")
            echo "run $i: Maximum resident set size (kbytes): $peak ($(python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1024:.1f}")' "$peak") MiB); wall ${elapsed} s, $(python3 -c 'import sys; print(f"{int(sys.argv[1]) / float(sys.argv[2]):.0f}")' "$rows" "$elapsed") rows/s"
        done
        med=$(median "${peaks[@]}")
        python3 -c 'import sys; k = float(sys.argv[1]); print(f"median Maximum resident set size: {k:.0f} kbytes ({k / 1024:.1f} MiB) over {sys.argv[2]} runs of {sys.argv[3]} rows")' "$med" "$runs" "$rows"
        ;;
esac
