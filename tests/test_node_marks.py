"""The pure half of node marking: what each stage writes, and what it leaves alone."""

from __future__ import annotations

from typing import Any

import pytest

from components.scheduling import Taint
from node_marks_plugin.marks import (
    ADMIT,
    RESTRICT,
    Marks,
    NodeChange,
    Tainting,
    gateway_blockers,
    node_patch,
    others_evicted,
    preexisting,
    released_managed_fields,
    stage_change,
    taint_conflicts,
)

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


def pod(
    name: str,
    tolerations: list[dict[str, str]],
    node: str | None = "edge-a",
    phase: str = "Running",
    terminating: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"namespace": "istio-system", "name": name}
    if terminating:
        metadata["deletionTimestamp"] = "2026-11-27T10:00:00Z"
    return {
        "metadata": metadata,
        "spec": {"tolerations": tolerations, **({"nodeName": node} if node else {})},
        "status": {"phase": phase},
    }


def test_the_rollout_waits_on_gateway_pods_that_lack_a_toleration_terminating_ones_too() -> None:
    pods = [
        pod("new", [NEW.as_toleration()]),
        pod("old", [OURS.as_toleration()], node="edge-b"),
        pod("leaving", [], terminating=True),
        pod("pending", [], node=None),
    ]
    tainting = Tainting({"edge-a": (NEW,)}, frozenset({NEW}))
    # A terminating pod still drains connections: it is waited for too; so is
    # an old pod not yet scheduled, wherever the taint goes.
    assert [b.pod for b in gateway_blockers(pods, tainting)] == [
        "istio-system/old",
        "istio-system/leaving",
        "istio-system/pending",
    ]
    assert gateway_blockers(pods, Tainting({"edge-a": ()}, frozenset({NEW}))) == []


def test_finished_gateway_pods_never_hold_the_rollout_up() -> None:
    tainting = Tainting({"edge-a": (NEW,)}, frozenset({NEW}))
    evicted = pod("evicted-by-the-kubelet", [], phase="Failed")
    done = pod("completed", [], phase="Succeeded")
    assert gateway_blockers([evicted, done], tainting) == []
    assert [b.pod for b in gateway_blockers([evicted, pod("old", [])], tainting)] == ["istio-system/old"]


def test_a_taint_the_gateway_is_not_meant_to_tolerate_waits_only_for_pods_it_would_evict() -> None:
    """eci-only: the gateway gets no toleration for the ECS taints; nothing waits for one."""
    no_schedule = Tainting({"edge-a": (OURS,)}, frozenset())
    assert gateway_blockers([pod("on-eci", [], node="virtual-kubelet")], no_schedule) == []
    assert gateway_blockers([pod("on-ecs", [])], no_schedule) == []  # NoSchedule evicts nothing
    no_execute = Tainting({"edge-a": (NEW,)}, frozenset())
    blockers = gateway_blockers([pod("on-ecs", []), pod("on-eci", [], node="virtual-kubelet")], no_execute)
    assert [(b.pod, b.evicts) for b in blockers] == [("istio-system/on-ecs", True)]


def test_other_owners_pods_that_a_no_execute_taint_would_evict_are_named() -> None:
    tainting = Tainting({"edge-a": (NEW, OURS), "edge-b": (OURS,)}, frozenset({NEW, OURS}))
    team = pod("team-app", [])
    tolerant = pod("daemon", [{"operator": "Exists"}])
    elsewhere = pod("batch", [], node="edge-b")  # only NoSchedule goes there
    finished = pod("job", [], phase="Succeeded")
    gateway = pod("gw", [])
    found = others_evicted(
        [team, tolerant, elsewhere, finished, gateway], lambda p: p["metadata"]["name"] == "gw", tainting
    )
    assert [(b.pod, b.node, b.taints) for b in found] == [("istio-system/team-app", "edge-a", (NEW,))]
    assert "would be evicted by dedicated=gateway:NoExecute" in str(found[0])


def test_a_taint_held_with_another_writers_value_is_a_conflict_unless_it_was_ours() -> None:
    theirs = {"key": "mykey", "value": "theirs", "effect": "NoSchedule"}
    held = node({}, [theirs, TEAM])
    problems = taint_conflicts(held, [OURS], ours_before=[])
    assert problems == [
        "node n: the taint mykey:NoSchedule is already on the node with the value 'theirs'"
        " (not put there by this stack); the stack declares 'myvalue'"
    ]
    # The stack changing its own value is not a conflict; another effect is another slot.
    assert taint_conflicts(held, [OURS], ours_before=[Taint("mykey", "theirs", "NoSchedule")]) == []
    assert taint_conflicts(held, [Taint("mykey", "myvalue", "NoExecute")], ours_before=[]) == []


def test_marks_found_before_the_stack_are_preexisting_unless_this_project_wrote_them() -> None:
    declared = Marks({"mykey4pod": "asmgateway", "by-hand": "yes"}, (OURS,))
    before = node({"mykey4pod": "asmgateway", "by-hand": "yes"}, [OURS.as_node_taint()])
    assert preexisting(before, declared) == declared
    before["metadata"]["managedFields"] = [
        {
            "manager": "asm-serverless-gateway",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:mykey4pod": {}}}, "f:spec": {"f:taints": {}}},
        },
        {"manager": "kubectl-label", "fieldsV1": {"f:metadata": {"f:labels": {"f:by-hand": {}}}}},
    ]
    assert preexisting(before, declared) == Marks({"by-hand": "yes"}, ())


def test_no_stage_takes_off_a_mark_the_node_had_before_the_stack() -> None:
    declared = Marks({"a": "1", "b": "2"}, (OURS, NEW))
    kept = Marks({"b": "2"}, (NEW,))
    assert stage_change(RESTRICT, declared, None, kept) == NodeChange(drop_taints=(OURS,))
    assert stage_change(ADMIT, declared, None, kept) == NodeChange(drop_labels={"a": "1"})
    # No longer declared: still left on the node.
    assert stage_change(ADMIT, declared, Marks({"a": "1"}, (OURS,)), kept).drop_taints == ()
    assert stage_change(RESTRICT, declared, Marks({"a": "1"}, (OURS,)), kept).drop_labels == {}


def test_an_other_projects_node_patch_claim_is_not_released() -> None:
    before = node({"mykey4pod": "asmgateway", "team": "x"}, [OURS.as_node_taint()])
    other_stack = {
        "manager": "pulumi-kubernetes-9f8e7d6c",
        "operation": "Apply",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {"f:taints": {}}},
    }
    mixed = {
        "manager": "pulumi-kubernetes-11111111",
        "operation": "Apply",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:mykey4pod": {}, "f:team": {}}}},
    }
    before["metadata"]["managedFields"] = [other_stack, mixed]
    assert released_managed_fields(before, NodeChange(set_labels={"mykey4pod": "asmgateway"})) is None


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
