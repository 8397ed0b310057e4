#!/usr/bin/env python3
"""Compare coverage-guided search with the uniform sweep on the planted bugs.

For each planted bug pinned in tests/sim/mutants.rs (scenario, policy), it
measures the runs and wall seconds until the first catch:
- the uniform sweep, `tally-sim sweep --first --json`, from seed bases
  0, 10000, 20000, ... (one sample each; wall seconds stop when the failing
  run ends, before its fingerprint's shrink);
- `tally-sim explore --json` with seeds 0, 1, 2, ...
and prints a Markdown table with every sample, the medians per bug and the
median over the bugs.

Usage:
  python3 bench/explore.py [--samples 5] [--more 11] [--budget-s 150]
                           [--bin target/release/tally-sim]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (scenario, policy, whether it takes more samples: the sweep needs more
# than a seed or two to catch it).
MUTANTS = [
    ("worker-crash", "naive", False),
    ("aggregator-crash", "naive", False),
    ("queue-deletion", "no-recreate", False),
    ("cloud-worst-case", "silent-dedupe", False),
    ("queue-deletion", "no-ledger", False),
    ("aggregator-crash", "eager-finish", False),
    ("expiry", "deletion-only", True),
    ("messy-experiments", "blind-conflicts", False),
    ("messy-experiments", "no-give-up", False),
    ("several-sweeps", "no-ledger", False),
    ("lagging-counts", "no-quiet", True),
    ("latent-duplicates", "complete-once", False),
    ("deletion-window", "resend-once", True),
    ("stale-handles", "abandon-lost-lease", True),
]


def run_json(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    return json.loads(out.stdout)


def sweep(bin_, scenario, policy, base, budget_s):
    v = run_json([bin_, "sweep", "--scenario", f"scenarios/{scenario}.toml", "--policy", policy,
                  "--seeds", f"{base}..{base + 100000}", "--first", "--budget-s", str(budget_s), "--json"])
    first = v.get("first_failure")
    return (first["runs"], first["wall_s"]) if first else (None, v["wall_s"])


def explore(bin_, scenario, policy, seed, budget_s, out):
    v = run_json([bin_, "explore", "--scenario", f"scenarios/{scenario}.toml", "--policy", policy,
                  "--seed", str(seed), "--budget-s", str(budget_s), "--out", out, "--json"])
    return (v["runs"] if v["failed"] else None, v["wall_s"])


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--more", type=int, default=11)
    ap.add_argument("--budget-s", type=int, default=150)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/tally-sim"))
    a = ap.parse_args()
    out = os.path.join(tempfile.mkdtemp(), "explore.toml")
    print("| scenario | planted bug | sweep: runs to catch | median runs | median s "
          "| explore: runs to catch | median runs | median s |")
    print("|---|---|---|---:|---:|---|---:|---:|")
    medians = []
    for scenario, policy, more in MUTANTS:
        n = a.more if more else a.samples
        s = [sweep(a.bin, scenario, policy, k * 10000, a.budget_s) for k in range(n)]
        e = [explore(a.bin, scenario, policy, k, a.budget_s, out) for k in range(n)]
        row = [median([r for r, _ in s]), median([w for r, w in s if r]),
               median([r for r, _ in e]), median([w for r, w in e if r])]
        medians.append(row)
        show = lambda xs: ", ".join("none" if r is None else str(r) for r, _ in xs)
        print(f"| {scenario} | {policy} | {show(s)} | {row[0]:g} | {row[1]:.1f} "
              f"| {show(e)} | {row[2]:g} | {row[3]:.1f} |")
    cols = list(zip(*medians))
    print(f"\nMedian over the planted bugs: sweep {median(cols[0]):g} runs, {median(cols[1]):.1f} s; "
          f"explore {median(cols[2]):g} runs, {median(cols[3]):.1f} s")


if __name__ == "__main__":
    main()
