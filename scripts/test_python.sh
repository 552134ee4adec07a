#!/usr/bin/env bash
# The Python package's tests: a virtual environment in <dir> over Debian's python3 and its packages (PyTorch, NumPy,
# pytest: python3-torch is CPU-only and a fraction of PyPI's CUDA wheels), nanobind and scikit-build-core from PyPI,
# `pip install .` (the extension compiled through ccache in <dir>/build, kept between runs; with the CUDA backend
# where nvcc is found), then pytest; then the JAX tests in a second environment (below).
# Usage: scripts/test_python.sh [dir, default build-py] [pytest args...]
# SSM_PYTHON_BUILD_DIR: the CMake build folder (default <dir>/build); SSM_PYTHON_CMAKE_ARGS: more NAME=VALUE CMake
# definitions for it (scripts/test.sh uses both to share its Release build's objects through ccache).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir="${1:-build-py}"
shift || true
bash scripts/deps.sh python3-venv python3-dev python3-numpy python3-torch python3-pytest
python=/usr/bin/python3  # Debian's: the interpreter python3-torch is built for
if [ ! -x "$dir/venv/bin/python" ]; then
  "$python" -m venv --system-site-packages "$dir/venv"
fi
"$dir/venv/bin/pip" install -q --disable-pip-version-check "nanobind>=2.0" "scikit-build-core>=0.10"
build="${SSM_PYTHON_BUILD_DIR:-$dir/build}"
defines=()
for d in ${SSM_PYTHON_CMAKE_ARGS:-}; do defines+=("--config-settings=cmake.define.$d"); done
launcher=()
if command -v ccache >/dev/null; then
  launcher=(--config-settings=cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache
    --config-settings=cmake.define.CMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=true
fi
# No build isolation: the build uses the nanobind and scikit-build-core above and the system's cmake and ninja.
"$dir/venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps \
  --config-settings=build-dir="$(realpath -m "$build")" --config-settings=cmake.define.SSM_PYTHON_CUDA=AUTO \
  "${launcher[@]}" "${defines[@]}" .
# Whether the build found a CUDA compiler (check_language(CUDA) caches its path, or NOTFOUND): the tests check that
# the extension linked the CUDA backend exactly then.
nvcc_found=$(sed -n 's/^CMAKE_CUDA_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt" | grep -v -e NOTFOUND -e '^$' || true)
if [ -n "$nvcc_found" ]; then export SSM_PYTHON_EXPECT_CUDA=1; else export SSM_PYTHON_EXPECT_CUDA=0; fi
"$dir/venv/bin/python" -m pytest python/tests -p no:cacheprovider "$@"

# JAX from PyPI needs NumPy 2, and Debian's PyTorch is built against NumPy 1: so a second environment, without the
# system's packages, gets JAX and pytest from PyPI, imports the package installed above (the same build) and runs
# the JAX tests. SSM_PYTHON_JAX=0 skips it (offline).
if [ "${SSM_PYTHON_JAX:-1}" != 0 ]; then
  [ -x "$dir/venv-jax/bin/python" ] || "$python" -m venv "$dir/venv-jax"
  "$dir/venv-jax/bin/pip" install -q --disable-pip-version-check jax pytest
  site="$("$dir/venv/bin/python" -c 'import os, ssm; print(os.path.dirname(os.path.dirname(ssm.__file__)))')"
  PYTHONPATH="$site" "$dir/venv-jax/bin/python" -m pytest python/tests/test_jax.py -p no:cacheprovider "$@"
fi
