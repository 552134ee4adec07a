#!/usr/bin/env bash
# Quick start, command 1: installs what is missing, builds ssm (Release, into build/), runs the demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
bash scripts/build.sh build
./build/examples/example_backends
