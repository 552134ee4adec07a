#!/usr/bin/env python3
"""The training tables of the README (docs/training.md, "The papers' tasks"), reproduced with example_train.

Each run is example_train on one thread; --jobs runs that many at once (one core each). Every run writes
DIR/<table>/<run>/train.json (and cmd.txt, its command: a run whose directory holds both with the same command is not
run again); the table printed at the end (markdown) reads the accuracy from the evaluation of each run on fresh batches
and the time from the run's own clock. MQAR is run at each learning rate of MQAR_LRS and a cell shows the best, as
Zoology reports the best of a learning-rate sweep.

Usage: tools/train_tables.py --bin build/examples/example_train [--table mqar|induction|selective|all] [--out DIR]
       [--jobs 2] [--mixers m1,m2]   (--mixers: only those rows, e.g. a mixer added since the last run)
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys

# MQAR (Zoology, Arora et al. 2023): accuracy against width. 64 tokens: 16 key-value pairs (keys from 32, values from
# 32), then 32 queries; 2 layers; 1500 steps of 32 sequences (3M tokens) at each learning rate of MQAR_LRS.
MQAR_MIXERS = ["attention", "mamba", "mamba2", "gated_deltanet", "gla", "retnet", "rwkv7", "rwkv4", "hyena",
               "striped_hyena", "s4d_layer", "s4_layer"]
MQAR_WIDTHS = [32, 64, 128]
MQAR_LRS = ["1e-3", "3e-3"]
MQAR_ARGS = ["--task", "mqar", "--layers", "2", "--vocab", "64", "--len", "64", "--batch", "32", "--steps", "1500",
             "--warmup", "100", "--eval-lens", "64", "--eval-batches", "8"]

# Induction heads (Mamba, Gu & Dao 2023, Table 2): vocabulary 16, 2 layers of width 64, trained at one length and
# evaluated at longer ones.
INDUCTION_MIXERS = ["attention", "mamba", "mamba2", "gated_deltanet", "gla", "rwkv7"]
INDUCTION_TRAIN_LEN = 64
INDUCTION_EVAL_LENS = [64, 256, 1024, 4096, 16384]
INDUCTION_ARGS = ["--task", "induction", "--layers", "2", "--d", "64", "--vocab", "16", "--len",
                  str(INDUCTION_TRAIN_LEN), "--batch", "32", "--steps", "4000", "--lr", "3e-3", "--warmup", "200",
                  "--eval-lens", ",".join(map(str, INDUCTION_EVAL_LENS)), "--eval-batches", "2"]

# Selective copying (Mamba, Table 1): 16 data tokens (vocabulary 16: noise, 14 data tokens, the marker) among noise in
# the first 112 positions, to be repeated in order after 16 markers; 2 layers of width 64, 8000 steps of 32 sequences
# (at 4000 both S6 rows were still climbing, and their order was the reverse of the paper's). The four rows are one
# block (layers::MambaBlock) with the gate on or off and the SSM selective (S6) or time-invariant (S4D-Real).
SELECTIVE_ROWS = [("s4d", "no gate", "S4D-Real", "18.3 (S4)"), ("s6", "no gate", "S6", "97.0"),
                  ("mamba_s4d", "Mamba", "S4D-Real", "56.4 (S4)"), ("mamba", "Mamba", "S6", "99.8")]
SELECTIVE_ARGS = ["--task", "selective_copy", "--layers", "2", "--d", "64", "--vocab", "16", "--len", "128",
                  "--batch", "32", "--steps", "8000", "--lr", "3e-3", "--warmup", "200", "--eval-lens", "128",
                  "--eval-batches", "8"]


def rows(table, keep):
    """(table, name, example_train arguments) of every row of `table` whose mixer keep(mixer) accepts."""
    out = []
    if table in ("mqar", "all"):
        for m in filter(keep, MQAR_MIXERS):
            for d in MQAR_WIDTHS:
                for lr in MQAR_LRS:
                    out.append(("mqar", f"{m}_d{d}_lr{lr}", ["--mixer", m, "--d", str(d), "--heads",
                                                             "4" if d >= 64 else "2", "--lr", lr] + MQAR_ARGS))
    if table in ("induction", "all"):
        for m in filter(keep, INDUCTION_MIXERS):
            out.append(("induction", m, ["--mixer", m, "--heads", "4"] + INDUCTION_ARGS))
    if table in ("selective", "all"):
        for m in filter(keep, [r[0] for r in SELECTIVE_ROWS]):
            out.append(("selective", m, ["--mixer", m] + SELECTIVE_ARGS))
    return out


def run(binary, out_dir, row):
    table, name, args = row
    d = os.path.join(out_dir, table, name)
    os.makedirs(d, exist_ok=True)
    cmd = [binary] + args + ["--threads", "1", "--out", d]
    done = os.path.join(d, "cmd.txt")
    if not (os.path.exists(done) and open(done).read() == " ".join(cmd[1:]) and
            os.path.exists(os.path.join(d, "train.json"))):
        with open(os.path.join(d, "log.txt"), "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({rc}); see {d}/log.txt")
        with open(done, "w") as f:
            f.write(" ".join(cmd[1:]))
    with open(os.path.join(d, "train.json")) as f:
        return row, cmd, json.load(f)


def command_line(cmd):
    return "example_train " + " ".join(cmd[1:-2])  # without the binary's path and --out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="path of example_train")
    ap.add_argument("--table", default="all", choices=["mqar", "induction", "selective", "all"])
    ap.add_argument("--out", default="train_tables")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--mixers", default="", help="comma-separated: run and print only these mixers' rows")
    a = ap.parse_args()
    only = set(filter(None, a.mixers.split(",")))
    keep = (lambda m: m in only) if only else (lambda m: True)
    todo = rows(a.table, keep)
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for row, cmd, r in pool.map(lambda row: run(a.bin, a.out, row), todo):
            results[(row[0], row[1])] = (cmd, r)
            acc = ", ".join(f"{e['length']}: {e['accuracy']:.3f}" for e in r["eval"])
            print(f"{row[0]} {row[1]}: {acc} ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    if a.table in ("mqar", "all") and any(map(keep, MQAR_MIXERS)):
        print("| mixer | " + " | ".join(f"d = {d}" for d in MQAR_WIDTHS) + " | seconds (each width, all its runs) |")
        print("|---|" + "---|" * (len(MQAR_WIDTHS) + 1))
        for m in filter(keep, MQAR_MIXERS):
            cells, secs = [], []
            for d in MQAR_WIDTHS:
                runs = [(results[("mqar", f"{m}_d{d}_lr{lr}")][1], lr) for lr in MQAR_LRS]
                best, lr = max(runs, key=lambda x: x[0]["eval"][0]["accuracy"])
                cells.append(f"{100 * best['eval'][0]['accuracy']:.1f} ({lr})")
                secs.append(f"{sum(r['seconds'] for r, _ in runs):.0f}")
            print(f"| {m} | " + " | ".join(cells) + " | " + " / ".join(secs) + " |")
        first = next(filter(keep, MQAR_MIXERS))
        cmd, _ = results[("mqar", f"{first}_d{MQAR_WIDTHS[0]}_lr{MQAR_LRS[0]}")]
        print(f"\nRun command (mixer, width and learning rate varied): `{command_line(cmd)}`\n")
    if a.table in ("induction", "all") and any(map(keep, INDUCTION_MIXERS)):
        print("| mixer | " + " | ".join(str(l) for l in INDUCTION_EVAL_LENS) + " | seconds |")
        print("|---|" + "---|" * (len(INDUCTION_EVAL_LENS) + 1))
        for m in filter(keep, INDUCTION_MIXERS):
            cmd, r = results[("induction", m)]
            cells = [f"{100 * e['accuracy']:.1f}" for e in r["eval"]]
            print(f"| {m} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
        cmd, _ = results[("induction", next(filter(keep, INDUCTION_MIXERS)))]
        print(f"\nRow command (mixer varied): `{command_line(cmd)}`\n")
    if a.table in ("selective", "all") and any(keep(r[0]) for r in SELECTIVE_ROWS):
        print("| architecture | SSM | accuracy | the paper | seconds |")
        print("|---|---|---:|---:|---:|")
        for m, arch, layer, paper in filter(lambda r: keep(r[0]), SELECTIVE_ROWS):
            cmd, r = results[("selective", m)]
            print(f"| {arch} | {layer} | {100 * r['eval'][0]['accuracy']:.1f} | {paper} | {r['seconds']:.0f} |")
        cmd, _ = results[("selective", next(r[0] for r in SELECTIVE_ROWS if keep(r[0])))]
        print(f"\nRow command (mixer varied): `{command_line(cmd)}`")


if __name__ == "__main__":
    main()
