#!/usr/bin/env bash
# Run kadr's whole test suite: installs what is missing (scripts/setup.sh), then `cargo test`.
# Tests start their own redis-server on a free loopback port (or use $REDIS_URL), load ONNX
# Runtime from .deps/, and skip a test whose prerequisite (../shared/fixtures, the model, the
# video, Chromium, OpenVINO) is absent with a message; with CI or KADR_REQUIRE_ALL=1 set (as
# .ci/run sets it) such a test fails instead, so a green run means every test ran. Run without
# arguments, it then runs the cross-host fault suite (scripts/test-containers.py: the compose
# cluster under kills, partitions, pauses, a Redis restart and a rolling restart) wherever a
# Docker daemon answers, and says so where none does.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The load generator is another crate of the workspace; its binary must exist for the tests.
cargo build --release --workspace --bins
cargo test --release --workspace "$@"
[ $# -eq 0 ] || exit 0
if [ "${KADR_SKIP_CONTAINERS:-}" = 1 ]; then
    echo "test: KADR_SKIP_CONTAINERS=1: the cross-host fault suite did not run" >&2
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    scripts/test-containers.py
else
    echo "test: NOTE: no Docker daemon reachable: the cross-host fault suite (scripts/test-containers.py) did not run" >&2
fi
