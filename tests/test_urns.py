"""No refactor renames a resource by accident: every stack's URNs, under Pulumi mocks, against a record.

A URN that changes without an alias makes the engine delete and recreate the
resource (a node pool, the mesh, a gateway). When a change is deliberate,
add the alias (or say why none is needed) and rewrite the record:

    UPDATE_URN_RECORD=1 .venv/bin/python -m pytest tests/test_urns.py
"""

from __future__ import annotations

import json
import os

import pytest
from mock_stack import ROOT, STACK_NAMES, run_stack_file

RECORD = ROOT / "tests" / "stack_urns.json"


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_the_stacks_urns_are_the_recorded_ones(stack: str) -> None:
    urns = sorted(r.urn for r in run_stack_file(stack).resources)
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    if os.environ.get("UPDATE_URN_RECORD"):
        record[stack] = urns
        RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    recorded = record.get(stack, [])
    assert set(urns) - set(recorded) == set(), "new URNs: deliberate? then UPDATE_URN_RECORD=1"
    assert set(recorded) - set(urns) == set(), "URNs gone: an alias is missing, or UPDATE_URN_RECORD=1"
