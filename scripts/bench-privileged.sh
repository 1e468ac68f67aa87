#!/usr/bin/env bash
# Guard-read benchmark (issue 20): `graph-remediate mock --identities N --privileged-access
# --eligible E --role-groups G` in one process, `graph-remediate run --protect-privileged` over a
# few rows in another. Prints the reads the guard sent, by kind, and their wall time, from the
# mock's request log (the GETs to roleManagement, groups, identityGovernance and
# directory/administrativeUnits), beside the run's own "guardrails read" log line.
#
# usage: scripts/bench-privileged.sh [options]
#
#   --identities N   tenant size (default 50000)
#   --eligible N     PIM-eligible assignments beyond the seeded ones (default 200)
#   --role-groups N  role-assignable groups beyond the seeded two (default 20)
#   --rows N         disables of hybrid identities named by SID (default 10)
#   --rate R         `run --rate` (default 100/s): reads are paced by it
#   --api-version V  v1.0 (default) or beta (beta also reads the roles labelled privileged)
#   --bin PATH       the binary (default target/release/graph-remediate)
#
# Every row must succeed (exit 0), or the script stops. Needs bash and python3.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

identities=50000
eligible=200
role_groups=20
rows=10
rate=100/s
version=v1.0
bin=target/release/graph-remediate

die() {
    echo "bench-privileged: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --identities) identities=$2; shift 2 ;;
        --eligible) eligible=$2; shift 2 ;;
        --role-groups) role_groups=$2; shift 2 ;;
        --rows) rows=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --api-version) version=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h|--help) sed -n '/^set -euo/q; 2,$ s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ -x $bin ]] || die "$bin not found: build it with cargo build --release"
command -v python3 >/dev/null || die "python3 is needed"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-privileged.XXXXXX")
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
    --privileged-access --eligible "$eligible" --role-groups "$role_groups" \
    --request-log "$work/requests.jsonl" >"$work/mock.out" 2>"$work/mock.err" &
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
echo "mock: $url, $identities identities, $eligible more eligible, $role_groups more groups" >&2
printf 'x' >"$work/token"
chmod 600 "$work/token"

# Hybrid identities (i % 5 != 0) away from the seeded privileged ones, named by their SID
# (the synthetic layout's, see src/mock/tenant.rs).
{
    echo "sid,action,identityProvider"
    for ((k = 0; k < rows; k++)); do
        i=$((5000 + 5 * k + 1))
        echo "S-1-5-21-1004336348-1177238915-682003330-$((1000 + i)),disable,activeDirectory"
    done
} >"$work/input.csv"

echo "run: $bin run INPUT --graph-url $url --rate $rate --api-version $version --protect-privileged -o RESULTS" >&2
status=0
"$bin" run "$work/input.csv" --graph-url "$url" --access-token-file "$work/token" --yes \
    --rate "$rate" --api-version "$version" --protect-privileged --no-progress \
    --log-format json -o "$work/results.jsonl" >"$work/run.out" 2>"$work/run.log" || status=$?
[[ $status -eq 0 ]] || { tail -n 20 "$work/run.log" >&2; die "the run exited $status"; }
sleep 0.5

python3 - "$work" "$rate" "$version" <<'PY'
import collections, json, sys
work, rate, version = sys.argv[1:4]
kinds = [
    ("roleAssignments", "active role assignments"),
    ("roleEligibilityScheduleInstances", "role eligibility"),
    ("roleDefinitions", "roles labelled privileged"),
    ("transitiveMembers", "group members"),
    ("privilegedAccess/group/eligibilityScheduleInstances", "PIM for Groups eligibility"),
    ("/members", "administrative unit members"),
    ("administrativeUnits", "administrative units"),
]
log = [json.loads(line) for line in open(f"{work}/requests.jsonl") if line.strip()]
guard = []
for r in log:
    if r["method"] != "GET":
        continue
    kind = next((name for part, name in kinds if part in r["path"]), None)
    if kind:
        guard.append((kind, r))
counts = collections.Counter(kind for kind, _ in guard)
first = min(r["tMs"] for _, r in guard)
last = max(r["tMs"] for _, r in guard)
statuses = collections.Counter(r["status"] for _, r in guard)
print(f"guard reads at --rate {rate} ({version}): {len(guard)} in {(last - first) / 1000:.2f} s "
      f"(first to last request; statuses {dict(statuses)})")
for _, name in kinds:
    if counts[name]:
        print(f"  {name}: {counts[name]}")
for line in open(f"{work}/run.log"):
    if "guardrails read" in line:
        record = json.loads(line)
        fields = record.get("fields", record)
        print(f"run's log: guardrails read, {fields.get('privilegedNames')} privileged names")
PY
