#!/usr/bin/env python3
"""Runs a Google Benchmark binary several times in turn and prints, per benchmark, the median and the minimum of
its real time over the rounds. On a shared machine whose speed drifts by tens of percent within minutes, rounds of
short runs, interleaved, compare benchmarks side by side better than one long run of each.

    python3 tools/bench_rounds.py build/bench/bench_selective_scan --rounds 7 \
        --filter 'BM_Scan(Forward|Backward)[A-Za-z]*/l:(2048|8192)/' --min-time 0.3 \
        --counters frac_of_limit,frac_of_limit_cpu,cpu_util
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--filter", default=".")
    ap.add_argument("--min-time", type=float, default=0.3, help="--benchmark_min_time per run, seconds")
    ap.add_argument("--counters", default="",
                    help="comma-separated user counters whose medians over the rounds are printed too, e.g. "
                         "frac_of_limit,frac_of_limit_cpu,cpu_util")
    opt = ap.parse_args()
    if opt.rounds < 1:
        ap.error("--rounds must be at least 1")
    if not os.access(opt.binary, os.X_OK):
        ap.error(f"binary: {opt.binary} is not an executable file (build it first: scripts/build.sh build)")
    counters = [c for c in opt.counters.split(",") if c]
    times, units, order, values = {}, {}, [], {}
    for r in range(opt.rounds):
        out = subprocess.run([opt.binary, f"--benchmark_filter={opt.filter}", f"--benchmark_min_time={opt.min_time}",
                              "--benchmark_format=json"], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"bench_rounds: {opt.binary} failed in round {r + 1}:\n{out.stderr}")
        if not out.stdout.strip():  # Google Benchmark prints nothing on stdout when the filter matches nothing
            sys.exit(f"bench_rounds: the filter {opt.filter!r} matched no benchmark of {opt.binary}")
        for b in json.loads(out.stdout)["benchmarks"]:
            if b.get("run_type", "iteration") != "iteration":
                continue
            name = b["name"]
            if name not in times:
                times[name] = []
                order.append(name)
            times[name].append(b["real_time"])
            for c in counters:
                if c in b:
                    values.setdefault((name, c), []).append(b[c])
            units[name] = b.get("time_unit", "ns")
    if not order:
        sys.exit("bench_rounds: the filter matched no benchmark")
    width = max(len(n) for n in order)
    print(f"{'benchmark':{width}}  {'median':>10}  {'min':>10}  unit  rounds" + "".join(f"  {c:>{max(10, len(c))}}" for c in counters))
    for name in order:
        v = times[name]
        medians = "".join(f"  {statistics.median(values[(name, c)]):{max(10, len(c))}.4g}" if (name, c) in values
                          else f"  {'-':>{max(10, len(c))}}" for c in counters)
        print(f"{name:{width}}  {statistics.median(v):10.4g}  {min(v):10.4g}  {units[name]:4}  {len(v)}" + medians)
    return 0


if __name__ == "__main__":
    sys.exit(main())
