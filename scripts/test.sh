#!/usr/bin/env bash
# Runs every test: unit, engine and cluster. Builds the local Kubernetes
# control plane first if it is not built yet (a cold build takes a long while
# and prints its progress). Tools that set-up should have built are required
# here: a missing one fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
case "$*" in
  *"not cluster"*) ;;  # the quick loop needs no control plane
  *) .venv/bin/python -m go_tools.toolchain build cluster >/dev/null ;;
esac
export ASM_GATEWAY_REQUIRE_TOOLS=1
exec .venv/bin/python -m pytest "$@"
