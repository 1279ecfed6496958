#!/usr/bin/env bash
# Client SDK benchmarks on this machine (CPU backend). Starts 3 atp-workers on 127.0.0.1 (one
# backend thread each, free ports), then:
#   1. encoder    atp_encoder offloaded to 2 workers vs the same encoder in-process (all cores),
#                 fastest of 3 offloaded runs;
#   2. throughput atp_client_bench: a fixed workload of ATP attention requests through a pool of 1,
#                 2 and 3 workers, beside the same workload in-process (anchor, same run);
#   3. transfer   atp_client_bench: 256 MiB sent through a low-rank linear layer (32 MiB back),
#                 transfer rate and the client's user/system CPU per GiB beside memcpy and CRC-32C
#                 of the same bytes.
# Prints one JSON line per measurement and stops the workers at the end (also on error).
#
# usage: bench/client/run.sh [BUILD_DIR]   (targets atp-worker atp_encoder atp_client_bench built)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
worker_bin=$build/service/atp-worker
for b in "$worker_bin" "$build/examples/atp_encoder" "$build/bench/client/atp_client_bench"; do
  [[ -x $b ]] || { echo "bench/client/run.sh: $b is not built" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/atp-client-bench.XXXXXX")
pids=()
cleanup() {
  ((${#pids[@]} == 0)) || kill -TERM "${pids[@]}" 2>/dev/null || true
  ((${#pids[@]} == 0)) || wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

targets=()
for i in 1 2 3; do
  "$worker_bin" --listen=127.0.0.1:0 --metrics-listen= --backend=cpu --threads=1 \
    --drain-timeout=1 2>"$work/w$i.log" &
  pids+=($!)
  port=""
  for _ in $(seq 1 300); do  # up to 30 s
    port=$(sed -n 's/.*msg="worker started".* port=\([0-9]*\).*/\1/p' "$work/w$i.log")
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || { cat "$work/w$i.log" >&2; exit 1; }
  targets+=("127.0.0.1:$port")
done
join() { local IFS=,; echo "$*"; }

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $(nproc) cores," \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"

"$build/examples/atp_encoder" --targets="$(join "${targets[@]:0:2}")" --repeat=3 \
  --progress=off --json="$work/encoder.json" >"$work/encoder.txt"
echo "{\"mode\":\"encoder\",\"result\":$(cat "$work/encoder.json")}"

for n in 1 2 3; do
  "$build/bench/client/atp_client_bench" --mode=throughput --targets="$(join "${targets[@]:0:n}")"
done
"$build/bench/client/atp_client_bench" --mode=transfer --targets="${targets[0]}" --rounds=5
