#!/usr/bin/env bash
# On a machine with a CUDA GPU and torch installed (no .venv, no network needed): the GPU-marked
# tests, then the GPU speed figures. Results go to $OUT (default ./gpu-check). MNIST is read from
# $MNIST_DIR (default ../shared/data/mnist); copy it into the checkout where that is not beside it.
#   bash scripts/gpu_check.sh
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$root/gpu-check}"
mnist="${MNIST_DIR:-$root/../shared/data/mnist}"
mkdir -p "$out"
cd "$root"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
"$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$out/pytest-gpu.log"
tests=${PIPESTATUS[0]}
"$py" benchmarks/gpu_speed.py --data-dir "$mnist" --out "$out/gpu_speed.json" 2>&1 | tee "$out/gpu_speed.log"
speed=${PIPESTATUS[0]}
echo "gpu tests: exit $tests; speed: exit $speed"
[ "$tests" = 0 ] && [ "$speed" = 0 ]
