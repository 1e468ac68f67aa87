#!/usr/bin/env bash
# Lookup benchmark (SPEC section 8): `graph-remediate mock --identities N` in one process,
# `graph-remediate resolve` over exports of distinct identities in another, timed from outside.
# Prints, per export size, the reads the lookup sent, how it chose (the per-identity budget, the
# list pages walked, whether the whole list was read) and the median wall time.
#
# usage: scripts/bench-lookup.sh [options]
#
#   --identities N   tenant size (default 50000)
#   --page-size N    identities per list page (default 100, the mock's default)
#   --rows "A B"     export sizes (default "20 1000")
#   --rate R         `resolve --rate` (default 100/s): reads are paced by it, so wall time is
#                    about reads / rate
#   --runs N         measured runs per size (default 3)
#   --hybrid-only    name only hybrid users (with an on-premises SID): no cloud-only user, so no
#                    row needs the whole list
#   --bin PATH       the binary (default target/release/graph-remediate)
#
# Each export names distinct identities spread over the tenant, in turn by on-premises SID (a
# hybrid user), UPN and Entra object id, as advanced hunting writes them (OnPremSid, AccountUpn,
# AccountObjectId); every fifth synthetic identity is cloud-only, so exports include some. Every
# row must resolve (exit 0), or the script stops. Needs bash and python3.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

identities=50000
page_size=100
sizes="20 1000"
rate=100/s
runs=3
bin=target/release/graph-remediate
hybrid_only=0

die() {
    echo "bench-lookup: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --identities) identities=$2; shift 2 ;;
        --page-size) page_size=$2; shift 2 ;;
        --rows) sizes=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --hybrid-only) hybrid_only=1; shift ;;
        -h|--help) sed -n '/^set -euo/q; 2,$ s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ -x $bin ]] || die "$bin not found: build it with cargo build --release"
command -v python3 >/dev/null || die "python3 is needed"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-lookup.XXXXXX")
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
    --page-size "$page_size" >"$work/mock.out" 2>"$work/mock.err" &
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
echo "mock: $url, $identities identities in pages of $page_size" >&2
printf 'x' >"$work/token"
chmod 600 "$work/token"

# The tenant as the list serves it (the object ids are hashed), then one export per size.
python3 - "$url" "$work" "$sizes" "$hybrid_only" <<'PY'
import json, sys, urllib.request
url, work, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split()]
hybrid_only = sys.argv[4] == "1"
people, link = [], f"{url}/v1.0/security/identities/identityAccounts"
while link:
    request = urllib.request.Request(link, headers={"Authorization": "Bearer x"})
    page = json.load(urllib.request.urlopen(request))
    for identity in page["value"]:
        accounts = identity.get("accounts", [])
        entra = [a["identifier"] for a in accounts
                 if a.get("identityProvider", a.get("provider", "")).lower() == "entraid"]
        people.append((identity.get("userPrincipalName"), identity.get("onPremisesSecurityIdentifier"), entra[0]))
    link = page.get("@odata.nextLink")
if hybrid_only:
    people = [person for person in people if person[1]]
for size in sizes:
    step = len(people) // size
    with open(f"{work}/export-{size}.csv", "w") as out:
        out.write("AccountUpn,OnPremSid,AccountObjectId\n")
        for row in range(size):
            upn, sid, object_id = people[row * step + row % step]
            by = row % 3
            if by == 0 and sid:
                out.write(f",{sid},\n")
            elif by == 1:
                out.write(f"{upn},,\n")
            else:
                out.write(f",,{object_id}\n")
PY

median() {
    python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"
}

echo "resolve: $bin resolve EXPORT --graph-url $url --rate $rate --action revokeAllSessions --provider entraID -o OUT.csv"
for size in $sizes; do
    export=$work/export-$size.csv
    names=$(python3 -c '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
by = lambda c: sum(1 for r in rows if r[c])
sid, upn, oid = by("OnPremSid"), by("AccountUpn"), by("AccountObjectId")
print(f"{sid} by SID, {upn} by UPN, {oid} by object id")' "$export")
    times=()
    for ((i = 1; i <= runs; i++)); do
        start=$EPOCHREALTIME
        status=0
        "$bin" resolve "$export" --graph-url "$url" --access-token-file "$work/token" \
            --rate "$rate" --action revokeAllSessions --provider entraID --no-progress \
            -o "$work/out-$size.csv" >"$work/out-$size.log" 2>&1 || status=$?
        end=$EPOCHREALTIME
        [[ $status -eq 0 ]] || { tail -n 20 "$work/out-$size.log" >&2; die "resolve of $size rows exited $status"; }
        times+=("$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$start" "$end")")
    done
    python3 - "$work/out-$size.log" "$size" "$names" "$(median "${times[@]}")" "$runs" <<'PY'
import re, sys
log, size, names, wall, runs = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
def field(message, name):
    line = next(l for l in log.splitlines() if message in l)
    return re.search(rf"\b{name}=(\S+)", line).group(1)
budget = field("looking identities up", "perIdentityReads")
pages = field("identities looked up", "pages")
whole = field("identities looked up", "wholeList")
reads = re.search(r"resolved with (\d+) read", log).group(1)
print(f"{size} rows ({names}): {reads} reads (per-identity budget {budget}, "
      f"{pages} list pages, whole list {whole}); median wall {wall:.2f} s over {runs} runs")
PY
done
