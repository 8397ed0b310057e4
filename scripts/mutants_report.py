#!/usr/bin/env python3
"""Summarize a cargo-mutants run against the explained list.

    mutants_report.py MUTANTS_OUT [MUTANTS_OUT ...] EXPLAINED [--markdown] [--whole] [--list=FILE]

MUTANTS_OUT is a cargo-mutants mutants.out directory (several are merged,
a later run's outcome for a mutant replacing an earlier one's; with
--list=FILE, only the mutants FILE names count, as often as it names them); EXPLAINED lists, one
per line, a missed mutant's name without line and column, then " # " and
why it cannot matter (and, on lines "examined PATH", the files whose every
mutant has been judged). Prints the counts by area and every missed mutant,
explained or not, and exits 1 when a missed mutant is not explained. With
--whole (a run of every mutant), it also names entries of the list that
were not missed: caught now, or no longer generated.
"""

import json
import re
import sys
from collections import Counter, defaultdict

KINDS = {
    "CaughtMutant": "caught",
    "MissedMutant": "missed",
    "Unviable": "unviable",
    "Timeout": "timeout",
}


def bare(name):
    """A mutant's name without its line and column."""
    return re.sub(r"^([^:]+):\d+:\d+:", r"\1:", name)


def area(path):
    if path.startswith("runtime/src/core/"):
        return "core"
    if path.startswith("runtime/src/adapters/"):
        return "adapters"
    return "sweep.rs"


def load_explained(path):
    explained = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("examined "):
                continue
            name, sep, why = line.partition(" # ")
            if not sep or not why.strip():
                sys.exit(f"{path}:{n}: an entry is a mutant's name, ' # ', and the reason it cannot matter")
            explained[name.strip()] = why.strip()
    return explained


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 2:
        sys.exit(__doc__)
    markdown = "--markdown" in sys.argv
    # Each run's outcomes by a mutant's name without line and column, so
    # runs on earlier commits still match; several mutants can share one.
    runs = []
    for out in args[:-1]:
        with open(f"{out}/outcomes.json", encoding="utf-8") as f:
            run = defaultdict(list)
            for o in json.load(f)["outcomes"]:
                scenario = o["scenario"]
                if isinstance(scenario, dict) and "Mutant" in scenario:
                    m = scenario["Mutant"]
                    run[bare(m["name"])].append((m["file"], KINDS.get(o["summary"], o["summary"])))
            runs.append(run)
    # The mutants to judge: those the runtime has now (--list FILE, as
    # `mutants.sh --list` prints them), or else every one any run tried.
    listing = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--list=")), None)
    if listing:
        with open(listing, encoding="utf-8") as f:
            wanted = Counter(line.strip() for line in f if line.strip())
    else:
        wanted = Counter()
        for run in runs:
            for name, got in run.items():
                wanted[name] = max(wanted[name], len(got))
    explained = load_explained(args[-1])
    counts = defaultdict(Counter)
    missed = []
    for name, many in sorted(wanted.items()):
        # The latest run's outcomes for this name first, then older ones.
        got = [o for run in reversed(runs) for o in run.get(name, [])][:many]
        path = name.split(":", 1)[0]
        for _, kind in got:
            counts[area(path)][kind] += 1
            if kind == "missed" and name not in missed:
                missed.append(name)
        counts[area(path)]["not run"] += many - len(got)
    rows = []
    for a in ("core", "adapters", "sweep.rs"):
        c = counts.get(a)
        if not c:
            continue
        viable = c["caught"] + c["missed"] + c["timeout"]
        score = 100.0 * (c["caught"] + c["timeout"]) / viable if viable else 0.0
        rows.append((a, sum(c.values()), c["caught"], c["missed"], c["unviable"], c["timeout"], c["not run"], score))
    if markdown:
        print("| area | mutants | caught | missed | unviable | timed out | not run yet | caught of viable run |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} | {r[7]:.1f}% |")
    else:
        for r in rows:
            print(f"{r[0]}: {r[1]} mutants, {r[2]} caught, {r[3]} missed, {r[4]} unviable, "
                  f"{r[5]} timed out, {r[6]} not run: {r[7]:.1f}% of viable mutants run caught")
    unexplained = [m for m in missed if m not in explained]
    for m in sorted(missed):
        why = explained.get(m)
        print(f"{'- ' if markdown else ''}missed: {m}" + (f" (explained: {why})" if why else " (NOT EXPLAINED)"))
    stale = [name for name in explained if "--whole" in sys.argv and name not in missed]
    for name in stale:
        print(f"explained but not missed (caught now, or gone): {name}")
    if unexplained:
        print(f"{len(unexplained)} missed mutant(s) not in {args[-1]}: catch them with a test, "
              "or explain why they cannot matter")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
