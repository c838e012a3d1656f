#!/usr/bin/env bash
# On a machine with a CUDA GPU and torch installed (no .venv, no network needed): the GPU-marked
# tests, one data-parallel run through the CLI (NCCL), then the GPU speed figures. Results go to
# $OUT (default ./gpu-check). MNIST is read from $MNIST_DIR (default ../shared/data/mnist); copy it
# into the checkout where that is not beside it. Each part has its own time limit (seconds, from
# the environment), so a slow part leaves the rest their time and what it measured so far; PARTS
# names the parts to run (default: all of tests ddp profile graph speed-mnist speed-cifar
# speed-mnist-compiled speed-cifar-compiled):
#   bash scripts/gpu_check.sh
#   TESTS_S=300 SPEED_S=120 bash scripts/gpu_check.sh
#   PARTS="tests profile" bash scripts/gpu_check.sh
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$root/gpu-check}"
mnist="${MNIST_DIR:-$root/../shared/data/mnist}"
mkdir -p "$out"
cd "$root"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
log="$out/gpu_speed.log"
limited() { local s="$1"; shift; timeout -s INT -k 20 "$s" "$@"; }
status=0
want() { [ -z "${PARTS:-}" ] || [[ " $PARTS " == *" $1 "* ]]; }
note() { echo "$1: exit $2" | tee -a "$log"; [ "$2" = 0 ] || status=1; }

nvidia-smi > "$out/nvidia-smi.txt" 2>&1
"$py" -c "import torch, vaekit.optim as o
p = torch.nn.Linear(2, 2).cuda()
print('fused Adam kernel on cuda:', o._fused_kernel_runs(next(p.parameters())))" 2>&1 | tee -a "$log"

want tests && { limited "${TESTS_S:-210}" "$py" -m pytest -v -rs --durations=12 -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 \
  | tee "$out/pytest-gpu.log"
note "gpu tests" "${PIPESTATUS[0]}"; }

run="$(mktemp -d)/ddp"
want ddp && { { limited "${DDP_S:-60}" "$py" -m vaekit train --preset digits-mlp --device cuda --nproc 1 --epochs 2 --out "$run" \
  && limited 30 "$py" -m vaekit evaluate "$run" --device cuda --iwae-k 20 --no-progress; } 2>&1 | tee -a "$log"
note "train --nproc 1 --device cuda (NCCL), then evaluate" "${PIPESTATUS[0]}"; }

want profile && { limited "${PROFILE_S:-90}" "$py" benchmarks/gpu_profile.py --data-dir "$mnist" \
  --out "$out/gpu_profile.txt" 2>&1 | tail -n 40 >> "$log"; note "profile" "${PIPESTATUS[0]}"; }

want graph && { limited "${GRAPH_S:-180}" "$py" benchmarks/gpu_graph.py --data-dir "$mnist" 2>&1 | tee -a "$log"
  note "whole step as a CUDA graph" "${PIPESTATUS[0]}"; }

speed() {  # seconds, JSON name, then gpu_speed.py's flags
  local s="$1" name="$2"; shift 2
  want "$name" || return 0
  limited "$s" "$py" benchmarks/gpu_speed.py --data-dir "$mnist" --out "$out/$name.json" "$@" 2>&1 | tee -a "$log"
  note "speed $name" "${PIPESTATUS[0]}"
}
speed "${SPEED_S:-70}" speed-mnist --only example,mnist-mlp --precisions fp32,bf16 --compile no --epochs 5
speed "${SPEED_S:-80}" speed-cifar --only cifar10-resnet --precisions bf16,fp32 --compile no --epochs 3
speed "${SPEED_S:-70}" speed-mnist-compiled --only example,mnist-mlp --precisions fp32 --compile yes --epochs 5
speed "${SPEED_S:-90}" speed-cifar-compiled --only cifar10-resnet --precisions bf16 --compile yes --epochs 3
exit $status
