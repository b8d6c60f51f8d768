#!/usr/bin/env bash
# Run kadr's whole test suite: installs what is missing (scripts/setup.sh), then `cargo test`.
# Tests start their own redis-server on a free loopback port (or use $REDIS_URL), load ONNX
# Runtime from .deps/, and skip the fixture conformance tests with a message when
# ../shared/fixtures is absent. Run without arguments, it then runs the cross-host fault suite
# (scripts/test-containers.py: the compose cluster under kills, partitions, pauses, a Redis
# restart and a rolling restart) wherever a Docker daemon answers, and says so where none does.
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
