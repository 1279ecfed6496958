#!/usr/bin/env bash
# The README's first command. Sets up (Debian packages), builds the worker, the CLI and the encoder
# example, starts local atp-workers on 127.0.0.1 (free ports; the CPU backend when there is no
# GPU), waits until `atp health` says each is ready, then runs a transformer encoder whose
# attention and low-rank linear layers are offloaded to the workers through the client SDK, checks
# it against the same encoder computed in-process and prints the per-layer table. The workers are
# stopped at the end, and also on Ctrl-C or an error. Idempotent: rerunning rebuilds only what
# changed.
#
# Environment: ATP_BUILD_DIR (default build), ATP_JOBS (default: all cores), ATP_WORKERS (default
# 2 on up to 2 cores, else 3), ATP_BACKEND (auto), ATP_BATCH (16 sequences), ATP_LENGTH (256
# tokens), ATP_BLOCKS (4), ATP_ENCODER_ARGS (more atp_encoder options, see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${ATP_BUILD_DIR:-build}
jobs=${ATP_JOBS:-$(nproc)}
cores=$(nproc)
workers=${ATP_WORKERS:-$((cores <= 2 ? 2 : 3))}
backend=${ATP_BACKEND:-auto}
batch=${ATP_BATCH:-16}
length=${ATP_LENGTH:-256}
blocks=${ATP_BLOCKS:-4}
# Workers share the cores: each computes on its share (the CPU backend's threads).
threads=$((cores / workers))
((threads >= 1)) || threads=1

step() { printf '\n== %s\n' "$*"; }
fail_with_log() {
  echo "run.sh: $1 failed; last lines of $2:" >&2
  tail -n 30 "$2" >&2
  exit 1
}

step "setup"
tools/setup.sh

step "build ($build, targets atp-worker atp atp_encoder, -j$jobs)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >"$build.configure.log" 2>&1 ||
  fail_with_log "cmake configure" "$build.configure.log"
cmake --build "$build" --target atp-worker atp atp_encoder -j"$jobs" >"$build.build.log" 2>&1 ||
  fail_with_log "the build" "$build.build.log"
worker_bin="$build/service/atp-worker"
atp="$build/tools/cli/atp"
encoder="$build/examples/atp_encoder"
echo "built $worker_bin, $atp and $encoder ($("$atp" --version))"

work=$(mktemp -d "${TMPDIR:-/tmp}/atp-run.XXXXXX")
pids=()
encoder_pid=""
stop_workers() {
  ((${#pids[@]} > 0)) || return 0
  echo "stopping ${#pids[@]} workers (SIGTERM: they drain and exit)"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # Bounded: a worker drains for at most its --drain-timeout (5 s here), then exits.
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}
cleanup() {
  if [[ -n $encoder_pid ]]; then
    kill -TERM "$encoder_pid" 2>/dev/null || true
    wait "$encoder_pid" 2>/dev/null || true
  fi
  stop_workers
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "run.sh: interrupted" >&2; exit 130' INT TERM

step "start $workers workers on 127.0.0.1 (backend $backend, $threads thread(s) each)"
targets=()
for i in $(seq 1 "$workers"); do
  log="$work/worker$i.log"
  "$worker_bin" --listen=127.0.0.1:0 --metrics-listen= --backend="$backend" \
    --threads="$threads" --drain-timeout=5 2>"$log" &
  pids+=($!)
  port=""
  for _ in $(seq 1 300); do  # up to 30 s for the "worker started" line, which names the port
    port=$(sed -n 's/.*msg="worker started".* port=\([0-9]*\).*/\1/p' "$log")
    [[ -n $port ]] && break
    kill -0 "${pids[-1]}" 2>/dev/null || fail_with_log "atp-worker $i" "$log"
    sleep 0.1
  done
  [[ -n $port ]] || fail_with_log "starting atp-worker $i (no port after 30 s)" "$log"
  targets+=("127.0.0.1:$port")
done
for t in "${targets[@]}"; do
  "$atp" health --target "$t" --wait 30 >/dev/null ||
    { echo "run.sh: worker $t is not ready after 30 s" >&2; exit 1; }
  info=$("$atp" info --target "$t")
  echo "worker $t ready: $(sed -n 's/^backend=//p' <<<"$info") backend," \
    "$(sed -n 's/^device=//p' <<<"$info")"
done

step "offload a transformer encoder to the workers ($batch sequences x $length tokens, $blocks blocks)"
progress=off
[[ -t 2 ]] && progress=on
# In the background with `wait`, so that a signal to this script is handled at once.
# shellcheck disable=SC2086  # ATP_ENCODER_ARGS is a list of options
# The in-process reference computes on the workers' backend kind (the CPU without a GPU).
"$encoder" --targets="$(IFS=,; echo "${targets[*]}")" --batch="$batch" --length="$length" \
  --blocks="$blocks" --progress="$progress" --reference-backend="$backend" \
  ${ATP_ENCODER_ARGS:-} &
encoder_pid=$!
status=0
wait "$encoder_pid" || status=$?
encoder_pid=""
exit "$status"
