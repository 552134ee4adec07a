#!/usr/bin/env python3
"""Before / after, side by side: runs the same Google Benchmark binaries from two build folders in turn, round after
round (before, after, before, after, ...), and prints per benchmark the median real and CPU time of each and their
ratio. Interleaving keeps the drift of a shared machine out of the comparison.

    python3 tools/bench_ab.py /tmp/before/bench build/bench --rounds 7 \
        --bench 'bench_selective_scan=BM_ScanForward/l:2048/threads:1/d:1536|BM_ScanBackward/l:2048/threads:1/' \
        --bench 'bench_scan_vs_attention=forward/mamba_block/l:(1024|4096)/|decode/mamba_block/ctx:4096/' \
        --bench 'bench_mamba=BM_MambaPrefill/128/|BM_MambaDecode/real_time'
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(binary, flt, min_time):
    out = subprocess.run([binary, f"--benchmark_filter={flt}", f"--benchmark_min_time={min_time}",
                          "--benchmark_format=json"], capture_output=True, text=True, check=True).stdout
    return [b for b in json.loads(out)["benchmarks"] if b.get("run_type") != "aggregate"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", help="folder holding the 'before' benchmark binaries")
    ap.add_argument("after", help="folder holding the 'after' benchmark binaries")
    ap.add_argument("--bench", action="append", required=True, metavar="BINARY=FILTER")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3, help="--benchmark_min_time per run, seconds")
    opt = ap.parse_args()
    sets = []
    for spec in opt.bench:
        name, sep, flt = spec.partition("=")
        if not sep:
            ap.error(f"--bench takes BINARY=FILTER, got {spec!r}")
        for folder in (opt.before, opt.after):
            if not os.access(os.path.join(folder, name), os.X_OK):
                ap.error(f"no executable {name} in {folder}")
        sets.append((name, flt))
    times = {}  # (binary, benchmark) -> {side: [(real, cpu, unit)]}
    for _ in range(opt.rounds):
        for name, flt in sets:
            for side, folder in (("before", opt.before), ("after", opt.after)):
                for b in run(os.path.join(folder, name), flt, opt.min_time):
                    times.setdefault((name, b["name"]), {}).setdefault(side, []).append(
                        (b["real_time"], b["cpu_time"], b["time_unit"]))
    for (_, bench), t in times.items():
        if "before" not in t or "after" not in t:
            continue
        med = {side: [statistics.median(x[i] for x in t[side]) for i in (0, 1)] for side in t}
        unit = t["before"][0][2]
        print(f"{bench:64s} real {med['before'][0]:10.3f} -> {med['after'][0]:10.3f} {unit} "
              f"({med['after'][0] / med['before'][0]:.3f})   cpu {med['before'][1]:10.3f} -> {med['after'][1]:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
