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

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

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
