#!/usr/bin/env bash
# Runs the pulumi CLI that scripts/setup.sh built (or the one on your PATH),
# offline, with state in .pulumi-state/:  scripts/pulumi.sh up --stack local
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(.venv/bin/python -m tools.toolchain env)"
exec pulumi "$@"
