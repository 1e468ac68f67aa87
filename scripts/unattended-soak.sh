#!/bin/sh
# Issue 18: 1,000 rows at --rate 100/s with 3-second tokens, once for each unattended kind
# (workload identity, GitHub OIDC, IMDS, App Service, Cloud Shell, Arc, azure-cli), against
# the in-process mock on loopback. Each run checks every row succeeded and no secret was
# written, and prints its token requests. About 10 s a kind.
set -eu
cd "$(dirname "$0")/.."
exec cargo test --test it -- --ignored --nocapture --test-threads "${THREADS:-1}" unattended::issue_18_thousand_rows "$@"
