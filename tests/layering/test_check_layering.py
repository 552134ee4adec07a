#!/usr/bin/env python3
"""Self-test of tools/check_layering.py on small planted trees: a clean tree passes; an op including a layer, a
core header including an op, a kernel source including an op, and a header testing SSM_HAS_CUDA each fail, named."""
import os
import pathlib
import subprocess
import sys
import tempfile

CHECK = pathlib.Path(__file__).resolve().parent.parent.parent / "tools" / "check_layering.py"

CLEAN = {
    "include/ssm/core/tensor.hpp": '#pragma once\n#include "ssm/core/dtype.hpp"\n',
    "include/ssm/core/dtype.hpp": "#pragma once\n",
    "include/ssm/cpu/scan.hpp": '#pragma once\n#include "ssm/core/tensor.hpp"\n',
    "include/ssm/ops/scan.hpp": '#pragma once\n#include "ssm/cpu/scan.hpp"\n#include "ssm/core/tensor.hpp"\n',
    "include/ssm/layers/block.hpp": '#pragma once\n#include "ssm/ops/scan.hpp"\n',
    "include/ssm/models/lm.hpp": '#pragma once\n#include "ssm/layers/block.hpp"\n',
    "include/ssm/ssm.hpp": '#pragma once\n#include "ssm/models/lm.hpp"\n',
    "cuda/kernels/scan.cuh": '#pragma once\n#include "ssm/core/tensor.hpp"\n',
    "cuda/emu/emulation.hpp": "#pragma once\n",
}


def run(extra):
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in {**CLEAN, **extra}.items():
            path = pathlib.Path(tmp) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        r = subprocess.run([sys.executable, str(CHECK), tmp], capture_output=True, text=True)
        return r.returncode, r.stdout


def expect(name, extra, code, needle):
    rc, out = run(extra)
    ok = rc == code and needle in out
    print(("ok  " if ok else "FAIL") + f" {name}: exit {rc}\n{out}")
    return ok


def main():
    results = [
        expect("clean tree", {}, 0, "0 violations"),
        expect("op includes a layer", {"include/ssm/ops/bad.hpp": '#include "ssm/layers/block.hpp"\n'}, 1,
               "include/ssm/ops/bad.hpp: includes ssm/layers/block.hpp, a higher folder (ops -> layers)"),
        expect("core includes an op", {"include/ssm/core/bad.hpp": '#include "ssm/ops/scan.hpp"\n'}, 1,
               "(core -> ops)"),
        expect("kernel includes an op", {"cuda/kernels/bad.cuh": '#include "ssm/ops/scan.hpp"\n'}, 1,
               "cuda/kernels/bad.cuh: a kernel source includes ssm/ops/scan.hpp"),
        expect("header tests SSM_HAS_CUDA",
               {"include/ssm/ops/bad.hpp": "#if defined(SSM_HAS_CUDA)\nint x;\n#endif\n"}, 1,
               "include/ssm/ops/bad.hpp: tests a build macro: #if defined(SSM_HAS_CUDA)"),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
