#!/usr/bin/env bash
# The CUDA backend through the seam on a GPU machine: `atp run ... --backend cuda` against
# `--backend cpu` on the same generated files (every op, f32 and bf16 layers), and `atp-worker
# --backend cuda` started on 127.0.0.1 and asked for liveness and readiness over gRPC health.
# Called by run_all.sh (step "smoke") with the bundle folder as $1; prints one line per check and
# exits non-zero when one fails.
set -uo pipefail
B=$1
A="$B/atp"
W="$B/atp-worker"
work=$(mktemp -d)
cd "$work" || exit 1
fail=0
check() {  # name, command...
  local name=$1; shift
  if "$@" >"$name.log" 2>&1; then echo "ok   $name: $(tail -n 1 "$name.log")"; else
    echo "FAIL $name: $(tail -n 3 "$name.log" | tr '\n' ' ')"; fail=1; fi
}
compare() {  # a.npy b.npy tolerance
  python3 - "$@" <<'PY'
import sys, numpy as np
a, b = np.load(sys.argv[1]).astype(np.float64), np.load(sys.argv[2]).astype(np.float64)
err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)
print(f"{sys.argv[1]} vs {sys.argv[2]}: relative error {err:.2e} (want <= {sys.argv[3]})")
sys.exit(0 if a.shape == b.shape and np.isfinite(a).all() and err <= float(sys.argv[3]) else 1)
PY
}
"$A" generate input --length 3000 --d-model 256 --output x.npy >/dev/null
for dtype in f32 bf16; do
  "$A" generate layer --d-model 256 --heads 4 --kv-heads 2 --bias --dtype "$dtype" \
    --output "layer_$dtype.safetensors" >/dev/null
  tol=1e-4; [[ $dtype == bf16 ]] && tol=2e-2
  for be in cpu cuda; do
    check "atp_${dtype}_$be" "$A" run atp-attention --layer "layer_$dtype.safetensors" --input x.npy \
      --rank 6 --output "atp_${dtype}_$be.npy" --backend "$be"
    check "exact_${dtype}_$be" "$A" run exact-attention --layer "layer_$dtype.safetensors" \
      --input x.npy --causal --output "exact_${dtype}_$be.npy" --backend "$be"
    check "lowrank_${dtype}_$be" "$A" run lowrank-linear --layer "layer_$dtype.safetensors" \
      --weight v_proj --input x.npy --rank 6 --output "lowrank_${dtype}_$be.npy" --backend "$be"
  done
  # The f32 layer sees f32 inputs on both backends: the f32 tolerance. A bf16 layer is computed
  # in f32 on the CPU and with bf16 weights on the GPU: the low-precision tolerance.
  for op in atp exact lowrank; do
    check "compare_${op}_$dtype" compare "${op}_${dtype}_cuda.npy" "${op}_${dtype}_cpu.npy" "$tol"
  done
done
for be in cpu cuda; do
  check "decompose_$be" "$A" run decompose --input x.npy --rank 6 --output-prefix "p_$be" --backend "$be"
done
check compare_singular_values compare p_cuda.s.npy p_cpu.s.npy 1e-5

# The worker on the CUDA backend: liveness ("") and readiness ("atp.v1.Worker") over grpc.health.v1.
"$W" --backend cuda --listen 127.0.0.1:50551 --metrics-listen 127.0.0.1:19090 >worker.log 2>&1 &
pid=$!
check worker_health python3 - <<'PY'
import sys, time, grpc
channel = grpc.insecure_channel("127.0.0.1:50551")
check = channel.unary_unary("/grpc.health.v1.Health/Check")  # raw bytes in and out
def status(service):
    req = b"" if not service else b"\x0a" + bytes([len(service)]) + service.encode()
    return check(req, timeout=2)
deadline = time.time() + 60
while True:
    try:
        live, ready = status(""), status("atp.v1.Worker")
        break
    except grpc.RpcError as e:
        if time.time() > deadline:
            print("worker did not answer:", e.code()); sys.exit(1)
        time.sleep(0.5)
print(f"liveness {live.hex()} readiness {ready.hex()} (080 1 = SERVING)")
sys.exit(0 if live == b"\x08\x01" and ready == b"\x08\x01" else 1)
PY
kill -TERM "$pid" 2>/dev/null
for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
wait "$pid"; echo "worker exit status $? after SIGTERM; backend line: $(grep -m1 -i 'backend' worker.log)"
exit $fail
