#!/usr/bin/env python3
"""Write N synthetic account rows for load tests and benchmarks (stdlib only).

usage: scripts/generate-accounts.py ROWS OUT.csv|OUT.jsonl

Every row is valid and distinct (one account each), cycling through the documented
action/provider pairs, with three carry-through columns.
"""
import json
import sys

PAIRS = [
    ("disable", "activeDirectory"),
    ("disable", "okta"),
    ("enable", "activeDirectory"),
    ("forcePasswordReset", "activeDirectory"),
    ("revokeAllSessions", "okta"),
]


def rows(count):
    for i in range(count):
        action, provider = PAIRS[i % len(PAIRS)]
        account = f"S-1-5-21-1000-{i}" if provider == "activeDirectory" else f"00u{i:017d}"
        yield {
            "identityAccountId": f"{i:08x}-0000-4000-8000-{i:012x}",
            "accountId": account,
            "action": action,
            "identityProvider": provider,
            "upn": f"user{i}@contoso.com",
            "ticket": f"INC-{i}",
            "note": "bulk containment",
        }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    count, out = int(sys.argv[1]), sys.argv[2]
    with open(out, "w", newline="") as f:
        if out.endswith(".jsonl"):
            for row in rows(count):
                f.write(json.dumps(row, separators=(",", ":")) + "\n")
        else:
            columns = list(next(rows(1)).keys())
            f.write(",".join(columns) + "\n")
            for row in rows(count):
                f.write(",".join(row[c] for c in columns) + "\n")


if __name__ == "__main__":
    main()
