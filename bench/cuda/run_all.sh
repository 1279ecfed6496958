#!/usr/bin/env bash
# Runs the whole CUDA measurement on a GPU machine in one go: the gpu tests, our benchmark
# (atp_cuda_bench) and the PyTorch anchors (anchors.py) in the same session, then the summary
# tables (summarize.py). Binaries come prebuilt in a bundle made by make_bundle.sh (the GPU
# machine has no gRPC/abseil/GoogleTest); cuDNN is PyTorch's copy.
#
# usage: bench/cuda/run_all.sh            (writes to $OUT, default a temporary folder)
#   STEPS="tests smoke bench anchors"  which steps to run (default: all; smoke = the CLI and the
#                                 worker on the CUDA backend, when the bundle has them)
#   BENCH_ARGS="..."              extra atp_cuda_bench flags; ANCHOR_ARGS likewise for anchors.py
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
BUNDLE=${BUNDLE:-.bundle/atp-cuda.tar.xz}
STEPS=${STEPS:-tests smoke bench anchors}
work=$(mktemp -d)
tar -xJf "$BUNDLE" -C "$work" || { echo "run_all: cannot unpack $BUNDLE" >&2; exit 1; }
B=$work/atp-cuda
nv=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
# cuDNN first (dlopen'ed by the backend); PyTorch's other CUDA libraries only as a last resort.
export LD_LIBRARY_PATH="$nv/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for d in "$nv"/*/lib; do [[ -d $d && $d != "$nv/cudnn/lib" ]] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"; done
export PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv
  uname -r; ldd --version | head -1
  cat "$B/MANIFEST.txt"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  for l in libcudnn.so.9 libcudart.so.13 libcublas.so.13 libcusolver.so.12; do
    echo "$l: $( (ldconfig -p; for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d"/$l 2>/dev/null; done) | grep -m1 "$l" || echo missing)"
  done
} >"$OUT/diag.txt" 2>&1
echo "== diag"; tail -n 8 "$OUT/diag.txt"

if [[ " $STEPS " == *" tests "* ]]; then
  echo "== gpu tests"
  ATP_EXPECT_CUDNN=1 timeout 150 "$B/atp_cuda_test" --gtest_brief=1 >"$OUT/tests.log" 2>&1
  echo "atp_cuda_test rc=$?"; grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED  \]|Failure|error" "$OUT/tests.log" | head -n 40
  ATP_EXPECT_CUDNN=1 timeout 90 "$B/atp_cuda_device_test" --gtest_brief=1 >"$OUT/device_tests.log" 2>&1
  echo "atp_cuda_device_test rc=$?"; grep -E "^\[  (PASSED|FAILED|SKIPPED)|FAILED  \]|Failure|error" "$OUT/device_tests.log" | head -n 30
fi
if [[ " $STEPS " == *" smoke "* && -x "$B/atp-worker" ]]; then
  echo "== atp and atp-worker on the CUDA backend"
  timeout 150 bash bench/cuda/smoke_cli_worker.sh "$B" >"$OUT/smoke.log" 2>&1
  echo "smoke rc=$?"; cat "$OUT/smoke.log"
fi
if [[ " $STEPS " == *" bench "* ]]; then
  echo "== atp_cuda_bench"
  # shellcheck disable=SC2086
  timeout 210 "$B/atp_cuda_bench" --json "$OUT/ours.jsonl" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
  echo "atp_cuda_bench rc=$?"; tail -n 3 "$OUT/bench.log"
fi
if [[ " $STEPS " == *" anchors "* ]]; then
  echo "== PyTorch anchors"
  # shellcheck disable=SC2086
  timeout 130 python3 bench/cuda/anchors.py --json "$OUT/anchors.jsonl" ${ANCHOR_ARGS:-} >"$OUT/anchors.log" 2>&1
  echo "anchors rc=$?"; tail -n 2 "$OUT/anchors.log"
fi
python3 bench/cuda/summarize.py "$OUT/ours.jsonl" "$OUT/anchors.jsonl" >"$OUT/summary.md" 2>&1
echo "== summary"; cat "$OUT/summary.md"
rm -rf "$work"
