#!/usr/bin/env bash
# Make .env for `docker compose` if it is missing: a random cluster cookie and admin token.
# compose.yaml refuses to start without them; .env is not committed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -s .env ] && grep -q '^KADR_CLUSTER_COOKIE=' .env && grep -q '^KADR_ADMIN_TOKEN=' .env; then
    echo "compose-env: .env exists; keeping it" >&2
    exit 0
fi
rand() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
umask 077
printf 'KADR_CLUSTER_COOKIE=%s\nKADR_ADMIN_TOKEN=%s\n' "$(rand)" "$(rand)" > .env
echo "compose-env: wrote .env (cluster cookie and admin token)" >&2
