#!/usr/bin/env python3
"""Benchmark tally's AWS path against a local SQS/S3 server (moto).

Starts moto (scripts/moto.sh), then, repeated: `tally init`, `tally submit`
of JOBS synthetic jobs (no sleep), two `tally worker` processes and one
`tally aggregate`, polling `tally reconcile --json` until every job is
done. Reports jobs per second from submit to done, and where the CPU went:
the server's CPU seconds (from /proc) against the tally processes' own (from
wait4). When the server is near one full core while tally's processes are
mostly idle, the server, not tally, is the bound; the figure then measures
moto, not what SQS would sustain.

Needs `pip install 'moto[server]==5.2.5' boto3` (scripts/test.sh installs
moto) and a release build of tally (built here).

Usage: python3 bench/aws.py [--jobs 2000] [--repeat 3]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TALLY = os.path.join(ROOT, "target", "release", "tally")
STATE = os.path.join(ROOT, "target", "bench-moto")
ENV = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")


def cpu_seconds(pid):
    """User + system CPU seconds of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def reset(endpoint):
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset", method="POST")).read()


def one_run(endpoint, jobs, work):
    common = ["--backend", "aws", "--region", "us-east-1", "--bucket", "bench", "--queue-prefix", "bench",
              "--endpoint-url", endpoint, "--state-dir", os.path.join(work, "state")]
    reset(endpoint)
    import boto3
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket="bench")
    sweep = os.path.join(work, "sweep.toml")
    with open(sweep, "w") as f:
        f.write(f'name = "bench"\nruns = {jobs}\n[experiment]\nbuiltin = "synthetic"\n')

    def tally(*args, **kw):
        return subprocess.run([TALLY, *args, *common], env=ENV, capture_output=True, text=True, **kw)

    out = tally("init")
    if out.returncode != 0:
        sys.exit(f"tally init failed: {out.stderr}")
    moto_pid = int(open(os.path.join(STATE, "pid")).read())
    moto_cpu0 = cpu_seconds(moto_pid)
    start = time.perf_counter()
    out = tally("submit", sweep)
    if out.returncode != 0:
        sys.exit(f"tally submit failed: {out.stderr}")
    logs = open(os.path.join(work, "roles.log"), "w")
    roles = [subprocess.Popen([TALLY, "worker", "--concurrency", "4", "--wait-s", "1", *common],
                              env=ENV, stdout=logs, stderr=logs) for _ in range(2)]
    roles.append(subprocess.Popen([TALLY, "aggregate", "--segment-age-ms", "500", "--wait-s", "1", *common],
                                  env=ENV, stdout=logs, stderr=logs))
    deadline = start + 600
    while True:
        time.sleep(0.5)
        out = tally("reconcile", "--json")
        try:
            report = json.loads(out.stdout)
        except ValueError:
            report = {}
        if report.get("done") == jobs:
            break
        if time.perf_counter() > deadline:
            sys.exit(f"not done after 600 s: {out.stdout} {out.stderr}")
    wall = time.perf_counter() - start
    moto_cpu = cpu_seconds(moto_pid) - moto_cpu0
    tally_cpu = 0.0
    for p in roles:
        p.send_signal(signal.SIGTERM)
    for p in roles:
        _, _, usage = os.wait4(p.pid, 0)
        p.returncode = 0
        tally_cpu += usage.ru_utime + usage.ru_stime
    return wall, moto_cpu, tally_cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "tally"], cwd=ROOT, check=True)
    endpoint = subprocess.run([os.path.join(ROOT, "scripts", "moto.sh"), "start", STATE],
                              check=True, capture_output=True, text=True).stdout.strip()
    try:
        runs = []
        for r in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="tally-aws-bench-") as work:
                wall, moto_cpu, tally_cpu = one_run(endpoint, args.jobs, work)
            print(f"run {r + 1}: {wall:.1f} s, moto {moto_cpu:.1f} CPU s, tally roles {tally_cpu:.1f} CPU s",
                  file=sys.stderr, flush=True)
            runs.append((wall, moto_cpu, tally_cpu))
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "moto.sh"), "stop", STATE], check=False)
    wall = statistics.median(r[0] for r in runs)
    moto = statistics.median(r[1] for r in runs)
    mine = statistics.median(r[2] for r in runs)
    print(f"\n{args.jobs} jobs, 2 workers x 4 + 1 aggregator against moto, medians of {args.repeat}\n")
    print("| jobs | wall s | jobs / s | moto CPU s (share of wall) | tally roles CPU s (share of wall) |")
    print("|---|---|---|---|---|")
    print(f"| {args.jobs:,} | {wall:.1f} | {args.jobs / wall:,.0f} | {moto:.1f} ({moto / wall:.0%}) "
          f"| {mine:.1f} ({mine / wall:.0%}) |")


if __name__ == "__main__":
    main()
