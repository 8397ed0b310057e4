#!/usr/bin/env python3
"""Benchmark the simulator at growing scale.

Runs `tally-sim run` on one scenario (by default the six-million one) at
each size given, repeated and interleaved, and reports per size the median
wall time, jobs per wall-second, simulated seconds per wall-second and peak
resident memory, plus the ratio to the smallest size (cost should grow
linearly). Every run must PASS; a failing run stops the benchmark.

With --peer BIN, the same runs are made with a second build of tally-sim,
interleaved with the first, and the table gains the ratio between the two:
the way to measure a change on a noisy machine.

With --floor [BIN], the bare-turmoil floor (sim/examples/floor.rs: one
queue host, worker hosts of pollers, batched fetch and acknowledge, nothing
else) runs at each size too, interleaved with the tally-sim runs, and the
table gains the floor's median wall time and tally-sim's ratio to it.

Usage:
  python3 bench/sim.py [--jobs 60000,600000,6000000] [--repeat 3]
                       [--scenario scenarios/six-million.toml] [--seed 1]
                       [--bin target/release/tally-sim] [--peer OTHER]
                       [--floor [target/release/examples/floor]]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"(PASS|FAIL) \((\d+) jobs, (\d+) faults, ([\d.]+) sim s")
FLOOR_LINE = re.compile(r"(PASS|FAIL) floor: (\d+) jobs, ([\d.]+) sim s")
FLOOR_BIN = os.path.join(ROOT, "target", "release", "examples", "floor")


def run_once(binary, scenario, jobs, seed, policy):
    """One run: (verdict, simulated seconds, wall seconds, peak RSS KiB, output)."""
    argv = [binary, "run", "--scenario", scenario, "--jobs", str(jobs), "--seed", str(seed),
            "--policy", policy]
    with tempfile.TemporaryFile(mode="w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        # wait4 gives this child's own peak RSS (KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    m = LINE.search(text)
    if not m:
        sys.exit(f"no result line from {' '.join(argv)}:\n{text}")
    return m.group(1), float(m.group(4)), wall, usage.ru_maxrss, text


def run_floor(binary, jobs, seed):
    """One run of the floor program: (wall seconds, peak RSS KiB); it must pass."""
    argv = [binary, "--jobs", str(jobs), "--seed", str(seed)]
    with tempfile.TemporaryFile(mode="w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    m = FLOOR_LINE.search(text)
    if not m or m.group(1) != "PASS" or os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"the floor failed: {' '.join(argv)}:\n{text}")
    return wall, usage.ru_maxrss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", default="60000,600000,6000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenario", default=os.path.join(ROOT, "scenarios", "six-million.toml"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--policy", default="real")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "tally-sim"))
    ap.add_argument("--peer", help="a second tally-sim build to compare against")
    ap.add_argument("--floor", nargs="?", const=FLOOR_BIN,
                    help="also run the bare-turmoil floor program (default: the built example)")
    args = ap.parse_args()
    if args.bin == os.path.join(ROOT, "target", "release", "tally-sim"):
        subprocess.run(["cargo", "build", "--release", "-p", "tally-sim"], cwd=ROOT, check=True)
    if args.floor == FLOOR_BIN:
        subprocess.run(["cargo", "build", "--release", "-p", "tally-sim", "--example", "floor"], cwd=ROOT,
                       check=True)
    bins = {"this": args.bin}
    if args.peer:
        bins["peer"] = args.peer
    sizes = [int(j) for j in args.jobs.split(",")]
    rows = {}
    for jobs in sizes:
        for r in range(args.repeat):
            for name, binary in bins.items():
                verdict, sim_s, wall, rss_kib, out = run_once(binary, args.scenario, jobs, args.seed, args.policy)
                print(f"{name} {jobs} jobs run {r + 1}: {verdict} {wall:.2f} s wall, {sim_s:.0f} sim s, "
                      f"{rss_kib / 1024:.0f} MiB", file=sys.stderr, flush=True)
                if verdict != "PASS" and args.policy == "real":
                    sys.exit(f"a run failed:\n{out}")
                rows.setdefault((name, jobs), []).append((wall, sim_s, rss_kib))
            if args.floor:
                wall, rss_kib = run_floor(args.floor, jobs, args.seed)
                print(f"floor {jobs} jobs run {r + 1}: {wall:.2f} s wall, {rss_kib / 1024:.0f} MiB",
                      file=sys.stderr, flush=True)
                rows.setdefault(("floor", jobs), []).append((wall, 0, rss_kib))
    print(f"\n{args.scenario}, seed {args.seed}, policy {args.policy}, medians of {args.repeat}\n")
    head = "| build | jobs | wall s | jobs / wall s | sim s / wall s | peak RSS MiB | wall vs smallest |"
    if args.peer:
        head += " wall vs peer |"
    if args.floor:
        head += " floor wall s | wall vs floor |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in bins:
        base = None
        for jobs in sizes:
            got = rows[(name, jobs)]
            wall = statistics.median(g[0] for g in got)
            sim_s = statistics.median(g[1] for g in got)
            rss = max(g[2] for g in got) / 1024
            base = base or (wall, jobs)
            scale = (wall / base[0]) / (jobs / base[1])
            line = (f"| {name} | {jobs:,} | {wall:.2f} | {jobs / wall:,.0f} | {sim_s / wall:.1f} | {rss:.0f} "
                    f"| {scale:.2f}x of linear |")
            if args.peer:
                other = statistics.median(g[0] for g in rows[("peer" if name == "this" else "this", jobs)])
                line += f" {wall / other:.2f} |"
            if args.floor:
                floor = statistics.median(g[0] for g in rows[("floor", jobs)])
                line += f" {floor:.3f} | {wall / floor:.1f}x |"
            print(line)


if __name__ == "__main__":
    main()
