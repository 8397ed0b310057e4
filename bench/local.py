#!/usr/bin/env python3
"""Benchmark the embedded runtime against its peers on this machine.

Runs, interleaved and repeated, on the same trivial command (`echo N`):
  - xargs -P2            (no bookkeeping at all)
  - GNU Parallel -j2 --joblog  (a job log, like tally's ledger)
  - tally run --workers 2      (queue, ledger, results database)
and the built-in in-process experiment through the embedded queue.
Prints a Markdown table of medians and ratios for docs/BENCHMARKS.md.

Usage: python3 bench/local.py [--jobs 5000] [--inproc 200000] [--repeat 3]
                               [--tally PATH] [--peer PATH] [--no-parallel]

--tally runs that binary instead of building target/release/tally; --peer
adds another tally build's rows (say, the commit before a change), run
interleaved with the rest so both see the same machine.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TALLY = os.path.join(ROOT, "target", "release", "tally")


def timed(argv, stdin_text=None, cwd=None):
    start = time.perf_counter()
    subprocess.run(argv, input=stdin_text, text=True, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--inproc", type=int, default=200000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tally", help="the tally binary to measure (default: build target/release/tally)")
    ap.add_argument("--peer", help="another tally binary, measured alongside")
    ap.add_argument("--no-parallel", action="store_true", help="leave GNU Parallel out")
    args = ap.parse_args()
    tally = args.tally
    if tally is None:
        subprocess.run(["cargo", "build", "--release", "-p", "tally"], cwd=ROOT, check=True)
        tally = TALLY
    for binary in filter(None, [tally, args.peer]):
        if not os.access(binary, os.X_OK):
            sys.exit(f"no tally binary at {binary}")
    if not args.no_parallel and shutil.which("parallel") is None:
        sys.exit("GNU Parallel is missing: apt-get install parallel (or --no-parallel)")
    work = tempfile.mkdtemp(prefix="tally-bench-")
    seq = "".join(f"{i}\n" for i in range(args.jobs))
    with open(os.path.join(work, "echo.toml"), "w") as f:
        f.write(f'name = "echo"\nruns = {args.jobs}\n[experiment]\ncommand = ["echo", "{{run}}"]\n')
    with open(os.path.join(work, "inproc.toml"), "w") as f:
        f.write(f'name = "inproc"\nruns = {args.inproc}\n[experiment]\nbuiltin = "synthetic"\n')

    def fresh(name):
        path = os.path.join(work, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def tally_rows(binary, label):
        return {
            f"{label} run --workers 2": lambda: timed(
                [binary, "run", "echo.toml", "--data", fresh("d-echo"), "--workers", "2"], cwd=work),
            f"{label} in-process": lambda: timed(
                [binary, "run", "inproc.toml", "--data", fresh("d-inproc"), "--workers", "2"], cwd=work),
        }

    runs = {"xargs -P2": lambda: timed(["xargs", "-P2", "-I{}", "echo", "{}"], seq)}
    if not args.no_parallel:
        runs["parallel -j2 --joblog"] = lambda: timed(
            ["parallel", "-j2", "--joblog", fresh("joblog"), "echo", "{}"], seq)
    runs.update(tally_rows(tally, "tally"))
    if args.peer:
        runs.update(tally_rows(args.peer, "peer"))
    times = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, fn in runs.items():
            times[name].append(fn())
    shutil.rmtree(work, ignore_errors=True)
    xargs_rate = args.jobs / statistics.median(times["xargs -P2"])
    print(f"| runner | jobs | median wall s | jobs/s | vs xargs -P2 |")
    print(f"|---|---:|---:|---:|---:|")
    for name, ts in times.items():
        n = args.inproc if name.endswith("in-process") else args.jobs
        med = statistics.median(ts)
        rate = n / med
        print(f"| {name} | {n} | {med:.2f} | {rate:,.0f} | {rate / xargs_rate:.2f}x |")
    print(f"\n{args.repeat} interleaved repeats; nproc={os.cpu_count()}; load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
