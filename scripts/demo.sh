#!/usr/bin/env bash
# The main job: set up .venv, train the default VAE on scikit-learn's digits, print where results are.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
out="${1:-runs/demo}"
"$root/.venv/bin/vaekit" train --preset digits-mlp --out "$out" --overwrite
exec "$root/.venv/bin/vaekit" report "$out"
