#!/usr/bin/env bash
# Create or reuse .venv and install vaekit with its dependencies into it.
# Sourced by demo.sh and test.sh; safe to run again (it skips what is already done).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
# --no-compile: byte-compiling every installed file takes longer than the install itself.
# Python then compiles what is actually imported, once, if it may write bytecode: some
# environments forbid that (PYTHONDONTWRITEBYTECODE), which would recompile torch every start.
unset PYTHONDONTWRITEBYTECODE
pip_install() {
  local log
  log="$(mktemp)"
  if ! "$venv/bin/python" -m pip -q --disable-pip-version-check install --no-compile "$@" >"$log" 2>&1; then
    grep -v -E '^WARNING: Location .* is ignored' "$log" >&2
    rm -f "$log"
    echo "setup: pip install failed" >&2
    return 1
  fi
  rm -f "$log"
}

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"

torch_req=()
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  # A CPU wheel of torch 2.13.0 lying on local disk installs in seconds; elsewhere pip takes
  # the newest torch that pyproject.toml allows (>= 2.1), downloading it once.
  tmp="$(mktemp -d)"
  if "$venv/bin/python" -m pip download -q --no-deps --no-index torch==2.13.0 -d "$tmp" >/dev/null 2>&1; then
    echo "setup: torch 2.13.0 from local disk"
    torch_req=("torch==2.13.0")
  fi
  rm -rf "$tmp"
fi

stamp="$venv/.vaekit-installed"
want="$(cksum < "$root/pyproject.toml")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$venv/bin/python" -c "import torch, vaekit" 2>/dev/null; then
  echo "setup: installing vaekit and its dependencies into .venv"
  pip_install "${torch_req[@]}" -e "$root[test]"
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -c "import torch, vaekit" || { echo "setup: torch or vaekit failed to import" >&2; exit 1; }
