#!/usr/bin/env bash
# The final run on the GPU machine, in one command, from the repository root there with the bundle
# made here by bench/make_gpu_bundle.sh carried in .bundle/:
#   (a) bench/cuda/run_all.sh: the gpu tests, atp_cuda_bench, the PyTorch anchors, the CLI/worker
#       smoke step and the summary tables (the CUDA engineer's script, run as it is);
#   (b) atp_worker_cuda_test: the worker end to end on the GPU (tests/integration);
#   (c) bench/multi_gpu/run.sh at the real size: pool scaling over 1..N workers and a SIGKILL
#       failover, every result checked (one worker per GPU, or several sharing the one GPU).
# Each step runs under its own time limit in its own session (a step past its limit is ended with
# everything it started); a failed step is reported and the next one still runs. A summary comes
# last. Limits: 210 + 90 + 180 s, so the whole run ends within about 8.5 minutes even when every
# step hangs; a normal run takes about 4.
#
# usage: OUT=/some/dir bash bench/gpu_all.sh
#   BUNDLE          the archive (default .bundle/atp-gpu.tar.xz)
#   GPU_ALL_STEPS   which steps, default "cuda integration multi_gpu" (STEPS, BENCH_ARGS and
#                   ANCHOR_ARGS go to run_all.sh as they are)
#   MULTI_GPU_ARGS  extra bench/multi_gpu/run.sh flags (e.g. "--requests 32")
#   LIMIT_CUDA, LIMIT_INTEGRATION, LIMIT_MULTI_GPU   the steps' limits in seconds (210, 90, 180)
# $OUT receives at most 6 files: gpu_all.log (everything printed), cuda_results.tar.xz (run_all's
# own files), integration.log, multi_gpu.json, multi_gpu_logs.txt, summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
BUNDLE=${BUNDLE:-.bundle/atp-gpu.tar.xz}
GPU_ALL_STEPS=${GPU_ALL_STEPS:-cuda integration multi_gpu}
LIMIT_CUDA=${LIMIT_CUDA:-210}
LIMIT_INTEGRATION=${LIMIT_INTEGRATION:-90}
LIMIT_MULTI_GPU=${LIMIT_MULTI_GPU:-180}
declare -A step_rc step_secs

