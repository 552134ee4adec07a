#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, run the real-CUDA tests (ctest label cuda-gpu), the same tests
# under compute-sanitizer's four tools, and the CUDA benchmarks, and write one report. Built to finish within a few
# minutes: every step has a time limit, and steps still waiting when the overall budget is spent are reported as
# not run rather than started.
#
# Usage: scripts/gpu_check.sh [build dir, default build-ci/release] [report dir, default <build dir>/gpu-check]
#   The build dir is a built CUDA build (`scripts/build.sh build-gpu` makes one: the CUDA backend is on wherever
#   nvcc is found). Test and benchmark binaries are found by name, so a copy of the build's tests/ and bench/ folders
#   serves as well (with a lib/ folder beside them for shared libraries the target machine lacks, such as Google
#   Benchmark's). The tests read tests/data at the path the build was configured with.
# Environment: SSM_GPU_CHECK_BUDGET (seconds, default 420), SSM_GPU_CHECK_SANITIZE=0 to skip compute-sanitizer,
#   SSM_GPU_CHECK_BENCH=0 to skip the benchmarks.
# Exit status: 0 when every test passed and no sanitizer reported an error; 1 otherwise; 2 when there is no GPU.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(realpath -m "${1:-$root/build-ci/release}")"
report_dir="$(realpath -m "${2:-$build/gpu-check}")"
budget="${SSM_GPU_CHECK_BUDGET:-420}"
mkdir -p "$report_dir"
report="$report_dir/report.md"
start=$SECONDS
failures=0
failed_logs=()

say() { echo "$*" | tee -a "$report"; }
left() { echo $((budget - (SECONDS - start))); }

: >"$report"
say "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
say ""
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  say "No GPU: nvidia-smi finds none. Nothing was run."
  exit 2
fi
say '```'
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$report"
say '```'

# The shared libraries the binaries were linked against: a lib/ folder beside a copied build's tests/ (Google
# Benchmark's, say), the toolkit's CUDA runtime and cuBLAS, else a pip wheel's (nvidia-*).
[ -d "$build/lib" ] && export LD_LIBRARY_PATH="$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for dir in /usr/local/cuda/lib64 /usr/local/cuda/lib; do
  [ -d "$dir" ] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
if command -v python3 >/dev/null; then
  wheel_libs="$(python3 - <<'EOF' 2>/dev/null
import importlib.util, os
dirs = []
for name in ("nvidia.cublas", "nvidia.cuda_runtime", "nvidia.cu13"):
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    for base in (spec.submodule_search_locations if spec else []):
        lib = os.path.join(base, "lib")
        if os.path.isdir(lib):
            dirs.append(lib)
print(":".join(dirs))
EOF
)"
  [ -n "$wheel_libs" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$wheel_libs"
fi

mapfile -t tests < <(find "$build/tests" -type f -perm -u+x \( -name 'test_cuda_*' -o -name 'test_conformance_cuda' \) \
  ! -name '*_emu*' | sort)
mapfile -t benches < <(find "$build/bench" -type f -perm -u+x -name 'bench_cuda_*' 2>/dev/null | sort)
if [ "${#tests[@]}" -eq 0 ]; then
  say "No CUDA test binaries under $build/tests (is the build configured with the CUDA backend?)."
  exit 1
fi
missing="$(for f in "${tests[@]}" "${benches[@]}"; do ldd "$f" | grep 'not found' | sed "s|^|$(basename "$f"): |"; done)"
if [ -n "$missing" ]; then
  say "Shared libraries not found:"
  say '```'
  say "$missing"
  say '```'
  exit 1
fi

# run LIMIT LOG CMD...: runs CMD with a time limit (never past the budget), output to LOG; prints status and seconds.
run() {
  local limit="$1" log="$2"
  shift 2
  local remaining
  remaining="$(left)"
  if [ "$remaining" -le 5 ]; then
    echo "not run (budget spent)"
    return
  fi
  [ "$limit" -gt "$remaining" ] && limit="$remaining"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local dt=$((SECONDS - t0))
  case "$rc" in
    0) echo "passed ${dt} s" ;;
    124 | 137) echo "timed out after ${dt} s" ;;
    *) echo "FAILED (exit $rc) ${dt} s" ;;
  esac
}

