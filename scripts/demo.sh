#!/usr/bin/env bash
# Quick start, command 1: installs what is missing, builds the two programs the demo runs (Release, CPU only, into
# build-demo/), shows the backends, then runs the short scan-versus-attention benchmark and prints its table
# (plots go to out/bench/). It builds no test, no other benchmark and not the CUDA backend: neither program links
# ssm::cuda, so building it would only cost time (`bash scripts/build.sh build` builds everything, ssm::cuda included
# when nvcc is present).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
SSM_TARGETS="example_backends bench_scan_vs_attention" bash scripts/build.sh build-demo \
  -DSSM_ENABLE_CUDA=OFF -DSSM_BUILD_TESTS=OFF
echo
echo "demo build: Release, CPU only (configured with -DSSM_ENABLE_CUDA=OFF, so cuda reads 'not linked' below;"
echo "the CUDA backend ssm::cuda is built by 'bash scripts/build.sh build' when nvcc is present)"
./build-demo/examples/example_backends
echo
python3 tools/bench_report.py --short --bench build-demo/bench/bench_scan_vs_attention
