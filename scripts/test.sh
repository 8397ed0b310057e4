#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit and integration tests of every
# crate (the CLI's SIGKILL/resume tests, the AWS adapter against a local moto
# server, the simulator's pinned mutants and regression corpus among them),
# then the simulator's randomized fault sweep. Installs and starts what the
# tests need, and stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."

# A local SQS/S3 server (moto) for the AWS adapter's tests, stopped on exit.
echo "== moto"
python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
TALLY_TEST_MOTO="$(scripts/moto.sh start target/moto)"
export TALLY_TEST_MOTO
trap 'scripts/moto.sh stop target/moto' EXIT
echo "moto at $TALLY_TEST_MOTO"

echo "== cargo test (workspace)"
cargo test --workspace --all-targets

# The simulator's randomized sweep: every scenario, fresh seeds each run
# (printed), within a fixed wall-clock budget. A violation fails the suite
# and prints the command that replays it.
echo "== simulator sweep"
cargo build --workspace --bins
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
