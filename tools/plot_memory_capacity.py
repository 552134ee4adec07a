#!/usr/bin/env python3
"""Plots the CSV of example_memory_capacity (mixer,n,load,error) as recall error against load N / dk, with the
sqrt((N - 1) / dk) crosstalk law, through gnuplot (Debian's `gnuplot-nox`), into a PNG.

Usage: python3 tools/plot_memory_capacity.py docs/memory/memory_capacity.csv docs/memory/recall.png [dk]
"""
import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, png = sys.argv[1], sys.argv[2]
    dk = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    if shutil.which("gnuplot") is None:
        print("gnuplot not found: apt-get install gnuplot-nox", file=sys.stderr)
        return 1
    series = {}
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            series.setdefault(row["mixer"], []).append((float(row["load"]), int(row["n"]), float(row["error"])))
    with tempfile.TemporaryDirectory() as tmp:
        plots = []
        for name, points in series.items():
            path = os.path.join(tmp, name + ".dat")
            with open(path, "w") as out:
                for load, _, err in points:
                    if err >= 1e-3:  # the axis starts at 1e-3; a series entirely below it is named in the key
                        out.write(f"{load} {err}\n")
            below = all(err < 1e-3 for _, _, err in points)
            title = name + (" (all < 1e-3, not drawn)" if below else "")
            if below:
                plots.append(f"NaN title '{title}'")
            else:
                plots.append(f"'{path}' using 1:2 with linespoints title '{title}'")
        law = os.path.join(tmp, "law.dat")
        loads = sorted({p[0] for pts in series.values() for p in pts})
        with open(law, "w") as out:
            for load in loads:
                out.write(f"{load} {math.sqrt(max(load * dk - 1, 0) / dk)}\n")
        plots.append(f"'{law}' using 1:2 with lines dashtype 2 lc rgb 'black' title 'sqrt((N-1)/dk)'")
        script = "\n".join([
            "set terminal pngcairo size 760,520 noenhanced",
            f"set output '{png}'",
            "set logscale xy",
            f"set xlabel 'load N / dk (dk = {dk})'",
            "set ylabel 'mean |v_hat - v| / |v|'",
            "set key right bottom box opaque",
            "set grid",
            "set yrange [1e-3:5]",
            "plot " + ", ".join(plots),
        ])
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
