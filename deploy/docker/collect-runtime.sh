#!/usr/bin/env bash
# Copies ELF binaries and the shared libraries they load into OUT/bin and OUT/lib, for the
# runtime stage of deploy/docker/Dockerfile.
#
# usage: collect-runtime.sh OUT BINARY...
#
# Left out, because the runtime base image of the same distribution release provides them:
# glibc, the GCC runtime (libstdc++, libgcc_s), the NVIDIA driver (libcuda, mounted from the
# host by the NVIDIA container toolkit) and the CUDA toolkit libraries (cuBLAS, cuSOLVER, cuDNN,
# ... in NVIDIA's runtime images). Everything else ldd resolves (gRPC, protobuf, abseil,
# prometheus-cpp, OpenBLAS, LAPACKE, OpenSSL, ...) is copied under its SONAME. Binaries are stripped.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 OUT BINARY..." >&2
  exit 2
fi
out=$1
shift
mkdir -p "$out/bin" "$out/lib"

declare -A seen=()
for bin in "$@"; do
  if [[ ! -x "$bin" ]]; then
    echo "collect-runtime: $bin is not an executable file" >&2
    exit 1
  fi
  install -m 0755 "$bin" "$out/bin/"
  strip --strip-unneeded "$out/bin/$(basename "$bin")"
  # Lines look like "libfoo.so.1 => /usr/lib/x86_64-linux-gnu/libfoo.so.1 (0x...)".
  while read -r soname arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    [[ -z "${seen[$soname]:-}" ]] || continue
    seen[$soname]=1
    if [[ "$path" == "not" ]]; then
      case "$soname" in
        libcuda.so.*|libnvidia-*) continue ;;  # the driver: only on a GPU host
      esac
      echo "collect-runtime: $soname (needed by $bin) not found in the build stage" >&2
      exit 1
    fi
    case "$soname" in
      ld-linux*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|librt.so.*|\
      libresolv.so.*|libutil.so.*|libanl.so.*|libnss_*|libthread_db.so.*) continue ;;
      libstdc++.so.*|libgcc_s.so.*) continue ;;
      libcuda.so.*|libnvidia-*) continue ;;
      libcublas*|libcusolver*|libcusparse*|libcufft*|libcurand*|libnvJitLink*|libnvrtc*|\
      libcudart.so*|libcudnn*|libnccl*|libcupti*) continue ;;
    esac
    cp -L "$path" "$out/lib/$soname"
  done < <(ldd "$bin")
done
echo "collect-runtime: $# binaries, ${#seen[@]} libraries seen, $(find "$out/lib" -type f | wc -l) copied into $out"
