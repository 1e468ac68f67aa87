#!/usr/bin/env bash
# Confirm-phase benchmark (SPEC section 10, issue 19): `graph-remediate mock --identities N
# --effect-delay D` in one process, `graph-remediate run --confirm` over disables of distinct
# identities in another. Prints the reads the confirm phase sent (identity reads, list pages,
# rounds), what the rule allows, and the phase's wall time, from the run's own log and from the
# mock's request log (GETs after the last invokeAction).
#
# usage: scripts/bench-confirm.sh [options]
#
#   --identities N   tenant size (default 50000)
#   --page-size N    identities per list page (default 100, the mock's default)
#   --rows N         disables (default 1000), of hybrid identities spread over the tenant
#   --delay D        the mock's --effect-delay (default 5s)
#   --rate R         `run --rate` (default 100/s): actions and reads are paced by it
#   --bin PATH       the binary (default target/release/graph-remediate)
#
# Rows carry all three ids, so the run sends no lookup and the confirm phase does not know the
# list's length: its first round probes the list within a budget of one page per identity to
# read. Every row must end confirmed (exit 0), or the script stops. Needs bash and python3.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

identities=50000
page_size=100
rows=1000
delay=5s
rate=100/s
bin=target/release/graph-remediate

die() {
    echo "bench-confirm: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --identities) identities=$2; shift 2 ;;
        --page-size) page_size=$2; shift 2 ;;
        --rows) rows=$2; shift 2 ;;
        --delay) delay=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h|--help) sed -n '/^set -euo/q; 2,$ s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ -x $bin ]] || die "$bin not found: build it with cargo build --release"
command -v python3 >/dev/null || die "python3 is needed"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-confirm.XXXXXX")
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

"$bin" mock --listen 127.0.0.1:0 --accept-any-token --identities "$identities" \
    --page-size "$page_size" --effect-delay "$delay" --request-log "$work/requests.jsonl" \
    >"$work/mock.out" 2>"$work/mock.err" &
mock_pid=$!
url=""
for ((tries = 0; tries < 300; tries++)); do
    if read -r line 2>/dev/null <"$work/mock.out" && [[ $line == *"listening on "* ]]; then
        url=${line##*listening on }
        break
    fi
    kill -0 "$mock_pid" 2>/dev/null || { cat "$work/mock.err" >&2; die "the mock did not start"; }
    sleep 0.1
done
[[ -n $url ]] || die "the mock did not say where it listens within 30 s"
echo "mock: $url, $identities identities in pages of $page_size, effects after $delay" >&2
printf 'x' >"$work/token"
chmod 600 "$work/token"

# The tenant as the list serves it (ids are hashed), then disables of hybrid identities spread
# over it, with every id given.
python3 - "$url" "$work" "$rows" <<'PY'
import json, sys, urllib.request
url, work, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
people, link = [], f"{url}/v1.0/security/identities/identityAccounts"
while link:
    request = urllib.request.Request(link, headers={"Authorization": "Bearer x"})
    page = json.load(urllib.request.urlopen(request))
    for identity in page["value"]:
        ad = [a["identifier"] for a in identity.get("accounts", [])
              if a.get("identityProvider", a.get("provider", "")).lower() == "activedirectory"]
        if ad:
            people.append((identity["id"], ad[0]))
    link = page.get("@odata.nextLink")
step = len(people) // rows
with open(f"{work}/input.csv", "w") as out:
    out.write("identityAccountId,accountId,action,identityProvider\n")
    for row in range(rows):
        identity, account = people[row * step]
        out.write(f"{identity},{account},disable,activeDirectory\n")
PY
# The walk above is not part of the measurement: the log is read from after it.
sleep 0.5
skip=$(wc -l <"$work/requests.jsonl")

echo "run: $bin run INPUT --graph-url $url --rate $rate --confirm 5m -o RESULTS" >&2
status=0
"$bin" run "$work/input.csv" --graph-url "$url" --access-token-file "$work/token" --yes \
    --rate "$rate" --confirm 5m --no-progress --log-format json -o "$work/results.jsonl" \
    >"$work/run.out" 2>"$work/run.log" || status=$?
[[ $status -eq 0 ]] || { tail -n 20 "$work/run.log" >&2; die "the run exited $status"; }
sleep 0.5

python3 - "$work" "$rows" "$page_size" "$identities" "$rate" "$delay" "$skip" <<'PY'
import json, math, sys
work, rows, page_size, identities, rate, delay, skip = sys.argv[1:8]
rows, page_size, identities = int(rows), int(page_size), int(identities)
def fields(message):
    for line in open(f"{work}/run.log"):
        if message in line:
            record = json.loads(line)
            return {**record, **record.get("fields", {})}
    raise SystemExit(f"no {message!r} line in the run's log")
phase = fields("confirm phase finished")
log = [json.loads(line) for line in open(f"{work}/requests.jsonl").readlines()[int(skip):]
       if line.strip()]
posts = [r for r in log if r["method"] == "POST"]
last_action = max(r["tMs"] for r in posts)
gets = [r for r in log if r["method"] == "GET" and r["tMs"] > last_action]
pages = sum(1 for r in gets if r["path"].endswith("identityAccounts"))
singles = len(gets) - pages
span = (max(r["tMs"] for r in gets) - last_action) / 1000 if gets else 0.0
results = [json.loads(line) for line in open(f"{work}/results.jsonl")]
confirmed = sum(1 for r in results if r.get("effect") == "confirmed")
list_pages = math.ceil(identities / page_size)
print(f"{rows} disables at --rate {rate}, effects after {delay}: {confirmed}/{len(results)} confirmed")
print(f"confirm phase: {phase['reads']} reads in {phase['rounds']} rounds "
      f"({phase['pageReads']} list pages, {phase['identityReads']} identity reads), "
      f"{float(phase['elapsedSeconds']):.2f} s")
print(f"mock's log after the last action: {len(gets)} GETs ({pages} pages, {singles} by id), "
      f"last {span:.2f} s after the last action")
print(f"rule: a round reads min(identities open, list pages = {list_pages}); the first probes the "
      f"list within a budget of {rows} pages; at most 2 x {rows} reads a round")
PY
