#!/usr/bin/env bash
# What the durable in-flight note costs (issue 17 item 8): whole-process wall time of `run` against
# `graph-remediate mock` on loopback at unlimited rate, in pairs, this build against the same source
# built with the in-flight note's fdatasync taken out. The second binary exists only here, for the
# measurement: it is built from a copy of the source in a scratch directory, never shipped.
#
# usage: scripts/bench-durability.sh [options]
#
# options:
#   --rows N          input rows (default 5000, written once with scripts/generate-accounts.py)
#   --pairs N         measured pairs (default 9); each pair runs both binaries, in turn, the order
#                     swapped every other pair
#   --concurrency N   `run --concurrency` (default 64)
#
# Prints every pair's wall times and ratio (synced / unsynced), then the medians of each and of
# the ratios. Builds both binaries with `cargo build --release` first (the unsynced one in
# target/unsynced-measurement, seeded from target/release so only this crate is compiled again).
# Every run must exit 0 with one record per row, or the script stops. Needs bash, python3, cargo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

rows=5000
pairs=9
concurrency=64

die() {
    echo "bench-durability: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --rows) rows=$2; shift 2 ;;
        --pairs) pairs=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        -h|--help) sed -n '/^set -euo/q; 2,$ s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-durability.XXXXXX")
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

echo "building this tree (cargo build --release)" >&2
cargo build --release --locked --bin graph-remediate >&2
synced=$work/graph-remediate-synced
cp target/release/graph-remediate "$synced"

# The same source with InflightLog::sync's fdatasync taken out, in a scratch copy.
copy=$work/source
mkdir -p "$copy"
cp -a Cargo.toml Cargo.lock src benches "$copy"/
python3 - "$copy/src/output/journal.rs" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
impl = text.index("impl InflightLog {")
sync = "        self.out.get_ref().sync_data()?;\n"
at = text.find(sync, text.index("    fn sync(&mut self)", impl))
after = text.find("\nimpl", impl + 1)
if at < 0 or 0 <= after < at:
    sys.exit("bench-durability: InflightLog::sync is not as this script expects; update the script")
open(path, "w").write(text[:at] + text[at + len(sync):])
EOF
target=$PWD/target/unsynced-measurement
if [[ ! -d $target/release ]]; then
    mkdir -p "$target"
    cp -a target/release "$target/release"
fi
echo "building the unsynced copy (target/unsynced-measurement)" >&2
(cd "$copy" && CARGO_TARGET_DIR=$target cargo build --release --locked --bin graph-remediate >&2)
unsynced=$work/graph-remediate-unsynced
cp "$target/release/graph-remediate" "$unsynced"

input=$work/accounts.csv
python3 scripts/generate-accounts.py "$rows" "$input" >&2

: >"$work/mock.out"
"$synced" mock --listen 127.0.0.1:0 --accept-any-token >"$work/mock.out" 2>"$work/mock.err" &
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

# Runs binary $1 once into a fresh results file beside the input (the in-flight log goes beside
# it, on the same filesystem as a real run's); sets $elapsed in seconds.
run_once() {
    local bin=$1 results=$work/results.jsonl status=0 start end
    rm -f "$results" "$results.lock" "$results.inflight"
    start=$EPOCHREALTIME
    GRAPH_ACCESS_TOKEN=x "$bin" run "$input" --graph-url "$url" --rate 1000000/s --burst 1000 \
        --concurrency "$concurrency" -o "$results" --yes >"$work/run.out" 2>"$work/run.err" || status=$?
    end=$EPOCHREALTIME
    if [[ $status -ne 0 ]]; then
        tail -n 20 "$work/run.err" >&2
        die "$bin exited $status (0 means every row succeeded)"
    fi
    local records
    records=$(python3 -c 'import sys; print(sum(1 for _ in open(sys.argv[1], "rb")))' "$results")
    [[ $records -eq $rows ]] || die "$bin wrote $records records for $rows rows"
    elapsed=$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$start" "$end")
}

echo "run: GRAPH_ACCESS_TOKEN=x graph-remediate run INPUT --graph-url $url --rate 1000000/s --burst 1000 --concurrency $concurrency -o RESULTS --yes ($rows rows)"
run_once "$synced"
run_once "$unsynced"
echo "warm-up done (not counted)"
a=() b=() ratios=()
for ((i = 1; i <= pairs; i++)); do
    if ((i % 2)); then
        run_once "$synced"; ta=$elapsed
        run_once "$unsynced"; tb=$elapsed
    else
        run_once "$unsynced"; tb=$elapsed
        run_once "$synced"; ta=$elapsed
    fi
    a+=("$ta") b+=("$tb")
    ratio=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.3f}")' "$ta" "$tb")
    ratios+=("$ratio")
    echo "pair $i: synced ${ta} s, unsynced ${tb} s, ratio $ratio"
done
python3 - "$rows" "${#a[@]}" "${a[*]}" "${b[*]}" "${ratios[*]}" <<'EOF'
import statistics, sys
rows, n = int(sys.argv[1]), int(sys.argv[2])
a, b, r = ([float(x) for x in arg.split()] for arg in sys.argv[3:6])
ma, mb = statistics.median(a), statistics.median(b)
print(f"median synced {ma:.3f} s ({rows / ma:.0f} rows/s), unsynced {mb:.3f} s ({rows / mb:.0f} rows/s)")
print(f"median ratio synced/unsynced over {n} pairs: {statistics.median(r):.3f} (from {min(r):.3f} to {max(r):.3f})")
EOF
