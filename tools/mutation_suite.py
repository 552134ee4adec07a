#!/usr/bin/env python3
"""The CUDA emulation's mutation suite: every committed fault must be caught.

Reads tests/cuda_emu/mutations.json. For each mutation it copies the sources (include/, cuda/, tests/ without
the test data) into a scratch folder, replaces the mutation's `find` text (which must occur exactly once) in its
`file` by `replace`, compiles the mutation's test `sources` alone with gtest_main (g++ -O1: small, quick builds;
through ccache when present, so a text compiled before, mutated or not, is not compiled again),
runs them with the gtest `filter`, and counts the mutation as caught when the run fails and its output contains
`expect` (the finding's name, e.g. global_race). The unmutated sources are built and run the same way first: they
must pass, or the suite proves nothing. Exits non-zero unless every mutation is caught.

    python3 tools/mutation_suite.py [--jobs N] [--only SUBSTRING] [--keep DIR] [--instances LIB]

--instances names a built libssm_instances.a (the CPU kernels compiled once, include/ssm/core/instances.hpp) made with
-march=native: the test sources then compile with SSM_EXTERN_INSTANCES=1 and link it instead of compiling every CPU
kernel they name again (the mutations are in cuda/ only, which the library does not contain), and the emulated
backend's launchers and its table of entry points come from cuda/emu/instances/*.cpp, compiled in the tree: only the
mutated family's file and the table (instances/backend.cpp) are compiled again, and a test source that only installs
the backend (cuda/emu/backend.hpp) includes no kernel, so it is a ccache hit (cuda/emu/launch_instances.hpp).
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIST = os.path.join(ROOT, "tests", "cuda_emu", "mutations.json")
CXX = os.environ.get("CXX", "g++")
CCACHE = [shutil.which("ccache")] if shutil.which("ccache") else []
FLAGS = ["-std=c++20", "-O1", "-g0", "-march=native", "-DNDEBUG", "-pthread", "-isystem", "/usr/include/eigen3"]


def copy_sources(dst):
    for sub in ("include", "cuda", "tests"):
        shutil.copytree(os.path.join(ROOT, sub), os.path.join(dst, sub),
                        ignore=shutil.ignore_patterns("data", "*.o", "build*"))


def instance_sources(tree):
    """The emulated launchers' family files and the backend's table (cuda/emu/instances/*.cpp)."""
    folder = os.path.join(tree, "cuda", "emu", "instances")
    return sorted(os.path.join("cuda", "emu", "instances", f) for f in os.listdir(folder) if f.endswith(".cpp"))


def compile_one(tree, src, obj, instances):
    # Compiled in the tree with relative paths only (the test data through a link), through ccache when present with
    # the tree as its base directory: a tree whose text was compiled before (a previous run, CI's clone) is not
    # compiled again; a mutation changes the text, so its object is its own.
    env = dict(os.environ, CCACHE_BASEDIR=tree, CCACHE_NOHASHDIR="true")
    # -Itests: the tests' shared helpers (tests/support/), as CMake gives every test target.
    cmd = [*CCACHE, CXX, *FLAGS, "-Iinclude", "-Icuda", "-Itests", '-DSSM_TEST_DATA_DIR="tests/data"', "-c", src, "-o",
           obj]
    if instances:
        cmd[-4:-4] = ["-DSSM_EXTERN_INSTANCES=1"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)


def build_and_run(tree, sources, filter_, tag, instances):
    os.symlink(os.path.join(ROOT, "tests", "data"), os.path.join(tree, "tests", "data"))
    objects = []
    if instances:  # the emulated launchers from their family files: a family whose kernels are unchanged is a hit
        sources = [*sources, *instance_sources(tree)]
    for k, src in enumerate(sources):
        obj = f"obj_{tag}_{k}.o"
        c = compile_one(tree, src, obj, instances)
        if c.returncode != 0:
            return None, c.stderr[-4000:]
        objects.append(obj)
    exe = f"mutant_{tag}"
    libs = [instances] if instances else []
    c = subprocess.run([CXX, "-pthread", *objects, *libs, "-o", exe, "-lgtest", "-lgtest_main"], capture_output=True,
                       text=True, cwd=tree)
    if c.returncode != 0:
        return None, c.stderr[-4000:]
    try:
        r = subprocess.run([os.path.join(tree, exe), f"--gtest_filter={filter_}", "--gtest_brief=1"],
                           capture_output=True, text=True, timeout=900, cwd=tree)
    except subprocess.TimeoutExpired:
        return 124, "timed out after 900 s"  # reported as not caught: `expect` is not in this output
    return r.returncode, r.stdout + r.stderr


def apply(tree, m):
    path = os.path.join(tree, m["file"])
    text = open(path).read()
    count = text.count(m["find"])
    if count != 1:
        raise SystemExit(f"mutation '{m['name']}': its text occurs {count} times in {m['file']} (expected once)")
    open(path, "w").write(text.replace(m["find"], m["replace"]))


def run_one(i, m, scratch, baseline, instances):
    tree = os.path.join(scratch, f"{'base' if baseline else 'm'}{i}")
    copy_sources(tree)
    if not baseline:
        apply(tree, m)
    t0 = time.time()
    rc, out = build_and_run(tree, m["sources"], m["filter"], i, instances)
    return i, rc, out, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default="", help="run the mutations whose name contains this")
    ap.add_argument("--keep", default="", help="scratch folder to keep (default: a temporary one, removed)")
    ap.add_argument("--instances", default="", help="a libssm_instances.a built with -march=native, linked instead "
                    "of compiling the CPU kernels in every test source")
    args = ap.parse_args()
    instances = os.path.abspath(args.instances) if args.instances else ""
    if instances and not os.path.isfile(instances):
        raise SystemExit(f"--instances: no such library: {instances}")
    mutations = [m for m in json.load(open(LIST))["mutations"] if args.only in m["name"]]
    scratch = args.keep or tempfile.mkdtemp(prefix="ssm-mutants-")
    os.makedirs(scratch, exist_ok=True)
    start = time.time()
    failures = []
    try:
        # The unmutated builds first: one per distinct set of sources, running every filter used with it; each must
        # pass.
        bases = {}
        for m in mutations:
            b = bases.setdefault(tuple(m["sources"]), {"sources": m["sources"], "filters": []})
            if m["filter"] not in b["filters"]:
                b["filters"].append(m["filter"])
        for b in bases.values():
            b["filter"] = ":".join(b["filters"])
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            if instances and CCACHE:
                # The unmutated family files first, one per job, into the cache: every build below then finds them
                # there (without this, the first builds, which run at once, each compiled all of them).
                warm = os.path.join(scratch, "warm")
                copy_sources(warm)
                t0 = time.time()
                done = list(pool.map(lambda ks: compile_one(warm, ks[1], f"warm_{ks[0]}.o", instances),
                                     enumerate(instance_sources(warm))))
                bad = [c.stderr[-4000:] for c in done if c.returncode != 0]
                if bad:
                    raise SystemExit("the unmutated cuda/emu/instances files do not compile:\n" + bad[0])
                print(f"[ok] unmutated cuda/emu/instances/*.cpp compiled into the cache: {time.time() - t0:.0f} s",
                      flush=True)
            base_list = list(bases.values())
            for i, rc, out, secs in pool.map(lambda im: run_one(im[0], im[1], scratch, True, instances), enumerate(base_list)):
                m = base_list[i]
                ok = rc == 0
                print(f"[{'ok' if ok else 'FAIL'}] unmutated {' '.join(m['sources'])} ({m['filter']}): {secs:.0f} s",
                      flush=True)
                if not ok:
                    failures.append(f"unmutated {m['sources']} does not pass:\n{out}")
            if failures:
                raise SystemExit("\n".join(failures))
            for i, rc, out, secs in pool.map(lambda im: run_one(im[0], im[1], scratch, False, instances), enumerate(mutations)):
                m = mutations[i]
                caught = rc is not None and rc != 0 and m["expect"] in out
                why = "does not compile" if rc is None else ("passes" if rc == 0 else
                                                              f"fails without '{m['expect']}'")
                print(f"[{'caught' if caught else 'MISSED'}] {m['name']}: {secs:.0f} s"
                      + ("" if caught else f" ({why})"), flush=True)
                if not caught:
                    failures.append(f"{m['name']}: {why}\n{out[-3000:]}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{len(mutations) - len(failures)} of {len(mutations)} mutations caught in {time.time() - start:.0f} s")
    if failures:
        print("\n\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
