#!/usr/bin/env bash
# Quick start, command 2 (and what CI runs): builds with warnings as errors and runs every test (in the background,
# while the CPU scan kernels for other x86 targets are built and tested and the safetensors fuzzer runs for a bounded
# time), then again under AddressSanitizer + UBSan, then the CUDA emulation's mutation suite, then the Python package.
# Ends with one summary line: "N passed, M failed".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }
passed=0
failed=0
# Adds the counts of a finished ctest run (its output in $1, its exit status $2) to the totals, and fails the script
# when a test failed.
count_ctest() {
  local line total bad
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$1" | tail -1)
  total=$(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/')
  bad=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/')
  passed=$((passed + ${total:-0} - ${bad:-0}))
  failed=$((failed + ${bad:-0}))
  if [ "$2" -ne 0 ]; then echo "$passed passed, $((failed > 0 ? failed : 1)) failed"; exit "$2"; fi
}
# Runs ctest and counts it.
run_ctest() {
  local log
  log=$(mktemp)
  set +e
  ctest "$@" --output-on-failure -j "$(nproc)" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  count_ctest "$log" "$rc"
  rm -f "$log"
}

# 1. Release build, warnings as errors (and the CUDA backend with its ptxas budget when nvcc is present). The compiled
#    CPU kernels (ssm_instances), the emulated CUDA kernels, benchmarks, examples and programs at -O3; the test
#    programs' own sources at -Og (SSM_TEST_CXX_FLAGS): they call the -O3 kernels, and compile in half the time
#    (tests/layers/test_layers.cpp: 18 s against 36 s). Below -O3, GCC 12 reports a false -Wuninitialized inside its
#    own AVX-512 intrinsics where Eigen inlines them (GCC bug 105593; with -march=x86-64-v4 at -Og: 7 of the test
#    files, those of tests/continuous, tests/s4 and tests/train), so in the test sources that one warning is not an
#    error; the library's code compiled at -O3 (the kernels, benchmarks, examples, programs) keeps it as one.
stamp "release build (-Werror)"
bash scripts/build.sh build-ci/release -DSSM_WERROR=ON "-DSSM_TEST_CXX_FLAGS=-Og;-Wno-error=uninitialized"
# Its tests run in the background, beside stages 2 and 3: their wall time is the packaging consumer's (a compile of the
# whole library header-only, about 4 minutes on one core of a 2-core AMD EPYC, where the other 660 tests take about one
# minute of the other core), so the -march builds and the fuzzer take the idle core. Their output follows stage 3.
stamp "release tests (in the background, beside stages 2 and 3)"
release_log=$(mktemp)
ctest --test-dir build-ci/release --output-on-failure -j "$(nproc)" >"$release_log" 2>&1 &
release_pid=$!
trap 'kill "$release_pid" 2>/dev/null || true' EXIT
# This shell and what it starts from here on at a lower priority: the packaging consumer's compile is the longest task
# of the three stages and keeps a core to itself, the rest share the other. Measured on a 2-core AMD EPYC (AVX2, the
# x86-64 scan stage and the fuzzer, nothing cached): 403 s for the three stages, the consumer 283 s (262 s alone); on
# even terms 429 s; one after the other 441 s (262 + 98 + 81 s, the last two from a cold run of the whole script).
# Later stages run alone, where the priority changes nothing.
renice -n 10 -p $$ >/dev/null || true  # (bsdutils, an essential package; a refusal only costs the overlap)

# 2. The vectorized CPU scan for a generic x86-64 target, for AVX2 without AVX-512 and for AVX-512 (x86-64-v4).
#    A machine without AVX-512 cannot run the last: it is built (warnings as errors) but not run there. Two test
#    programs only, so without the compiled kernel library (SSM_COMPILED_INSTANCES=OFF): the header-only build.
#    A target that defines the same instruction-set macros the library's code tests (__AVX2__, __AVX512F__, ...:
#    those in include/) as -march=native is skipped: stages 1 and 4 build and run the same code paths.
scan_tests="test_selective_scan test_selective_scan_cpu"
isa_macros=$(grep -rhoE '__(SSE|AVX|FMA|F16C|BMI)[A-Z0-9_]*__' include | sort -u | paste -sd'|')
isa() {
  "${CXX:-c++}" -march="$1" -dM -E -x c++ /dev/null | { grep -owE "$isa_macros" || true; } | sort | paste -sd' '
}
native_isa=$(isa native)
for arch in x86-64 x86-64-v3 x86-64-v4; do
  if [ "$(isa "$arch")" = "$native_isa" ]; then
    stamp "cpu scan tests for -march=$arch: skipped, the same kernel paths as -march=native ($native_isa)"
    continue
  fi
  stamp "cpu scan tests for -march=$arch"
  SSM_TARGETS="$scan_tests" bash scripts/build.sh "build-ci/$arch" -DSSM_WERROR=ON -DSSM_CPU_ARCH="$arch" \
    -DSSM_ENABLE_CUDA=OFF -DSSM_BUILD_BENCHMARKS=OFF -DSSM_BUILD_EXAMPLES=OFF -DSSM_COMPILED_INSTANCES=OFF
  if [ "$arch" = x86-64-v4 ] && ! grep -qw avx512f /proc/cpuinfo; then
    echo "this CPU has no AVX-512: the x86-64-v4 scan tests were built, not run"
    continue
  fi
  run_ctest --test-dir "build-ci/$arch" -R "SelectiveScan"
done

# 3. The safetensors reader under libFuzzer (ASan + UBSan) for a bounded time.
if [ -x tools/fuzz_safetensors.sh ] || [ -f tools/fuzz_safetensors.sh ]; then
  stamp "fuzz safetensors reader (60 s)"
  bash tools/fuzz_safetensors.sh 60 build-ci/fuzz
  passed=$((passed + 1))
fi

# The release tests of stage 1: their output, then their counts.
set +e
wait "$release_pid"
release_rc=$?
set -e
trap - EXIT
stamp "release tests finished"
cat "$release_log"
count_ctest "$release_log" "$release_rc"
rm -f "$release_log"

# 4. AddressSanitizer + UBSan (host code; the CUDA kernels run here through the host emulation). Warnings
#    are already errors in stage 1; at -O1 with sanitizers GCC 12 reports false -Wuninitialized inside its
#    own AVX-512 intrinsics (_mm512_undefined_ps) as Eigen inlines them, so this stage does not add -Werror.
#    -g1: line tables only, enough for the sanitizers' stack traces (file:line); full -g made the then heaviest
#    test TU (tests/continuous/test_lssl.cpp, since split by facility) take 380 s to compile here against 221 s.
#    The test programs' own sources at -O0 (SSM_TEST_CXX_FLAGS): under the sanitizers that halves their compile time
#    (tests/models/test_mamba.cpp: 35 s against 68 s). So do the CPU kernels (SSM_INSTANCES_CXX_FLAGS): the files of
#    src/instances/ took 203 s of compile in all against 399 s at -O1, the tests 136 s against 104 s. The emulated
#    CUDA kernels (ssm_emu_instances) and ssm-generate's own file stay at -O1: with the emulated kernels at -O0 too,
#    the emulated tests alone took 77 s more.
stamp "asan+ubsan build"
bash scripts/build.sh build-ci/asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" -DSSM_TEST_CXX_FLAGS=-O0 \
  -DSSM_INSTANCES_CXX_FLAGS=-O0 \
  -DSSM_SANITIZE=address,undefined -DSSM_ENABLE_CUDA=OFF -DSSM_BUILD_BENCHMARKS=OFF -DSSM_BUILD_EXAMPLES=OFF
stamp "asan+ubsan tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_ctest --test-dir build-ci/asan -LE packaging

# 5. The CUDA emulation's mutation suite: each fault in tests/cuda_emu/mutations.json, planted in a scratch copy of
#    the kernels, must make its emulated test fail with the expected finding (small -O1 builds of one test file each
#    and the emulated launchers, cuda/emu/instances/: only the mutated family's file, the emulated backend's table and a
#    test that launches kernels itself are not ccache hits; linked with stage 1's compiled CPU kernels: the mutations
#    are in cuda/ only).
stamp "emulation mutation suite"
python3 tools/mutation_suite.py --jobs "$(nproc)" --instances build-ci/release/libssm_instances.a
passed=$((passed + 1))

# 6. The Python package: scripts/test_python.sh makes a virtual environment in build-ci/python over Debian's
#    python3-torch, pip-installs the package (nanobind and scikit-build-core from PyPI; the extension through ccache)
#    and runs pytest (python/tests). pytest's passed / failed (and errors, as failed) join the totals.
#    Its CMake build shares stage 1's compiled kernels (ssm_instances, position-independent in both, and ssm::cuda)
#    through ccache: the build folder sits at the depth of build-ci/release (ccache keys paths relative to the
#    working directory under the checkout) and gets stage 1's compiler and -Werror, so the commands are the same.
stamp "python package"
pylog=$(mktemp)
cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' build-ci/release/CMakeCache.txt)
set +e
SSM_PYTHON_BUILD_DIR=build-ci/python-ext SSM_PYTHON_CMAKE_ARGS="CMAKE_CXX_COMPILER=$cxx SSM_WERROR=ON" \
  bash scripts/test_python.sh build-ci/python 2>&1 | tee "$pylog"
pyrc=${PIPESTATUS[0]}
set -e
# Each pytest run's summary line ("45 passed, 1 skipped in 12.3s"; two runs: the main environment and JAX's).
count() { { grep -E "[0-9]+ (passed|failed|skipped|errors?).* in [0-9.]+s" "$pylog" || true; } |
  { grep -oE "[0-9]+ $1" || true; } | awk '{ s += $1 } END { print s + 0 }'; }
passed=$((passed + $(count passed)))
failed=$((failed + $(count failed) + $(count 'errors?')))
rm -f "$pylog"
if [ "$pyrc" -ne 0 ]; then echo "$passed passed, $((failed > 0 ? failed : 1)) failed"; exit "$pyrc"; fi

stamp "all test stages passed"
echo "$passed passed, $failed failed"
