#!/usr/bin/env bash
# Mutation testing of the runtime with cargo-mutants: every mutant of
# runtime/src/core/, runtime/src/adapters/ and runtime/src/sweep.rs must be
# caught by the tests (the unit and integration tests of the workspace, and
# a short simulator sweep on fixed seeds, tests/sim/sweep.rs), or be listed
# in docs/mutants-explained.txt with the reason it cannot matter.
#
#   scripts/mutants.sh                  every mutant (hours on two cores)
#   scripts/mutants.sh --shard K/N      shard K of N (0-based), e.g. 3/200
#   scripts/mutants.sh --random-shard N one shard of N, drawn at random
#   scripts/mutants.sh --sample S       a random shard of about S mutants
#   scripts/mutants.sh --list           list the mutants, run nothing
#   scripts/mutants.sh --core           only runtime/src/core/
#   scripts/mutants.sh --examined       only the files docs/mutants-explained.txt
#                                       lists as examined (every mutant judged);
#                                       CI runs --examined --random-shard N
#   scripts/mutants.sh --file PATH      only PATH (repeatable)
#   scripts/mutants.sh --exclude GLOB   not the files GLOB matches (repeatable)
#   scripts/mutants.sh --resume         skip the mutants the last run judged
#                                       (cargo mutants --iterate)
#
# Results go to target/mutants/mutants.out (outcomes.json, caught.txt,
# missed.txt, timeout.txt, unviable.txt). The script exits non-zero when a
# missed mutant is not on the explained list. The AWS tests skip without a
# moto server (TALLY_TEST_MOTO); with one they run too, and the whole suite
# then takes over 300 s, so the timeout grows to 600 s (a mutant no test
# catches must show as missed, not as timed out).
set -euo pipefail
cd "$(dirname "$0")/.."

version=27.1.0
if [ "$(cargo mutants --version 2>/dev/null)" != "cargo-mutants $version" ]; then
    echo "== installing cargo-mutants $version"
    cargo install --locked --quiet "cargo-mutants@$version"
fi

# A flag's value that must be a whole number above zero.
positive() {
    if ! [[ "${2:-}" =~ ^[1-9][0-9]{0,8}$ ]]; then
        echo "mutants.sh: $1 takes a whole number above zero, not '${2:-}'" >&2
        exit 2
    fi
    echo "$2"
}

# A flag's value, which must be there.
value() {
    if [ -z "${2:-}" ]; then
        echo "mutants.sh: $1 needs a value" >&2
        exit 2
    fi
    echo "$2"
}

files=(-f 'runtime/src/core/**' -f 'runtime/src/adapters/**' -f runtime/src/sweep.rs)
shard=()
excluded=()
resume=()
list=0
while [ $# -gt 0 ]; do
    case "$1" in
        --shard) shard=(--shard "$(value "$1" "${2:-}")"); shift 2 ;;
        --random-shard)
            n="$(positive "$1" "$2")"; shift 2
            shard=(--shard "$((RANDOM % n))/$n") ;;
        --sample) sample="$(positive "$1" "$2")"; shift 2 ;;
        --exclude) excluded+=(-e "$(value "$1" "${2:-}")"); shift 2 ;;
        --list) list=1; shift ;;
        --resume) resume=(--iterate); shift ;;
        --core) files=(-f 'runtime/src/core/**'); shift ;;
        --file)
            [ "${picked:-0}" = 1 ] || files=()
            picked=1; files+=(-f "$(value "$1" "${2:-}")"); shift 2 ;;
        --examined)
            files=()
            while read -r word path; do
                [ "$word" = examined ] && files+=(-f "$path")
            done < docs/mutants-explained.txt
            if [ ${#files[@]} -eq 0 ]; then
                echo "mutants.sh: docs/mutants-explained.txt lists no examined file" >&2
                exit 1
            fi
            shift ;;
        *) echo "mutants.sh: unknown argument '$1' (see the comment at the top)" >&2; exit 2 ;;
    esac
done

# Names without line and column, so the explained list survives edits
# elsewhere in a file.
common=(-p tally "${files[@]}" "${excluded[@]}" --line-col false)
if [ "$list" = 1 ]; then
    cargo mutants --list "${common[@]}"
    exit 0
fi
if [ -n "${sample:-}" ]; then
    count=$(cargo mutants --list "${common[@]}" | wc -l)
    n=$(( count / sample )); (( n > 0 )) || n=1
    shard=(--shard "$((RANDOM % n))/$n")
    echo "$count mutants; a random one of $n shards"
fi

out=target/mutants
mkdir -p "$out"
# The mutated tree is a copy; its build shares the workspace's target
# directory for the dependencies, so one mutant at a time (-j 1): two
# builds of the same crates there would overwrite each other's binaries.
# The baseline is the test suite itself, so it is skipped; the timeouts
# bound a mutant that makes a test hang.
# `--include-ignored` runs the fixed-seed simulator sweep.
timeout=300
[ -z "${TALLY_TEST_MOTO:-}" ] || timeout=600
echo "== cargo mutants ${shard[*]}"
rc=0
CARGO_TARGET_DIR="$PWD/target" cargo mutants "${common[@]}" "${shard[@]}" "${resume[@]}" \
    --jobs 1 --copy-target false --baseline skip --test-workspace true \
    --timeout "$timeout" --build-timeout 900 --output "$out" \
    -- -- --include-ignored || rc=$?
# A test binary that cargo mutants timed out can outlive it (a mutant's
# endless loop); kill whatever still runs from this tree's build.
pkill -9 -f "^$PWD/target/debug/" || true
# 2: some mutants missed, 3: some timed out; both are judged below.
case "$rc" in
    0 | 2 | 3) ;;
    *) echo "mutants.sh: cargo mutants failed (exit $rc)" >&2; exit 1 ;;
esac

results="$out/mutants.out"
[ -f "$results/outcomes.json" ] || { echo "mutants.sh: cargo mutants wrote no outcomes" >&2; exit 1; }
cargo mutants --list "${common[@]}" > "$out/list.txt"
python3 scripts/mutants_report.py "$results" docs/mutants-explained.txt --list="$out/list.txt"
