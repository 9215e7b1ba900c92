#!/usr/bin/env bash
# The stacks' records on a cluster's nodes, and releasing the record of a stack that no longer exists.
#   scripts/node-marks.sh list --kubeconfig FILE
#   scripts/node-marks.sh release --kubeconfig FILE --stack PROJECT/STACK [--take-marks-off] [--yes]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m node_marks_plugin.records "$@"
