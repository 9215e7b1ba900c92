#!/usr/bin/env bash
# Checks, before an `up`, that a stack's kubeconfigs reach their APIs and may do
# everything the stack will do there; or writes the RBAC and RAM policy to grant.
#   scripts/preflight.sh --stack prod
#   scripts/preflight.sh permissions --stack prod [--subject user:NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m preflight "$@"
