"""The pure half of node marking: what each stage writes, and what it leaves alone."""

from __future__ import annotations

from typing import Any

import pytest

from components.node_marks import (
    ADMIT,
    RESTRICT,
    Marks,
    NodeChange,
    node_patch,
    stage_change,
    untolerating_pods,
)
from components.scheduling import Taint

OURS = Taint("mykey", "myvalue", "NoSchedule")
NOT_READY = {
    "key": "node.kubernetes.io/not-ready",
    "effect": "NoExecute",
    "timeAdded": "2026-11-27T10:00:00Z",
}
UNSCHEDULABLE = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
TEAM = {"key": "team.example.com/maintenance", "value": "true", "effect": "NoSchedule"}


def node(labels: dict[str, str], taints: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "n", "resourceVersion": "42", "labels": labels},
        "spec": {"unschedulable": True, "taints": taints},
    }


def test_adding_a_taint_keeps_every_foreign_taint_as_it_was_and_in_place() -> None:
    patch = node_patch(node({}, [NOT_READY, TEAM, UNSCHEDULABLE]), NodeChange(add_taints=[OURS]))
    assert patch is not None
    assert patch["spec"]["taints"] == [NOT_READY, TEAM, UNSCHEDULABLE, OURS.as_node_taint()]
    # Optimistic concurrency: the write fails if anyone wrote since the read.
    assert patch["metadata"]["resourceVersion"] == "42"
    assert "unschedulable" not in patch["spec"]


def test_dropping_a_taint_removes_only_that_taint() -> None:
    before = node({}, [TEAM, OURS.as_node_taint(), NOT_READY])
    patch = node_patch(before, NodeChange(drop_taints=[OURS]))
    assert patch is not None and patch["spec"]["taints"] == [TEAM, NOT_READY]


def test_a_taint_someone_else_changed_is_not_dropped_as_ours() -> None:
    theirs = {"key": "mykey", "value": "other", "effect": "NoSchedule"}
    assert node_patch(node({}, [theirs]), NodeChange(drop_taints=[OURS])) is None


def test_a_taint_in_the_same_key_and_effect_is_overwritten_like_kubectl_taint() -> None:
    old = {"key": "mykey", "value": "old", "effect": "NoSchedule"}
    patch = node_patch(node({}, [TEAM, old]), NodeChange(add_taints=[OURS]))
    assert patch is not None and patch["spec"]["taints"] == [TEAM, OURS.as_node_taint()]


def test_labels_are_merged_key_by_key_and_dropped_only_while_ours() -> None:
    before = node({"team": "batch", "old": "ours", "kept": "changed-by-someone"}, [])
    change = NodeChange(set_labels={"mykey4pod": "asmgateway"}, drop_labels={"old": "ours", "kept": "ours"})
    patch = node_patch(before, change)
    assert patch is not None
    assert patch["metadata"]["labels"] == {"mykey4pod": "asmgateway", "old": None}
    assert "spec" not in patch


def test_a_node_that_already_holds_the_change_is_not_written() -> None:
    assert (
        node_patch(node({"a": "b"}, [OURS.as_node_taint()]), NodeChange({"a": "b"}, add_taints=[OURS]))
        is None
    )


NEW = Taint("dedicated", "gateway", "NoExecute")


