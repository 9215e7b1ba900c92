#!/usr/bin/env bash
# Runs every test: unit, engine and cluster. Tools that setup.sh should have
# built are required here: a missing one fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export ASM_GATEWAY_REQUIRE_TOOLS=1
exec .venv/bin/python -m pytest "$@"
