#!/usr/bin/env bash
# Builds the gpu tests and atp_cuda_bench in a CUDA build folder and packs them (with every
# shared library they need but glibc, the driver and the CUDA math libraries) into
# .bundle/atp-cuda.tar.xz for run_all.sh on a GPU machine. Uses the workspace's bundle.sh.
#
# usage: bench/cuda/make_bundle.sh [BUILD_DIR]   (default build-cuda)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-cuda}
bundler=${BUNDLER:-../shared/tools/bundle.sh}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target atp_cuda_test atp_cuda_device_test atp_cuda_bench atp atp-worker \
  -j"${ATP_JOBS:-2}"
stage=$(mktemp -d)
"$bundler" --strip "$stage/atp-cuda" "$build/tests/kernels/cuda/atp_cuda_test" \
  "$build/tests/kernels/cuda/atp_cuda_device_test" "$build/bench/cuda/atp_cuda_bench" \
  "$build/tools/cli/atp" "$build/service/atp-worker"
mkdir -p .bundle
tar -cJf .bundle/atp-cuda.tar.xz -C "$stage" atp-cuda
rm -rf "$stage"
ls -la .bundle/atp-cuda.tar.xz
