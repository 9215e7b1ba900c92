#!/usr/bin/env bash
# Sets this project up on a fresh machine: the Python environment, then the
# Pulumi engine built from its Go modules (cached outside the repo; a second
# run takes seconds). `scripts/setup.sh all` also builds the local Kubernetes
# control plane now, which scripts/test.sh otherwise builds on its first run.
set -euo pipefail
cd "$(dirname "$0")/.."

# requirements.lock pins wheels (and their hashes) for Python 3.11.
is_311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }
if [ ! -x .venv/bin/python ]; then
  python="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
  if [ -z "$python" ] || ! is_311 "$python"; then
    echo "error: set-up needs Python 3.11 (requirements.lock is for it); install it, or point PYTHON at one" >&2
    exit 1
  fi
  "$python" -m venv .venv
elif ! is_311 .venv/bin/python; then
  echo "error: .venv is not Python 3.11 (requirements.lock is for it); remove .venv and run set-up again" >&2
  exit 1
fi
echo "installing the Python packages into .venv ..." >&2
# Exactly the locked versions, each checked against its hash (requirements.lock,
# compiled from requirements-dev.txt; docs/tests-and-figures.md says how to update it).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
group="${1:-engine}"   # engine, cluster or all
.venv/bin/python -m go_tools.toolchain build "$group" >/dev/null
if [ "$group" != cluster ]; then
  # With the virtualenv active, `pulumi` is the engine built above.
  engine="$(.venv/bin/python -c 'from go_tools.toolchain import engine_bin_dir; print(engine_bin_dir())')"
  ln -sfn "$engine/pulumi" .venv/bin/pulumi
  mkdir -p .pulumi-state
fi
echo "set up: .venv, and the tools in $(.venv/bin/python -c 'from go_tools.toolchain import cache_root; print(cache_root())')"
