#!/usr/bin/env bash
# A pool of atp workers across the GPUs of one host (issue 7): starts one `atp-worker` per GPU
# (pinned with CUDA_VISIBLE_DEVICES) on 127.0.0.1 with ports the workers pick, health-checks them,
# then runs atp_pool_scaling (bench/multi_gpu/pool_scaling.cc): throughput with 1..N workers on a
# fixed workload of ATP attention layers, then the same with N workers and one SIGKILLed part way
# (every result checked against a single-worker reference, the failover pause measured). When the
# host has fewer GPUs than workers, the workers share the GPUs round-robin and the output says so.
# With --backend cpu the same script runs anywhere (at a small size). Every wait is bounded; the
# workers are stopped on every exit path.
#
# usage: bench/multi_gpu/run.sh [options] [-- extra atp_pool_scaling flags]
#   --backend cuda|cpu     worker backend (default cuda)
#   --workers N            workers (default: one per GPU when there are >= 2 GPUs, else 4 sharing
#                          the one GPU; 3 with --backend cpu)
#   --length L --d-model D --heads H --kv-heads K --head-dim E --rank R --dtype bf16|f32
#                          the layer and input (default 16384, 4096, 32, 32, 128, 512, bf16)
#   --requests N           timed requests per worker count (default 0: as many as one worker
#                          running them one by one finishes in about 15 s, from 16 to 256)
#   --kill-requests N      requests of the failover run (default: --requests)
#   --inflight-per-worker N  requests in flight per worker (default 4)
#   --layers N --inputs N  distinct layers and inputs (default 2 and 3)
#   --counts LIST          worker counts to measure (default 1,2,...,N)
#   --threads N            CPU backend threads per worker (default: cores / workers)
#   --bin DIR              folder holding atp-worker, atp_pool_scaling and atp (a bundle folder);
#                          default: the build folder $ATP_BUILD_DIR (default build)
#   --log-dir DIR          where the worker and driver logs go (default: a temporary folder)
#   --json PATH            machine-readable summary (default $OUT/multi_gpu.json when $OUT is set)
#   --time-limit S         limit of the driver run in seconds (default 420)
#   --start-timeout S      how long the workers may take to start and become ready (default 120)
# Environment: OUT (optional): the summary JSON and the concatenated logs are copied there.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

backend=cuda workers="" length=16384 d_model=4096 heads=32 kv_heads="" head_dim=128 rank=512
dtype=bf16 requests=0 kill_requests="" inflight=4 layers=2 inputs=3 counts="" threads=""
bin="" log_dir="" json="" time_limit=420 start_timeout=120
extra=()
die() { echo "run.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    --backend) backend=${2:?}; shift ;;
    --workers) workers=${2:?}; shift ;;
    --length) length=${2:?}; shift ;;
    --d-model) d_model=${2:?}; shift ;;
    --heads) heads=${2:?}; shift ;;
    --kv-heads) kv_heads=${2:?}; shift ;;
    --head-dim) head_dim=${2:?}; shift ;;
    --rank) rank=${2:?}; shift ;;
    --dtype) dtype=${2:?}; shift ;;
    --requests) requests=${2:?}; shift ;;
    --kill-requests) kill_requests=${2:?}; shift ;;
    --inflight-per-worker) inflight=${2:?}; shift ;;
    --layers) layers=${2:?}; shift ;;
    --inputs) inputs=${2:?}; shift ;;
    --counts) counts=${2:?}; shift ;;
    --threads) threads=${2:?}; shift ;;
    --bin) bin=${2:?}; shift ;;
    --log-dir) log_dir=${2:?}; shift ;;
    --json) json=${2:?}; shift ;;
    --time-limit) time_limit=${2:?}; shift ;;
    --start-timeout) start_timeout=${2:?}; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ $backend == cuda || $backend == cpu ]] || die "--backend $backend: want cuda or cpu"
