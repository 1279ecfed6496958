#!/usr/bin/env bash
# The installed SDK works for a project outside the atp tree: installs component `sdk` of the
# build into a temporary prefix, checks that the public headers carry no gRPC, protobuf or CUDA
# and that the package points nowhere into the source or build tree, copies
# examples/sdk_quickstart to a temporary directory, builds it with find_package(atp) against the
# prefix, and runs it against a real atp-worker on 127.0.0.1.
#
# usage: sdk_install_test.sh BUILD_DIR SOURCE_DIR ATP_WORKER_BINARY
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
worker_bin=$3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/atp-sdk-test.XXXXXX")
worker_pid=""
cleanup() {
  if [[ -n $worker_pid ]]; then
    kill "$worker_pid" 2>/dev/null || true
    wait "$worker_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "sdk_install_test: $1" >&2
  [[ $# -gt 1 && -f $2 ]] && tail -n 40 "$2" >&2
  exit 1
}

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" --component sdk >"$tmp/install.log" 2>&1 ||
  fail "cmake --install failed" "$tmp/install.log"
[[ -f $prefix/lib/cmake/atp/atpConfig.cmake ]] || fail "no atpConfig.cmake in the prefix"
[[ -f $prefix/include/atp/client/pool.h ]] || fail "no public headers in the prefix"
if grep -rlE '#include [<"](grpc|grpcpp|google/protobuf|cuda|atp/v1/)' "$prefix/include"; then
  fail "public headers include gRPC, protobuf, generated or CUDA headers"
fi
if grep -l -e "$src" -e "$build" "$prefix"/lib/cmake/atp/*.cmake; then
  fail "the installed package refers to the source or build tree"
fi

project=$tmp/project
cp -r "$src/examples/sdk_quickstart" "$project"
cmake -S "$project" -B "$project/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/configure.log" 2>&1 ||
  fail "configuring the host project failed" "$tmp/configure.log"
cmake --build "$project/build" -j2 >"$tmp/build.log" 2>&1 ||
  fail "building the host project failed" "$tmp/build.log"

"$worker_bin" --listen=127.0.0.1:0 --metrics-listen= --backend=cpu --threads=1 \
  2>"$tmp/worker.log" &
worker_pid=$!
port=""
for _ in $(seq 1 300); do  # up to 30 s for the "worker started" line
  port=$(sed -n 's/.*msg="worker started".* port=\([0-9]*\).*/\1/p' "$tmp/worker.log")
  [[ -n $port ]] && break
  kill -0 "$worker_pid" 2>/dev/null || fail "atp-worker exited" "$tmp/worker.log"
  sleep 0.1
done
[[ -n $port ]] || fail "atp-worker did not start" "$tmp/worker.log"

timeout 120 "$project/build/atp_quickstart" "127.0.0.1:$port" || fail "atp_quickstart failed"
echo "sdk_install_test: installed SDK built and ran a host project"
