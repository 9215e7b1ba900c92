#!/usr/bin/env bash
# Sets this project up on a fresh machine: the Python environment, then the
# Pulumi engine and the local Kubernetes control plane, built from their Go
# modules (cached outside the repo; a second run takes seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

# Modules that need a newer Go fetch that toolchain from the module proxy.
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
.venv/bin/python -m tools.toolchain build "${1:-all}" >/dev/null
echo "set up: .venv and the tools in $(.venv/bin/python -c 'from tools.toolchain import cache_root; print(cache_root())')"
