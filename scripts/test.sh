#!/usr/bin/env bash
# Run kadr's whole test suite: installs what is missing (scripts/setup.sh), then `cargo test`.
# Tests start their own redis-server on a free loopback port (or use $REDIS_URL), load ONNX
# Runtime from .deps/, and skip the fixture conformance tests with a message when
# ../shared/fixtures is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The load generator is another crate of the workspace; its binary must exist for the tests.
cargo build --release --workspace --bins
cargo test --release --workspace "$@"
