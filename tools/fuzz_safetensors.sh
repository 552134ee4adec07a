#!/usr/bin/env bash
# Builds the libFuzzer target for the safetensors reader with clang++ (ASan + UBSan) and runs it for a
# bounded time on the committed seed corpus. Usage: tools/fuzz_safetensors.sh [seconds=60] [build_dir]
# Exit status is non-zero when the fuzzer finds a crash, a leak or an out-of-bounds read.
set -euo pipefail
SECONDS_TO_RUN="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${2:-${TMPDIR:-/tmp}/ssm-fuzz-safetensors}"
CXX="${FUZZ_CXX:-$(command -v clang++-14 || command -v clang++)}"
mkdir -p "$BUILD/corpus"
cp -n "$ROOT"/tests/fuzz/corpus_safetensors/* "$BUILD/corpus/" 2>/dev/null || true
"$CXX" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$ROOT/include" "$ROOT/tests/fuzz/fuzz_safetensors.cpp" -o "$BUILD/fuzz_safetensors"
cd "$BUILD"
./fuzz_safetensors -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -rss_limit_mb=2048 \
  -timeout=10 -print_final_stats=1 corpus