@pytest.mark.parametrize(
    ("what", "old", "new", "admit", "restrict"),
    [
        (
            "taint added: only after the gateways",
            Marks({"a": "1"}, (OURS,)),
            Marks({"a": "1"}, (OURS, NEW)),
            NodeChange(set_labels={"a": "1"}),
            NodeChange(add_taints=(OURS, NEW)),
        ),
        (
            "taint removed: before the gateways",
            Marks({"a": "1"}, (OURS, NEW)),
            Marks({"a": "1"}, (OURS,)),
            NodeChange(set_labels={"a": "1"}, drop_taints=(NEW,)),
            NodeChange(add_taints=(OURS,)),
        ),
        (
            "label renamed: new one before, old one after",
            Marks({"a": "1"}, ()),
            Marks({"b": "1"}, ()),
            NodeChange(set_labels={"b": "1"}),
            NodeChange(drop_labels={"a": "1"}),
        ),
        (
            "created",
            None,
            Marks({"a": "1"}, (OURS,)),
            NodeChange(set_labels={"a": "1"}),
            NodeChange(add_taints=(OURS,)),
        ),
        (
            "deleted: taints first (restrict goes first), labels last",
            Marks({"a": "1"}, (OURS,)),
            None,
            NodeChange(drop_labels={"a": "1"}),
            NodeChange(drop_taints=(OURS,)),
        ),
    ],
)
def test_each_stage_makes_only_its_half_of_a_change(
    what: str, old: Marks | None, new: Marks | None, admit: NodeChange, restrict: NodeChange
) -> None:
    assert stage_change(ADMIT, old, new) == admit, what
    assert stage_change(RESTRICT, old, new) == restrict, what


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"key": "dedicated", "operator": "Equal", "value": "gateway", "effect": "NoExecute"}, True),
        ({"key": "dedicated", "value": "gateway"}, True),  # Equal by default, any effect
        ({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}, True),
        ({"operator": "Exists"}, True),  # tolerates everything
        ({"key": "dedicated", "operator": "Equal", "value": "other", "effect": "NoExecute"}, False),
        ({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}, False),
        ({"key": "other", "operator": "Exists"}, False),
        ({"operator": "Equal", "value": "gateway"}, False),
    ],
)
def test_toleration_matching_follows_kube_scheduler(toleration: dict[str, str], tolerated: bool) -> None:
    assert NEW.tolerated_by([toleration]) is tolerated
    assert NEW.tolerated_by([]) is False


def test_the_rollout_waits_on_every_pod_that_lacks_a_toleration_terminating_ones_too() -> None:
    def pod(name: str, tolerations: list[dict[str, str]], terminating: bool = False) -> dict[str, Any]:
        metadata: dict[str, Any] = {"namespace": "istio-system", "name": name}
        if terminating:
            metadata["deletionTimestamp"] = "2026-11-27T10:00:00Z"
        return {"metadata": metadata, "spec": {"tolerations": tolerations}}

    pods = [
        pod("new", [NEW.as_toleration()]),
        pod("old", [OURS.as_toleration()]),
        pod("leaving", [], terminating=True),
    ]
    # A terminating pod still drains connections: it is waited for too.
    assert untolerating_pods(pods, [NEW]) == ["istio-system/old", "istio-system/leaving"]
    assert untolerating_pods(pods, []) == []


def test_marks_found_on_a_node_are_what_refresh_reports() -> None:
    declared = Marks({"a": "1", "b": "2"}, (OURS, NEW))
    found = declared.found_on(node({"a": "1", "b": "changed"}, [OURS.as_node_taint(), TEAM]))
    assert found == Marks({"a": "1"}, (OURS,))


def test_an_earlier_versions_node_patch_claim_is_released_so_its_delete_touches_nothing() -> None:
    before = node({"mykey4pod": "asmgateway"}, [OURS.as_node_taint(), TEAM])
    node_patch_claim = {
        "manager": "pulumi-kubernetes-5a1b2c3d",
        "operation": "Apply",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:mykey4pod": {}}}, "f:spec": {"f:taints": {}}},
    }
    kubelet = {"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}
    before["metadata"]["managedFields"] = [kubelet, node_patch_claim]
    patch = node_patch(before, NodeChange(set_labels={"mykey4pod": "asmgateway"}))
    assert patch is not None
    assert patch["metadata"]["managedFields"] == [kubelet]
    assert "labels" not in patch["metadata"] and "spec" not in patch
    # Once released, nothing more to write.
    before["metadata"]["managedFields"] = [kubelet]
    assert node_patch(before, NodeChange(set_labels={"mykey4pod": "asmgateway"})) is None
