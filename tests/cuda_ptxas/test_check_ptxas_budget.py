#!/usr/bin/env python3
"""Self-test of tools/check_ptxas_budget.py on ptxas -v reports written in ptxas's format (CUDA 13.0): a clean
report passes; a spill, a stack frame, local memory, too many registers, too much shared memory, a kernel
without a budget line and a stale budget line each fail with the numbers in the message."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "..", "..", "tools", "check_ptxas_budget.py")
K = "_ZN3ssm7kernels25selective_scan_fwd_kernelIfLi128ELi8EEEvNS_10ScanParamsEPfl"
NAME = "void ssm::kernels::selective_scan_fwd_kernel<float, 128, 8>(ssm::ScanParams, float*, long)"


def report(regs=114, stack=0, spill_st=0, spill_ld=0, smem=1088, lmem=0):
    lm = f", {lmem} bytes lmem" if lmem else ""
    return (f"ptxas info    : 0 bytes gmem\n"
            f"ptxas info    : Compiling entry function '{K}' for 'sm_80'\n"
            f"ptxas info    : Function properties for {K}\n"
            f"    {stack} bytes stack frame, {spill_st} bytes spill stores, {spill_ld} bytes spill loads\n"
            f"ptxas info    : Used {regs} registers, used 1 barriers{lm}, {smem} bytes smem, 688 bytes cmem[0]\n")


def run(log_text, budget_text):
    with tempfile.TemporaryDirectory() as tmp:
        log, budget = os.path.join(tmp, "ptxas.log"), os.path.join(tmp, "budget.txt")
        open(log, "w").write(log_text)
        open(budget, "w").write(budget_text)
        r = subprocess.run([sys.executable, CHECK, "--ptxas-log", log, "--budget", budget], capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr


BUDGET = f"# arch regs smem kernel\nsm_80 120 1088 {NAME}\n"
failures = []


def expect(label, code, out, want_code, want_text):
    if code != want_code or want_text not in out:
        failures.append(f"{label}: exit {code} (want {want_code}), output lacks '{want_text}':\n{out}")


expect("clean", *run(report(), BUDGET), 0, "ptxas budget check passed")
expect("spill", *run(report(stack=8, spill_st=8, spill_ld=8), BUDGET), 1, "spills 8 bytes stores / 8 bytes loads")
expect("stack", *run(report(stack=16), BUDGET), 1, "16 bytes stack frame")
expect("lmem", *run(report(lmem=32), BUDGET), 1, "32 bytes local memory")
expect("registers", *run(report(regs=121), BUDGET), 1, "121 registers, budget 120")
expect("smem", *run(report(smem=2048), BUDGET), 1, "2048 bytes shared memory, budget 1088")
expect("no budget", *run(report(), "# empty\n"), 1, "no budget line")
expect("stale", *run(report(), BUDGET + f"sm_90 120 1088 {NAME}\n"), 1, "matches no compiled kernel")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("check_ptxas_budget.py: all 8 cases behave")