for v in length d_model heads head_dim rank inflight layers inputs time_limit start_timeout; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} ${!v}: want a positive integer"
done
[[ $requests =~ ^[0-9]+$ ]] || die "--requests $requests: want a number (0: automatic)"

# Binaries: a bundle folder (launchers) or a build folder.
if [[ -n $bin ]]; then
  worker_bin=$bin/atp-worker driver_bin=$bin/atp_pool_scaling atp_bin=$bin/atp
else
  build=${ATP_BUILD_DIR:-$root/build}
  worker_bin=$build/service/atp-worker driver_bin=$build/bench/multi_gpu/atp_pool_scaling
  atp_bin=$build/tools/cli/atp
fi
[[ -x $worker_bin ]] || die "no atp-worker at $worker_bin (use --bin DIR or ATP_BUILD_DIR)"
[[ -x $driver_bin ]] || die "no atp_pool_scaling at $driver_bin (use --bin DIR or ATP_BUILD_DIR)"
[[ -x $atp_bin ]] || atp_bin=""

# GPUs and the worker placement.
gpus=0
if [[ $backend == cuda ]]; then
  gpus=$(timeout 30 nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | grep -c '^[0-9]')
  [[ $gpus -ge 1 ]] || die "--backend cuda but nvidia-smi lists no GPU"
  [[ -n $workers ]] || { if [[ $gpus -ge 2 ]]; then workers=$gpus; else workers=4; fi; }
else
  [[ -n $workers ]] || workers=3
fi
[[ $workers =~ ^[1-9][0-9]*$ ]] || die "--workers $workers: want a positive integer"
cores=$(nproc 2>/dev/null || echo 2)
[[ -n $threads ]] || threads=$(( cores / workers > 0 ? cores / workers : 1 ))
note=""
if [[ $backend == cuda ]]; then
  if [[ $gpus -lt $workers ]]; then
    note="$workers workers SHARE $gpus GPU(s) (worker i on GPU i mod $gpus): the scaling below is of workers on shared GPUs, not of GPUs"
  else
    note="$workers workers on $gpus GPU(s), one GPU each"
  fi
else
  note="CPU backend, $workers workers x $threads thread(s) on $cores core(s) of this machine"
fi
echo "run.sh: $note"

[[ -n $log_dir ]] || log_dir=$(mktemp -d)
mkdir -p "$log_dir" || die "cannot create $log_dir"
if [[ -z $json && -n ${OUT:-} ]]; then mkdir -p "$OUT" && json=$OUT/multi_gpu.json; fi

# Room for the requests a worker holds at once (inputs and outputs, with headroom).
elem=2; [[ $dtype == f32 ]] && elem=4
need=$(( 3 * inflight * length * d_model * elem ))
inflight_bytes=$(( need > (4 << 30) ? need : (4 << 30) ))