# Processes of session `sid` (field 6 of /proc/PID/stat; the fields after "(comm) " are state,
# ppid, pgrp, session).
session_members() {
  local sid=$1 f line rest pid
  for f in /proc/[0-9]*/stat; do
    line=$(cat "$f" 2>/dev/null) || continue
    rest=${line##*) }
    read -r _ _ _ s _ <<<"$rest"
    pid=${f#/proc/}
    [[ $s == "$sid" ]] && echo "${pid%/stat}"
  done
}

# run_step NAME LIMIT_S COMMAND...: runs the command in a new session; past the limit the whole
# session (the command and everything it started) gets SIGTERM, then SIGKILL.
run_step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc timed_out=0
  echo
  echo "=================== [$name] $(date -u +%H:%M:%S) (limit ${limit} s)"
  setsid "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS - t0 >= limit)); then
      timed_out=1
      echo "gpu_all: [$name] ran past ${limit} s; ending it"
      local sid
      sid=$(awk '{print $6}' "/proc/$pid/stat" 2>/dev/null | tail -n 1)
      # setsid made $pid the leader of a new session (sid == pid); never signal another session.
      if [[ $sid == "$pid" ]]; then
        local members
        mapfile -t members < <(session_members "$sid")
        ((${#members[@]})) && kill -TERM "${members[@]}" 2>/dev/null
        sleep 5
        mapfile -t members < <(session_members "$sid")
        ((${#members[@]})) && kill -KILL "${members[@]}" 2>/dev/null
      else
        kill -KILL "$pid" 2>/dev/null
      fi
      break
    fi
    sleep 1
  done
  wait "$pid"
  rc=$?
  ((timed_out)) && rc=124
  step_rc[$name]=$rc
  step_secs[$name]=$((SECONDS - t0))
  echo "=================== [$name] exit status $rc after ${step_secs[$name]} s"
}

main() {
  local work
  work=$(mktemp -d)
  echo "gpu_all: $(date -u) on $(uname -n); bundle $BUNDLE; OUT=$OUT"
  timeout 30 nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
  if ! tar -xJf "$BUNDLE" -C "$work"; then
    echo "gpu_all: cannot unpack $BUNDLE"
    return 1
  fi
  local B=$work/atp-cuda
  echo "gpu_all: bundle built from $(cat "$B/COMMIT.txt" 2>/dev/null || echo '?')"
  # The same library path as run_all.sh: cuDNN (PyTorch's copy) first, PyTorch's other CUDA
  # libraries last.
  local nv=/opt/torch/.venv/lib/python3.12/site-packages/nvidia d
  export LD_LIBRARY_PATH="$nv/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  for d in "$nv"/*/lib; do
    [[ -d $d && $d != "$nv/cudnn/lib" ]] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
  done
  export ATP_WORKER_BINARY=$B/atp-worker PYTHONUNBUFFERED=1

  # (The bash -c scripts below take their arguments as $1 and $2.)
  # shellcheck disable=SC2016
  if [[ " $GPU_ALL_STEPS " == *" cuda "* ]]; then
    mkdir -p "$work/cuda"
    run_step cuda "$LIMIT_CUDA" bash -c 'OUT="$1" BUNDLE="$2" bash bench/cuda/run_all.sh 2>&1 | tee "$1/console.log"' \
      _ "$work/cuda" "$BUNDLE"
    tar -cJf "$OUT/cuda_results.tar.xz" -C "$work" cuda
  fi
  if [[ " $GPU_ALL_STEPS " == *" integration "* ]]; then
    # shellcheck disable=SC2016
    run_step integration "$LIMIT_INTEGRATION" bash -c '"$1" --gtest_brief=1 >"$2" 2>&1' _ \
      "$B/atp_worker_cuda_test" "$OUT/integration.log"
    grep -E '^\[  (PASSED|FAILED|SKIPPED) |Failure|error' "$OUT/integration.log" | head -n 40
  fi
  if [[ " $GPU_ALL_STEPS " == *" multi_gpu "* ]]; then
    # Sized to fit: workers ready within 40 s; the driver sizes its requests so that one worker
    # needs about 15 s per worker count, starts no worker count after 90 s and must end within
    # 150 s (typically ~60-100 s in all).
    # shellcheck disable=SC2086
    run_step multi_gpu "$LIMIT_MULTI_GPU" env OUT="$OUT" bash bench/multi_gpu/run.sh --backend cuda \
      --bin "$B" --log-dir "$work/multi_gpu" --start-timeout 40 --time-limit 150 \
      ${MULTI_GPU_ARGS:-} -- --target-seconds=15 --budget=90
  fi

  # Summary.
  {
    echo "gpu_all summary ($(date -u +%FT%TZ); bundle built from $(cat "$B/COMMIT.txt" 2>/dev/null || echo '?'))"
    local name verdict
    for name in cuda integration multi_gpu; do
      [[ -n ${step_rc[$name]:-} ]] || continue
      verdict=ok
      if [[ ${step_rc[$name]} == 124 ]]; then
        verdict="TIMED OUT"
      elif [[ ${step_rc[$name]} != 0 ]]; then
        verdict="FAILED (exit ${step_rc[$name]})"
      elif [[ $name == cuda ]] && grep -qE ' rc=[1-9]' "$work/cuda/console.log" 2>/dev/null; then
        verdict="FAILED (a part's rc)"  # run_all.sh itself always exits 0
      elif [[ $name == integration ]] && ! grep -qE '^\[  PASSED  \] [1-9]' "$OUT/integration.log"; then
        verdict="NOTHING PASSED"  # every test skipped: no usable CUDA device
      fi
      printf '  %-12s %-24s %4d s\n' "$name" "$verdict" "${step_secs[$name]}"
    done
    if [[ -n ${step_rc[cuda]:-} ]]; then
      echo "-- cuda (run_all.sh):"
      grep -hE '^(atp_cuda_test|atp_cuda_device_test|smoke|atp_cuda_bench|anchors) rc=' \
        "$work/cuda/console.log" 2>/dev/null | sed 's/^/  /'
      local f
      for f in tests device_tests; do
        grep -hE '^\[  (PASSED|FAILED|SKIPPED) ' "$work/cuda/$f.log" 2>/dev/null | sed "s/^/  $f.log: /"
      done
    fi
    if [[ -n ${step_rc[integration]:-} ]]; then
      echo "-- integration (atp_worker_cuda_test):"
      grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/integration.log" 2>/dev/null | sed 's/^/  /'
    fi
    if [[ -n ${step_rc[multi_gpu]:-} ]]; then
      echo "-- multi_gpu (bench/multi_gpu/run.sh):"
      if [[ -s $work/multi_gpu/driver.log ]]; then
        sed -n '/^== pool scaling/,$p' "$work/multi_gpu/driver.log" | sed 's/^/  /'
        tail -n 3 "$work/multi_gpu/driver.log" | grep -E '^atp_pool_scaling:' | sed 's/^/  /'
      else  # it ended before the driver ran: the workers' logs tell why
        tail -n 15 "$OUT/multi_gpu_logs.txt" 2>/dev/null | sed 's/^/  /'
      fi
    fi
  } >"$OUT/summary.txt"
  echo
  echo "=================== summary"
  cat "$OUT/summary.txt"
  rm -rf "$work"
}

main 2>&1 | tee "$OUT/gpu_all.log"
