#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages transmamba's build, tests and benchmarks
# need. Does nothing when they are all installed already; uses sudo only when
# not running as root.
set -euo pipefail

packages=(
  cmake
  ninja-build
  g++
  libeigen3-dev
  doctest-dev
  libbenchmark-dev
  nlohmann-json3-dev
  libcli11-dev
  # The libFuzzer targets of .ci/run's fuzz step: clang and its fuzzer runtime.
  clang
  libclang-rt-dev
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg -s "$pkg" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all packages already installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${missing[*]}, and apt-get is not available; install them by hand" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-deps: missing ${missing[*]}; run as root or install sudo" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
