"""Upgrading a live stack from the version whose node marks were Pulumi dynamic resources.

The earlier version's own files (from git) run `up` on the control plane; this
version then runs `up` on the same state. Every mark must stay on the nodes
through the upgrade, and `destroy` must still take back what the earlier
version put on (it is recognised by its field manager) and nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import asm_standin
import kubernetes
import pytest
from control_plane import running_control_plane
from engine_project import EngineProject, beside_the_rebalancer, changed_steps, checkout
from node_inventory import NodeSpec, ack_virtual_node, create_nodes

pytestmark = [pytest.mark.cluster, pytest.mark.engine]

# The last commit whose node marks were dynamic resources.
DYNAMIC_VERSION = "a1adf90"
NODES = ["edge-a", "edge-b"]
LABEL = {"edge.example.com/role": "gateway"}
TAINT = {"key": "edge.example.com/dedicated", "value": "gateway", "effect": "NoSchedule"}
THEIRS = {"key": "team.example.com/maintenance", "value": "true", "effect": "NoSchedule"}


def marks(api: kubernetes.client.ApiClient) -> dict[str, Any]:
    core = kubernetes.client.CoreV1Api(api)
    found = {}
    for name in NODES:
        node = core.read_node(name)
        found[name] = (
            {k: v for k, v in node.metadata.labels.items() if k.startswith(("edge.", "team."))},
            sorted((t.key, t.value, t.effect) for t in node.spec.taints or []),
        )
    return found


def stack_marks(found: dict[str, Any], name: str) -> tuple[bool, bool]:
    """Whether a node carries the stack's label, and its taint."""
    labels, taints = found[name]
    return labels.get("edge.example.com/role") == "gateway", tuple(TAINT.values()) in taints


@pytest.mark.parametrize(
    "how", ["up, then destroy", "a node dropped in the upgrading up", "destroy before any up"]
)
def test_upgrading_from_dynamic_node_marks_keeps_every_mark_and_destroy_takes_back_the_stacks(
    tmp_path: Path, how: str
) -> None:
    old_source = checkout(DYNAMIC_VERSION, tmp_path / "source")
    with running_control_plane(tmp_path) as (plane, api):
        create_nodes(
            api,
            [
                NodeSpec("edge-a", cpu="7800m", memory="30Gi"),
                NodeSpec("edge-b", cpu="7800m", memory="30Gi", taints=(THEIRS,)),
                ack_virtual_node("virtual-kubelet-0"),
            ],
        )
        asm_standin.install(api, "istio-system")

        def point_at_cluster(config: dict[str, Any]) -> None:
            config.pop("renderYamlTo")
            config["ecsCapacity"] = {
                "mode": "existingNodes",
                "nodes": NODES,
                "labels": LABEL,
                "taints": [TAINT],
            }
            config["virtualNodes"] = {"mode": "existing"}

        old = EngineProject(tmp_path, source=old_source, folder="old")
        old.stack_on_cluster("local", plane.kubeconfig, point_at_cluster).up()
        deployed = marks(api)
        assert all(stack_marks(deployed, name) == (True, True) for name in NODES)

        new = EngineProject(tmp_path, folder="new")  # same backend: the same state
        shutil.copy2(old.stack_file("local"), new.stack_file("local"))
        stack = new.stack("local")
        if how == "a node dropped in the upgrading up":
            new.edit_config("local", lambda config: config["ecsCapacity"].update(nodes=["edge-a"]))
        if how != "destroy before any up":
            steps = beside_the_rebalancer(changed_steps(stack))
            print(
                f"\nthe upgrade's preview ({how}):", *(f"  {s.op} {s.type} {s.name}" for s in steps), sep="\n"
            )
            assert [s for s in steps if s.op not in ("create", "delete")] == [], (
                "more than the node marks change"
            )
            assert all("NodeMarks" in s.type or "providers" in s.type for s in steps)
            stack.up()
            kept = marks(api)
            assert stack_marks(kept, "edge-a") == (True, True)
            if how == "a node dropped in the upgrading up":
                # The earlier resource of the dropped node takes its marks back, as it always did.
                assert stack_marks(kept, "edge-b") == (False, False)
            else:
                assert kept == deployed
            stack.preview(expect_no_changes=True)

        stack.destroy()
        after = marks(api)
        assert all(stack_marks(after, name) == (False, False) for name in NODES), after
        assert tuple(THEIRS.values()) in after["edge-b"][1]
