#!/usr/bin/env bash
# Installs the Debian 12 packages atp builds with. Idempotent and quiet: installs only what is
# missing, prints one line per step, and fails with a clear message.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates xz-utils
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libopenblas-dev liblapacke-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy python3-grpcio python3-protobuf openssl
  python3-venv
)

if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
  echo "setup.sh: need root (or sudo) to install Debian packages" >&2
  exit 1
fi
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

# The cuDNN C++ front end (header-only; the CUDA backend's fused attention uses it). Fetched once
# from PyPI into .deps/ (ignored by git) when nvcc is present; without it the CUDA backend still
# builds and uses its own attention path. Never fatal.
cudnn_fe_version=1.32.0
cudnn_fe_dir="$(cd "$(dirname "$0")/.." && pwd)/.deps/cudnn-frontend-${cudnn_fe_version}"
fetch_cudnn_frontend() {
  [[ -x /usr/local/cuda/bin/nvcc ]] || command -v nvcc >/dev/null || return 0
  [[ -f "$cudnn_fe_dir/include/cudnn_frontend.h" ]] && return 0
  local tmp
  tmp=$(mktemp -d)
  if python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
       "nvidia-cudnn-frontend==${cudnn_fe_version}" >"$tmp/pip.log" 2>&1 &&
     mkdir -p "$cudnn_fe_dir" &&
     python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("include/")])' \
       "$(ls "$tmp"/nvidia_cudnn_frontend-*.whl | head -n 1)" "$cudnn_fe_dir"; then
    echo "setup: cudnn-frontend ${cudnn_fe_version} headers in ${cudnn_fe_dir#"$PWD"/}"
  else
    echo "setup: warning: could not fetch nvidia-cudnn-frontend ${cudnn_fe_version} (see $tmp/pip.log);" \
         "the CUDA backend builds without cuDNN attention" >&2
    rm -rf "$cudnn_fe_dir"
    return 0
  fi
  rm -rf "$tmp"
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

fetch_cudnn_frontend

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#packages[@]} Debian packages present"
else
  echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo_cmd[@]}" apt-get update -qq >/tmp/atp-setup.log 2>&1 ||
     ! "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >>/tmp/atp-setup.log 2>&1; then
    echo "setup: apt-get failed installing: ${missing[*]} (log: /tmp/atp-setup.log)" >&2
    tail -n 20 /tmp/atp-setup.log >&2
    exit 1
  fi
  echo "setup: done"
fi

# Validators of the Helm chart and the Dockerfile (tests/deploy), in a project-local virtualenv.
"$(dirname "$0")/../deploy/tools/install-validators.sh"
