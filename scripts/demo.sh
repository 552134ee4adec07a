#!/usr/bin/env bash
# Quick start, command 1: installs what is missing, builds ssm (Release, into build/), shows the backends,
# then runs the short scan-versus-attention benchmark and prints its table (plots go to out/bench/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
bash scripts/build.sh build
./build/examples/example_backends
echo
python3 tools/bench_report.py --short --bench build/bench/bench_scan_vs_attention
