#!/usr/bin/env bash
# Installs the Debian packages ssm needs (only those missing), plus any named as arguments. Safe to run repeatedly.
# The CUDA toolkit (nvcc) is not a Debian package here: when it is absent, ssm::cuda is simply not built.
set -euo pipefail

packages=(cmake ninja-build g++ ccache python3
          libeigen3-dev libdlpack-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
          clang libclang-rt-14-dev lld gnuplot-nox "$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "ssm: installing missing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
