#!/usr/bin/env python3
"""Compile gate for the CUDA kernels: ptxas resource usage against a committed budget.

Reads ptxas's -v report of every .cu of ssm::cuda (the build keeps it next to each object as <object>.ptxas,
through cmake/ptxas_report.sh; an object without one has its compile command, from the build's
compile_commands.json, replayed with -Xptxas=-v), parses it per kernel and architecture (registers, spill
stores / loads, stack frame, local memory, shared memory) and compares it with the budget file
(cuda/ptxas_budget.txt). Fails, printing the numbers, when a kernel spills, uses local memory or a stack
frame, exceeds its register or shared-memory budget, has no budget line, or a budget line matches no kernel.

    python3 tools/check_ptxas_budget.py --build-dir build            # the check (CI)
    python3 tools/check_ptxas_budget.py --build-dir build --write    # print a budget from the current figures
    python3 tools/check_ptxas_budget.py --ptxas-log saved.log        # check a saved ptxas -v report
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BUDGET = os.path.join(ROOT, "cuda", "ptxas_budget.txt")

RE_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
RE_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
RE_USED = re.compile(r"Used (\d+) registers")
RE_SMEM = re.compile(r"(\d+) bytes smem")
RE_LMEM = re.compile(r"(\d+) bytes lmem")


def demangle(names):
    if not names or not shutil.which("c++filt"):
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.strip().split("\n")))


def parse_report(text):
    """ptxas -v text -> {(kernel, arch): {registers, spill_stores, spill_loads, stack, smem, lmem}}."""
    kernels = {}
    current = None
    for line in text.splitlines():
        m = RE_ENTRY.search(line)
        if m:
            current = (m.group(1), m.group(2))
            kernels[current] = dict(registers=0, spill_stores=0, spill_loads=0, stack=0, smem=0, lmem=0)
            continue
        if current is None:
            continue
        k = kernels[current]
        m = RE_PROPS.search(line)
        if m:
            k["stack"], k["spill_stores"], k["spill_loads"] = (int(g) for g in m.groups())
            continue
        m = RE_USED.search(line)
        if m:
            k["registers"] = int(m.group(1))
            s = RE_SMEM.search(line)
            k["smem"] = int(s.group(1)) if s else 0
            lm = RE_LMEM.search(line)
            k["lmem"] = int(lm.group(1)) if lm else 0
            current = None
    names = demangle(sorted({n for n, _ in kernels}))
    return {(names[n], arch): v for (n, arch), v in kernels.items()}


def compile_reports(build_dir):
    db_path = os.path.join(build_dir, "compile_commands.json")
    if not os.path.exists(db_path):
        sys.exit(f"check_ptxas_budget: {db_path} not found (configure with CUDA on; ssm_cuda exports it)")
    with open(db_path) as f:
        entries = [e for e in json.load(f) if e["file"].endswith(".cu")]
    if not entries:
        sys.exit("check_ptxas_budget: no .cu files in compile_commands.json")
    text = ""
    with tempfile.TemporaryDirectory() as tmp:
        for i, e in enumerate(entries):
            args = shlex.split(e["command"]) if "command" in e else list(e["arguments"])
            obj = e.get("output") or (args[args.index("-o") + 1] if "-o" in args else None)
            obj_path = os.path.join(e["directory"], obj) if obj else None
            saved = obj_path + ".ptxas" if obj_path else None
            if saved and os.path.exists(saved) and os.path.exists(obj_path) \
                    and os.path.getmtime(saved) >= os.path.getmtime(obj_path) - 1:
                with open(saved) as f:
                    text += f.read()  # empty for a .cu without kernels
                continue
            # No report kept by the build (built before cmake/ptxas_report.sh, or stale): compile again.
            while os.path.basename(args[0]) in ("bash", "ccache", "ptxas_report.sh"):
                args = args[1:]
            cleaned, skip = [], 0
            for a in args:
                if skip:
                    skip -= 1
                    continue
                if a in ("-o", "-MT", "-MF"):
                    skip = 1
                    continue
                if a == "-MD":
                    continue
                cleaned.append(a)
            cleaned += ["-o", os.path.join(tmp, f"{i}.o"), "-Xptxas=-v"]
            r = subprocess.run(cleaned, cwd=e["directory"], capture_output=True, text=True)
            text += r.stdout + r.stderr
            if r.returncode != 0:
                print(r.stdout + r.stderr, file=sys.stderr)
                sys.exit(f"check_ptxas_budget: compiling {e['file']} failed (a spill or local-memory use is an error)")
    return text


def read_budget(path):
    budget = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 3)
            if len(parts) != 4:
                sys.exit(f"{path}:{lineno}: expected 'arch max_registers max_smem_bytes kernel'")
            arch, regs, smem, kernel = parts
            budget[(kernel, arch)] = (int(regs), int(smem))
    return budget


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", help="a configured build directory with ssm::cuda")
    ap.add_argument("--ptxas-log", help="check a saved ptxas -v report instead of compiling")
    ap.add_argument("--budget", default=DEFAULT_BUDGET)
    ap.add_argument("--write", action="store_true", help="print a budget file for the current figures")
    opt = ap.parse_args()
    if bool(opt.build_dir) == bool(opt.ptxas_log):
        ap.error("give exactly one of --build-dir and --ptxas-log")
    text = open(opt.ptxas_log).read() if opt.ptxas_log else compile_reports(opt.build_dir)
    report = parse_report(text)
    if not report:
        sys.exit("check_ptxas_budget: the ptxas report names no kernel")

    print(f"{'arch':6} {'regs':>5} {'spill st/ld':>11} {'stack':>6} {'lmem':>5} {'smem':>6}  kernel")
    for (kernel, arch), k in sorted(report.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        print(f"{arch:6} {k['registers']:5} {k['spill_stores']:5}/{k['spill_loads']:<5} {k['stack']:6} {k['lmem']:5} "
              f"{k['smem']:6}  {kernel}")
    if opt.write:
        print("\n# arch  max_registers  max_smem_bytes  kernel (demangled)")
        for (kernel, arch), k in sorted(report.items()):
            print(f"{arch} {k['registers']} {k['smem']} {kernel}")
        return 0

    budget = read_budget(opt.budget)
    problems = []
    for (kernel, arch), k in sorted(report.items()):
        where = f"{kernel} [{arch}]"
        if k["spill_stores"] or k["spill_loads"]:
            problems.append(f"{where}: spills {k['spill_stores']} bytes stores / {k['spill_loads']} bytes loads (budget 0)")
        if k["stack"]:
            problems.append(f"{where}: {k['stack']} bytes stack frame (budget 0)")
        if k["lmem"]:
            problems.append(f"{where}: {k['lmem']} bytes local memory (budget 0)")
        if (kernel, arch) not in budget:
            problems.append(f"{where}: no budget line in {opt.budget} (uses {k['registers']} registers, "
                            f"{k['smem']} bytes smem)")
            continue
        max_regs, max_smem = budget[(kernel, arch)]
        if k["registers"] > max_regs:
            problems.append(f"{where}: {k['registers']} registers, budget {max_regs}")
        if k["smem"] > max_smem:
            problems.append(f"{where}: {k['smem']} bytes shared memory, budget {max_smem}")
    for key in sorted(set(budget) - set(report)):
        problems.append(f"{key[0]} [{key[1]}]: budget line matches no compiled kernel (stale?)")
    if problems:
        print("\nptxas budget check FAILED:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    print(f"\nptxas budget check passed: {len(report)} kernel/arch pairs within {os.path.relpath(opt.budget, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