say ""
say "## Tests"
say ""
say "| test binary | result |"
say "|---|---|"
for t in "${tests[@]}"; do
  name="$(basename "$t")"
  result="$(run 150 "$report_dir/$name.log" "$t" --gtest_brief=1)"
  counts="$(grep -E '^\[ +(PASSED|SKIPPED|FAILED) +\] [0-9]+ test' "$report_dir/$name.log" | sed -E 's/^\[ *([A-Z]+) *\] ([0-9]+) tests?.*/\2 \1/' |
    tr 'A-Z' 'a-z' | paste -sd, - | sed 's/,/, /g')"
  say "| $name | $result${counts:+ ($counts)} |"
  if [[ "$result" != passed* ]]; then
    failures=$((failures + 1))
    failed_logs+=("$report_dir/$name.log")
  fi
done

if [ "${SSM_GPU_CHECK_BENCH:-1}" != 0 ] && [ "${#benches[@]}" -gt 0 ]; then
  say ""
  say "## Benchmarks"
  for b in "${benches[@]}"; do
    name="$(basename "$b")"
    result="$(run 90 "$report_dir/$name.txt" "$b" --benchmark_min_time=0.1 --benchmark_counters_tabular=true)"
    if [[ "$result" != passed* ]]; then
      failures=$((failures + 1))
      failed_logs+=("$report_dir/$name.txt")
    fi
    say ""
    say "### $name: $result"
    say '```'
    grep -E '^(BM_|-|Benchmark)' "$report_dir/$name.txt" 2>/dev/null | tee -a "$report" >/dev/null
    say '```'
  done
fi

if [ "${SSM_GPU_CHECK_SANITIZE:-1}" != 0 ]; then
  say ""
  say "## compute-sanitizer"
  say ""
  if ! command -v compute-sanitizer >/dev/null; then
    for dir in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
      [ -x "$dir/compute-sanitizer" ] && export PATH="$PATH:$dir"
    done
  fi
  if ! command -v compute-sanitizer >/dev/null; then
    say "compute-sanitizer is not on this machine."
  else
    say "| tool | test binary | result | errors reported |"
    say "|---|---|---|---|"
    # Two passes: the small, kernel-dense binaries under every tool first; then the conformance program and the LM
    # (long host references), as the budget allows.
    mapfile -t small < <(printf '%s\n' "${tests[@]}" | grep -v -E 'conformance|mamba_lm')
    mapfile -t large < <(printf '%s\n' "${tests[@]}" | grep -E 'conformance|mamba_lm')
    for pass in small large; do
      if [ "$pass" = small ]; then binaries=("${small[@]}"); else binaries=("${large[@]}"); fi
      for tool in memcheck racecheck synccheck initcheck; do
        for t in "${binaries[@]}"; do
          name="$(basename "$t")"
          log="$report_dir/sanitize-$tool-$name.log"
          result="$(run 60 "$log" compute-sanitizer --tool "$tool" --error-exitcode 99 \
            "$t" --gtest_brief=1)"
          errors="$(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" 2>/dev/null | sed 's/^=* *//' || true)"
          if [[ "$result" == FAILED* ]]; then
            failures=$((failures + 1))
            failed_logs+=("$log")
          fi
          say "| $tool | $name | $result | ${errors:--} |"
        done
      done
    done
  fi
fi

if [ "${#failed_logs[@]}" -gt 0 ]; then
  say ""
  say "## The failing steps' logs, last 40 lines each"
fi
for log in "${failed_logs[@]}"; do
  say ""
  say "### $(basename "$log")'s last 40 lines"
  say '```'
  tail -n 40 "$log" | tee -a "$report" >/dev/null
  say '```'
done
say ""
say "Total: $((SECONDS - start)) s; $failures failing step(s). Logs beside this report in $report_dir."
[ "$failures" -eq 0 ]
