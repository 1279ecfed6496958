#!/usr/bin/env bash
# Sets up, builds and runs every test (the README's second command; .ci/run runs exactly this).
# GPU tests skip themselves on a machine without a usable CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
build=${ATP_BUILD_DIR:-build}
jobs=${ATP_JOBS:-$(nproc)}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j"$jobs"
ctest --test-dir "$build" --output-on-failure -j"$jobs" --timeout 900
