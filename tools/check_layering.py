#!/usr/bin/env python3
"""The include order of the library, checked: core <- (cpu, math, reference, cuda host API) <- ops <- layers <- models
<- train.

A header of include/ssm/<folder>/ may include headers of its own folder and of lower folders only; the CUDA kernel
sources (cuda/kernels, cuda/emu) may include core and the cuda host API only. Also: no header tests a build macro
that could differ between the targets of one program (SSM_HAS_CUDA and the like), so that every translation unit
compiles the same inline functions. Prints each violation and exits 1 when there is any.

Usage: tools/check_layering.py [repository root]
"""
import pathlib
import re
import sys

LEVEL = {"core": 0, "cpu": 1, "math": 1, "reference": 1, "cuda": 1, "ops": 2, "layers": 3, "models": 4, "train": 5}
KERNEL_MAY_INCLUDE = {"core", "cuda"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"ssm/([^"]+)"', re.M)
BUILD_MACRO = re.compile(r"^\s*#\s*(?:if|ifdef|ifndef|elif)\b[^\n]*\bSSM_HAS_\w+[^\n]*", re.M)


def folder_of(include_path: str):
    parts = include_path.split("/")
    return parts[0] if len(parts) > 1 else None  # None: an umbrella header (ssm/ops.hpp)


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    problems = []
    headers = sorted((root / "include" / "ssm").rglob("*.hpp"))
    kernels = sorted(p for d in ("cuda/kernels", "cuda/emu") for p in (root / d).rglob("*") if p.suffix in (".cuh", ".hpp"))
    for path in headers + kernels:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root).as_posix()
        for m in BUILD_MACRO.finditer(text):
            problems.append(f"{rel}: tests a build macro: {m.group(0).strip()}")
        for m in INCLUDE.finditer(text):
            target = folder_of(m.group(1))
            if path in kernels:
                if target is None or target not in KERNEL_MAY_INCLUDE:
                    problems.append(f"{rel}: a kernel source includes ssm/{m.group(1)} (only core/ and cuda/ allowed)")
                continue
            source = folder_of(path.relative_to(root / "include" / "ssm").as_posix())
            if source is None:
                continue  # umbrella headers include anything
            if target is None:
                problems.append(f"{rel}: includes the umbrella header ssm/{m.group(1)}")
            elif LEVEL.get(target, 99) > LEVEL.get(source, -1):
                problems.append(f"{rel}: includes ssm/{m.group(1)}, a higher folder ({source} -> {target})")
    for p in problems:
        print(p)
    print(f"{len(headers)} headers and {len(kernels)} kernel sources checked: "
          f"{len(problems)} violation{'s' if len(problems) != 1 else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