pids=() ports=()
# shellcheck disable=SC2317  # (called from the EXIT trap)
stop_workers() {
  local pid i
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for i in $(seq 1 100); do  # up to 20 s for a drain
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" 2>/dev/null; echo "worker $i (pid ${pids[$i]}) exit status $?"
  done >"$log_dir/worker_exits.txt" 2>/dev/null  # (not bash's "Killed" notice of the killed one)
  pids=()
}
# shellcheck disable=SC2317
finish() {
  local rc=$?
  stop_workers
  if [[ -n ${OUT:-} ]]; then
    mkdir -p "$OUT"
    for f in "$log_dir"/driver.log "$log_dir"/worker*.log "$log_dir"/worker_exits.txt; do
      [[ -f $f ]] && { echo "=== $(basename "$f")"; cat "$f"; }
    done >"$OUT/multi_gpu_logs.txt" 2>/dev/null
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Start the workers; each picks a free port and names it in its "worker started" line.
for ((i = 0; i < workers; i++)); do
  args=(--backend="$backend" --device=0 --listen=127.0.0.1:0 --metrics-listen= --threads="$threads"
        --max-inflight-bytes="$inflight_bytes" --drain-timeout=5)
  if [[ $backend == cuda ]]; then
    CUDA_VISIBLE_DEVICES=$(( i % gpus )) "$worker_bin" "${args[@]}" >"$log_dir/worker$i.log" 2>&1 &
  else
    "$worker_bin" "${args[@]}" >"$log_dir/worker$i.log" 2>&1 &
  fi
  pids+=($!)
done
deadline=$(( SECONDS + start_timeout ))
for ((i = 0; i < workers; i++)); do
  port=""
  while [[ -z $port ]]; do
    port=$(grep -m1 'msg="worker started"' "$log_dir/worker$i.log" 2>/dev/null | grep -o ' port=[0-9]*' | cut -d= -f2)
    [[ -n $port ]] && break
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "run.sh: worker $i exited before it started; its log:" >&2; tail -n 20 "$log_dir/worker$i.log" >&2; exit 1
    fi
    if [[ $SECONDS -ge $deadline ]]; then
      echo "run.sh: worker $i did not start within $start_timeout s; its log:" >&2; tail -n 20 "$log_dir/worker$i.log" >&2; exit 1
    fi
    sleep 0.2
  done
  ports+=("$port")
done
if [[ -n $atp_bin ]]; then
  for ((i = 0; i < workers; i++)); do
    left=$(( deadline - SECONDS > 5 ? deadline - SECONDS : 5 ))
    if ! timeout $((left + 10)) "$atp_bin" health --target "127.0.0.1:${ports[$i]}" --wait "$left" --timeout 5 >/dev/null 2>&1; then
      echo "run.sh: worker $i (127.0.0.1:${ports[$i]}) is not SERVING; its log:" >&2
      tail -n 20 "$log_dir/worker$i.log" >&2; exit 1
    fi
  done
  echo "run.sh: $workers workers SERVING (atp health) on 127.0.0.1 ports ${ports[*]}"
else
  echo "run.sh: $workers workers started on 127.0.0.1 ports ${ports[*]} (no atp CLI for a health check; the driver waits for readiness)"
fi
for ((i = 0; i < workers; i++)); do
  gpu=""; [[ $backend == cuda ]] && gpu=" CUDA_VISIBLE_DEVICES=$(( i % gpus ))"
  echo "  worker $i pid ${pids[$i]}$gpu: $(grep -m1 'msg="worker started"' "$log_dir/worker$i.log" | grep -o 'backend=.*device="[^"]*"')"
done

targets=$(printf '127.0.0.1:%s,' "${ports[@]}"); targets=${targets%,}
pid_list=$(IFS=,; echo "${pids[*]}")
driver_args=(--targets="$targets" --pids="$pid_list" --length="$length" --d-model="$d_model"
             --heads="$heads" --head-dim="$head_dim" --rank="$rank" --dtype="$dtype"
             --requests="$requests" --inflight-per-worker="$inflight" --layers="$layers"
             --inputs="$inputs" --note="$note")
[[ -n $kv_heads ]] && driver_args+=(--kv-heads="$kv_heads")
[[ -n $kill_requests ]] && driver_args+=(--kill-requests="$kill_requests")
[[ -n $counts ]] && driver_args+=(--counts="$counts")
[[ -n $json ]] && driver_args+=(--json="$json")
# (The shell's own stderr is closed over this block: bash would report the worker the driver kills
# as "Killed" there; the driver's messages go through the pipe.)
{
  timeout --kill-after=10 "$time_limit" "$driver_bin" "${driver_args[@]}" "${extra[@]}" 2>&1 |
    tee "$log_dir/driver.log"
  rc=${PIPESTATUS[0]}
} 2>/dev/null
[[ $rc == 124 || $rc == 137 ]] && echo "run.sh: the driver ran past --time-limit $time_limit s" >&2
echo "run.sh: driver exit status $rc; logs in $log_dir"
exit "$rc"
