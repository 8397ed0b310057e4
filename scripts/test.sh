#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit and integration tests of every
# crate (the CLI's SIGKILL/resume tests and the simulator's pinned mutants
# among them), then the simulator's randomized fault sweep. Installs and starts what the tests need, and stops
# it again.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace)"
cargo test --workspace --all-targets

# The simulator's randomized sweep: every scenario, fresh seeds each run
# (printed), within a fixed wall-clock budget. A violation fails the suite
# and prints the command that replays it.
echo "== simulator sweep"
cargo build -p tally-sim
base=${TALLY_SIM_SEED:-$(date +%s)}
budget=${TALLY_SIM_BUDGET_S:-300}
scenarios=(scenarios/*.toml)
per=$(( budget / ${#scenarios[@]} ))
echo "seeds from $base, ${per} s per scenario"
status=0
for s in "${scenarios[@]}"; do
    target/debug/tally-sim sweep --scenario "$s" --seeds "$base..$((base + 100000))" --budget-s "$per" || status=1
done
exit $status
