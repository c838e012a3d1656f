#!/usr/bin/env bash
# Set up .venv and run one benchmark: bash scripts/bench.sh speed|pythae|nll|iwae|cifar [its flags...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
  speed) script=speed.py ;;
  pythae) script=pythae_speed.py ;;  # installs Pythae 0.1.2 into .venv (not a vaekit dependency)
  nll) script=nll.py ;;
  iwae) script=evaluate_iwae.py ;;
  cifar) script=cifar.py ;;
  *) echo "usage: bash scripts/bench.sh speed|pythae|nll|iwae|cifar [flags, e.g. --data-dir ../shared/data/mnist]" >&2; exit 2 ;;
esac
shift
source "$root/scripts/setup.sh"
cd "$root"
if [ "$script" = pythae_speed.py ]; then "$root/.venv/bin/pip" install -q pythae==0.1.2; fi
exec "$root/.venv/bin/python" "benchmarks/$script" "$@"
