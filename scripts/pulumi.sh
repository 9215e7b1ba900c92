#!/usr/bin/env bash
# Runs the pulumi CLI that scripts/setup.sh built (or the one on your PATH),
# offline, with state in your backend or .pulumi-state/. The `local` stack gets
# its published passphrase; any other stack needs its own (see docs/deploying-to-ack.md).
#   scripts/pulumi.sh up --stack local
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m go_tools.toolchain pulumi "$@"
