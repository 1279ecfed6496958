#!/usr/bin/env bash
# The main job's encoder at a small size: starts 2 atp-workers on 127.0.0.1, runs atp_encoder
# against them and requires its agreement check to pass (exit 0, "ok:" line, one table row per
# offloaded layer); then SIGKILLs one worker and requires a second run on the remaining one to
# agree too. Stops the workers on exit.
#
# usage: encoder_test.sh ATP_WORKER ATP_ENCODER
set -euo pipefail
worker_bin=$1
encoder=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/atp-encoder-test.XXXXXX")
pids=()
cleanup() {
  ((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true
  ((${#pids[@]} == 0)) || wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "encoder_test: $1" >&2
  [[ $# -gt 1 && -f $2 ]] && cat "$2" >&2
  exit 1
}

targets=()
for i in 1 2; do
  "$worker_bin" --listen=127.0.0.1:0 --metrics-listen= --backend=cpu --threads=1 \
    2>"$work/w$i.log" &
  pids+=($!)
  port=""
  for _ in $(seq 1 300); do  # up to 30 s
    port=$(sed -n 's/.*msg="worker started".* port=\([0-9]*\).*/\1/p' "$work/w$i.log")
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || fail "worker $i did not start" "$work/w$i.log"
  targets+=("127.0.0.1:$port")
done

small=(--batch=4 --length=48 --blocks=2 --d-model=64 --heads=4 --kv-heads=2 --d-ff=128
       --progress=off)
"$encoder" --targets="${targets[0]},${targets[1]}" "${small[@]}" >"$work/run1.txt" 2>&1 ||
  fail "the encoder failed" "$work/run1.txt"
grep -q '^ok: the offloaded encoder matches' "$work/run1.txt" || fail "no ok line" "$work/run1.txt"
rows=$(grep -cE '^encoder\.[0-9]+\.(attn|ffn_up|ffn_down) ' "$work/run1.txt")
[[ $rows -eq 6 ]] || fail "want 6 layer rows, got $rows" "$work/run1.txt"

kill -KILL "${pids[1]}"
"$encoder" --targets="${targets[0]},${targets[1]}" "${small[@]}" >"$work/run2.txt" 2>&1 ||
  fail "the encoder failed with one worker down" "$work/run2.txt"
grep -q '^ok: the offloaded encoder matches' "$work/run2.txt" || fail "no ok line" "$work/run2.txt"
echo "encoder_test: passed"
