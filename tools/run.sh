#!/usr/bin/env bash
# The README's first command (interim version, until the worker and the client exist): installs
# what is missing, builds the `atp` CLI, generates an attention layer and a low-rank input, runs
# every `atp run` op on them and prints what each computed. Idempotent: rerunning rebuilds only what
# changed and uses a fresh temporary directory.
#
# Environment: ATP_BUILD_DIR (default build), ATP_JOBS (default: all cores), ATP_BACKEND (cpu),
# ATP_RUN_LENGTH (4096 tokens), ATP_RUN_D_MODEL (512), ATP_RUN_HEADS (8), ATP_RUN_KV_HEADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${ATP_BUILD_DIR:-build}
jobs=${ATP_JOBS:-$(nproc)}
backend=${ATP_BACKEND:-cpu}
length=${ATP_RUN_LENGTH:-4096}
d_model=${ATP_RUN_D_MODEL:-512}
heads=${ATP_RUN_HEADS:-8}
kv_heads=${ATP_RUN_KV_HEADS:-2}

step() { printf '\n== %s\n' "$*"; }
fail_with_log() {
  echo "run.sh: $1 failed; last lines of $2:" >&2
  tail -n 30 "$2" >&2
  exit 1
}

step "setup"
tools/setup.sh

step "build ($build, target atp, -j$jobs)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >"$build.configure.log" 2>&1 ||
  fail_with_log "cmake configure" "$build.configure.log"
cmake --build "$build" --target atp -j"$jobs" >"$build.build.log" 2>&1 ||
  fail_with_log "the build" "$build.build.log"
atp="$build/tools/cli/atp"
echo "built $atp ($("$atp" --version))"

work=$(mktemp -d "${TMPDIR:-/tmp}/atp-run.XXXXXX")
trap 'rm -rf "$work"' EXIT

step "generate (in $work)"
"$atp" generate layer --d-model "$d_model" --heads "$heads" --kv-heads "$kv_heads" --bias \
  --key-scale inv_sqrt_len --seed 1 --output "$work/layer.safetensors"
"$atp" generate input --length "$length" --d-model "$d_model" --components 16 --seed 2 \
  --output "$work/x.npy"

# field NAME LINE: the value of NAME=... in an `atp run` result line ("-" when absent).
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2" | grep . || echo "-"; }

declare -A compute_ms
row() {  # row LABEL RESULT_LINE
  printf '%-36s %5s  %-8s  %-18s %10s ms\n' "$1" "$(field rank "$2")" "$(field energy "$2")" \
    "$(field shape "$2")" "$(field compute_ms "$2")"
}

step "run (backend $backend, L=$length, d_model=$d_model, heads=$heads, kv_heads=$kv_heads)"
printf '%-36s %5s  %-8s  %-18s %13s\n' "op" "rank" "energy" "output" "time"
L="$work/layer.safetensors"
X="$work/x.npy"
common=(--backend "$backend")

line=$("$atp" run atp-attention --layer "$L" --input "$X" --output "$work/y_atp.npy" "${common[@]}")
row "atp-attention (layer default)" "$line"
compute_ms[atp]=$(field compute_ms "$line")

line=$("$atp" run atp-attention --layer "$L" --input "$X" --rank 64 --output "$work/y_atp64.npy" \
  "${common[@]}")
row "atp-attention --rank 64" "$line"

line=$("$atp" run atp-attention --layer "$L" --input "$X" --rank-fraction 0.01 \
  --output "$work/y_atp_frac.npy" "${common[@]}")
row "atp-attention --rank-fraction 0.01" "$line"

line=$("$atp" run exact-attention --layer "$L" --input "$X" --output "$work/y_exact.npy" \
  "${common[@]}")
row "exact-attention" "$line"
compute_ms[exact]=$(field compute_ms "$line")

line=$("$atp" run exact-attention --layer "$L" --input "$X" --causal \
  --output "$work/y_causal.npy" "${common[@]}")
row "exact-attention --causal" "$line"

line=$("$atp" run lowrank-linear --layer "$L" --weight q_proj --input "$X" --rank-energy 0.999 \
  --output "$work/y_q.npy" "${common[@]}")
row "lowrank-linear q_proj (energy .999)" "$line"

line=$("$atp" run decompose --input "$X" --rank-energy 0.99 --output-prefix "$work/p" \
  "${common[@]}")
printf '%-36s %5s  %-8s  %-18s %10s ms\n' "decompose (energy .99)" "$(field rank "$line")" \
  "$(field energy "$line")" "u$(field u "$line") vt$(field vt "$line")" \
  "$(field compute_ms "$line")"

step "summary"
awk -v a="${compute_ms[atp]}" -v e="${compute_ms[exact]}" 'BEGIN { if (a > 0)
  printf "ATP attention took %.1f ms, exact attention %.1f ms: %.1fx faster\n", a, e, e / a }'
if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
  /usr/bin/python3 - "$work" <<'EOF'
import sys, numpy as np
w = sys.argv[1]
exact = np.load(f"{w}/y_exact.npy").astype(np.float64)
for name, label in (("y_atp", "layer default"), ("y_atp64", "rank 64")):
    y = np.load(f"{w}/{name}.npy").astype(np.float64)
    print(f"ATP ({label}) vs exact attention: relative difference "
          f"{np.linalg.norm(y - exact) / np.linalg.norm(exact):.3f}")
EOF
  echo "(ATP is its own function, not an approximation of exact attention: models are"
  echo " fine-tuned with it, so the difference above is expected.)"
fi
echo "done: every op ran; outputs were in $work (removed on exit)"
