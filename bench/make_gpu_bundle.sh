#!/usr/bin/env bash
# Builds everything the final GPU run (bench/gpu_all.sh) needs in a CUDA build folder and packs it,
# with every shared library the binaries need except glibc, the NVIDIA driver and the CUDA math
# libraries (bundle.sh --strip), into .bundle/atp-gpu.tar.xz. Its top folder is atp-cuda/, the
# layout bench/cuda/run_all.sh expects, so that one archive serves every step:
#   atp_cuda_test atp_cuda_device_test atp_cuda_bench atp atp-worker   (bench/cuda/make_bundle.sh's)
#   atp_worker_cuda_test atp_pool_scaling                              (integration, multi-GPU)
#   small_eigen_probe cholesky_probe cholesky_profile_probe
#                                      (the own small factorisations beside cuSOLVER, per phase)
# The archive must stay well under the device tool's 64 MiB carry limit; this script fails above
# 48 MiB.
#
# usage: bench/make_gpu_bundle.sh [BUILD_DIR]   (default build-gpu; configured with CUDA on)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
bundler=${BUNDLER:-../shared/tools/bundle.sh}
[[ -x $bundler ]] || { echo "make_gpu_bundle: no bundle.sh at $bundler (set BUNDLER)" >&2; exit 1; }
cfg=$(cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release)
if ! grep -q 'atp: CUDA backend ON' <<<"$cfg"; then
  echo "make_gpu_bundle: $build is configured without CUDA; the bundle needs the CUDA backend" >&2
  exit 1
fi
targets=(atp_cuda_test atp_cuda_device_test atp_cuda_bench atp atp-worker atp_worker_cuda_test
         atp_pool_scaling small_eigen_probe cholesky_probe cholesky_profile_probe)
cmake --build "$build" --target "${targets[@]}" -j"${ATP_JOBS:-2}"
bins=("$build/tests/kernels/cuda/atp_cuda_test" "$build/tests/kernels/cuda/atp_cuda_device_test"
      "$build/bench/cuda/atp_cuda_bench" "$build/tools/cli/atp" "$build/service/atp-worker"
      "$build/tests/integration/atp_worker_cuda_test" "$build/bench/multi_gpu/atp_pool_scaling"
      "$build/bench/cuda/small_eigen_probe" "$build/bench/cuda/cholesky_probe"
      "$build/bench/cuda/cholesky_profile_probe")
for b in "${bins[@]}"; do
  [[ -x $b ]] || { echo "make_gpu_bundle: missing $b" >&2; exit 1; }
done
# The worker must carry the CUDA backend (cuBLAS linked), or every GPU step would skip.
# (ldd's output first: grep -q stops reading early, and pipefail would count ldd's SIGPIPE.)
grep -q libcublas <<<"$(ldd "$build/service/atp-worker")" ||
  { echo "make_gpu_bundle: $build/service/atp-worker has no CUDA backend" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
"$bundler" --strip "$stage/atp-cuda" "${bins[@]}"
# The commit, "-dirty" when the working tree had changes (the bundle is built from the tree).
git describe --always --dirty >"$stage/atp-cuda/COMMIT.txt" 2>/dev/null || true
mkdir -p .bundle
tar -cJf .bundle/atp-gpu.tar.xz -C "$stage" atp-cuda
size=$(stat -c %s .bundle/atp-gpu.tar.xz)
echo "make_gpu_bundle: .bundle/atp-gpu.tar.xz $((size / 1048576)) MiB ($size bytes); .bundle holds $(du -sh .bundle | cut -f1)"
if ((size > 48 * 1048576)); then
  echo "make_gpu_bundle: the archive is over 48 MiB; the device tool carries at most 64 MiB" >&2
  exit 1
fi
