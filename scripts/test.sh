#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit and integration tests of every
# crate (the CLI's SIGKILL/resume tests, the AWS adapter against a local moto
# server, the simulator's pinned mutants and regression corpus among them),
# then the simulator's randomized fault sweep and a short coverage-guided
# search. Installs and starts what the tests need, and stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."

# A local SQS/S3 server (moto) for the AWS adapter's tests, stopped on exit.
echo "== moto"
# The AWS adapter's tests fail, rather than skip, without a server.
export TALLY_TEST_REQUIRE_MOTO=1
python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
TALLY_TEST_MOTO="$(scripts/moto.sh start target/moto)"
export TALLY_TEST_MOTO
trap 'scripts/moto.sh stop target/moto' EXIT
echo "moto at $TALLY_TEST_MOTO"

echo "== cargo test (workspace)"
cargo test --workspace --all-targets

# The simulator's randomized sweep: every scenario, fresh seeds each run
# (printed), within a fixed wall-clock budget. A violation fails the suite
# and prints the command that replays it. six-million.toml is not swept:
# it runs once below, at a tenth of its size. Two scenarios are swept a
# second time through production's AWS adapter and the AWS SDK
# (--transport sdk), which costs about four times as much per seed.
echo "== simulator sweep"
cargo build --release -p tally-sim
sim=target/release/tally-sim
base=${TALLY_SIM_SEED:-$(date +%s)}
budget=${TALLY_SIM_BUDGET_S:-300}
# Part of the budget goes to coverage-guided search (tally-sim explore) on
# the scenarios with the most kinds of fault, seeded like the sweep.
explore_scenarios=(scenarios/cloud-worst-case.toml scenarios/deletion-window.toml)
explore_per=20
sweeps=()
for s in scenarios/*.toml; do
    [ "$s" = scenarios/six-million.toml ] || sweeps+=("$s")
done
sdk_sweeps=(scenarios/cloud-worst-case.toml scenarios/lost-replies.toml)
per=$(( (budget - explore_per * ${#explore_scenarios[@]}) / (${#sweeps[@]} + 2 * ${#sdk_sweeps[@]}) ))
(( per > 0 )) || per=1
echo "seeds from $base, ${per} s per scenario (twice that for each through the SDK)"
status=0
for s in "${sweeps[@]}"; do
    "$sim" sweep --scenario "$s" --seeds "$base..$((base + 100000))" --budget-s "$per" || status=1
done
for s in "${sdk_sweeps[@]}"; do
    "$sim" sweep --scenario "$s" --transport sdk --seeds "$base..$((base + 100000))" --budget-s $((2 * per)) || status=1
done
echo "== simulator explore"
for s in "${explore_scenarios[@]}"; do
    "$sim" explore --scenario "$s" --seed "$base" --budget-s "$explore_per" || status=1
done

# The full-scale scenario at 600,000 jobs with a fresh seed: every key
# checked, crashes of every role, both queues deleted. Then the same
# scenario with the original flawed protocol, on a pinned seed, must be
# caught: the checker can fail at this scale too.
echo "== six-million scenario at 600,000 jobs"
"$sim" run --scenario scenarios/six-million.toml --jobs 600000 --seed "$base" || status=1
# The same scenario through the AWS SDK, at a size that fits CI.
"$sim" run --scenario scenarios/six-million.toml --jobs 200000 --transport sdk --seed "$base" || status=1
if "$sim" run --scenario scenarios/six-million.toml --jobs 60000 --seed 1 --policy naive; then
    echo "the naive protocol passed the six-million scenario: the checker missed it"
    status=1
fi
exit $status
