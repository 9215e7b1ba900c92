"""The pure half of node marking: what each stage writes, whose a mark is, what is in a taint's way."""

from __future__ import annotations

import json
import threading
from typing import Any

import kubernetes
import pytest

from components.scheduling import Taint
from node_marks_plugin.cluster import (
    ADMISSION,
    NO_DRY_RUN,
    OTHER,
    RBAC,
    WEBHOOK_DOWN,
    NodeMarksError,
    api_error,
    evictions_refused,
)
from node_marks_plugin.marks import (
    ADMIT,
    OWNER_ANNOTATION_PREFIX,
    RESTRICT,
    EvictionsAllowed,
    Marks,
    MarksConflict,
    Owner,
    Tainting,
    gateway_blockers,
    handover_patch,
    merged,
    others_evicted,
    release_patch,
    stage_patch,
    up_patches,
)
from node_marks_plugin.resources import NodeMarksResource, PartlyAppliedError
from stack_config.syntax import qualified_name_problem

OURS = Taint("mykey", "myvalue", "NoSchedule")
NEW = Taint("dedicated", "gateway", "NoExecute")
NOT_READY = {
    "key": "node.kubernetes.io/not-ready",
    "effect": "NoExecute",
    "timeAdded": "2026-11-27T10:00:00Z",
}
UNSCHEDULABLE = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
TEAM = {"key": "team.example.com/maintenance", "value": "true", "effect": "NoSchedule"}
PROJECT = "asm-serverless-gateway"
OWNER = Owner(PROJECT, "prod")
KEY = OWNER.key


def node(labels: dict[str, str], taints: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "n", "resourceVersion": "42", "labels": dict(labels), "annotations": {}},
        "spec": {"unschedulable": True, "taints": list(taints)},
    }


def applied(before: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """The node after a JSON merge patch, as the API server makes it."""
    if patch is None:
        return before
    after: dict[str, Any] = json.loads(json.dumps(before))
    metadata = after["metadata"]
    for field in ("labels", "annotations"):
        for key, value in patch["metadata"].get(field, {}).items():
            if value is None:
                metadata[field].pop(key, None)
            else:
                metadata[field][key] = value
    if "managedFields" in patch["metadata"]:
        metadata["managedFields"] = [e for e in patch["metadata"]["managedFields"] if e]
    if "spec" in patch:
        after["spec"]["taints"] = patch["spec"]["taints"]
    metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)
    return after


def run(before: dict[str, Any], *steps: tuple[str, Marks | None]) -> dict[str, Any]:
    return run_as(before, OWNER, *steps)


def run_as(before: dict[str, Any], owner: Owner, *steps: tuple[str, Marks | None]) -> dict[str, Any]:
    for stage, declared in steps:
        before = applied(before, stage_patch(before, stage, declared, owner))
    return before


def marks_of(n: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    return n["metadata"]["labels"], n["spec"]["taints"]


DECLARED = Marks({"mykey4pod": "asmgateway"}, (OURS,))


def test_adding_a_taint_keeps_every_foreign_taint_as_it_was_and_in_place() -> None:
    before = node({}, [NOT_READY, TEAM, UNSCHEDULABLE])
    patch = stage_patch(before, RESTRICT, Marks({}, (OURS,)), OWNER)
    assert patch is not None
    assert patch["spec"]["taints"] == [NOT_READY, TEAM, UNSCHEDULABLE, OURS.as_node_taint()]
    # Optimistic concurrency: the write fails if anyone wrote since the read.
    assert patch["metadata"]["resourceVersion"] == "42"
    assert "unschedulable" not in patch["spec"]
    # The record of what the stack put on goes in the same write.
    assert json.loads(patch["metadata"]["annotations"][KEY])["taints"] == [OURS.as_node_taint()]


def test_each_stage_writes_only_its_half_and_unmarking_takes_back_only_the_stacks() -> None:
    admitted = run(node({"team": "x"}, [TEAM]), (ADMIT, DECLARED))
    assert marks_of(admitted) == ({"team": "x", "mykey4pod": "asmgateway"}, [TEAM])
    marked = run(admitted, (RESTRICT, DECLARED))
    assert marks_of(marked) == ({"team": "x", "mykey4pod": "asmgateway"}, [TEAM, OURS.as_node_taint()])
    assert stage_patch(marked, ADMIT, DECLARED, OWNER) is None  # already holds: nothing written
    # Unmarking runs restrict first, then admit (destroy's order).
    unmarked = run(marked, (RESTRICT, None), (ADMIT, None))
    assert marks_of(unmarked) == ({"team": "x"}, [TEAM])
    assert KEY not in unmarked["metadata"]["annotations"]


def test_marks_a_node_had_before_the_stack_stay_whatever_the_stack_does() -> None:
    """The guide's `kubectl label` and `kubectl taint`, done before the first `up`."""
    by_hand = node({"mykey4pod": "asmgateway"}, [OURS.as_node_taint()])
    other = Marks({"pool": "gw"}, (NEW,))
    after = run(by_hand, (ADMIT, DECLARED), (RESTRICT, DECLARED), (ADMIT, other), (RESTRICT, other))
    assert marks_of(after)[0] == {"mykey4pod": "asmgateway", "pool": "gw"}
    assert OURS.as_node_taint() in marks_of(after)[1]
    destroyed = run(after, (RESTRICT, None), (ADMIT, None))
    assert marks_of(destroyed) == ({"mykey4pod": "asmgateway"}, [OURS.as_node_taint()])


def test_a_label_left_by_a_failed_restrict_is_still_taken_off_later() -> None:
    """admit adds a label, restrict fails (a refusal, a time-out), the config is reverted."""
    first = Marks({"a": "1"}, ())
    reverted = Marks({"b": "1"}, ())
    after = run(node({}, []), (ADMIT, first), (ADMIT, reverted), (RESTRICT, reverted))
    assert marks_of(after)[0] == {"b": "1"}


def test_the_stack_changes_its_own_value_in_place_like_kubectl_taint_overwrite() -> None:
    marked = run(node({}, [TEAM]), (RESTRICT, Marks({}, (OURS,))))
    changed = Taint("mykey", "other", "NoSchedule")
    after = run(marked, (RESTRICT, Marks({}, (changed,))))
    assert marks_of(after)[1] == [TEAM, changed.as_node_taint()]
    assert json.loads(after["metadata"]["annotations"][KEY])["taints"] == [changed.as_node_taint()]


@pytest.mark.parametrize(
    ("stage", "declared", "says"),
    [
        (
            RESTRICT,
            Marks({}, (OURS,)),
            "the taint mykey:NoSchedule is already on the node with the value 'theirs'",
        ),
        (
            ADMIT,
            Marks({"mykey4pod": "asmgateway"}, ()),
            "the label mykey4pod is already on the node with the value 'theirs'",
        ),
    ],
)
def test_another_writers_value_in_a_declared_slot_is_refused(stage: str, declared: Marks, says: str) -> None:
    theirs = node({"mykey4pod": "theirs"}, [{"key": "mykey", "value": "theirs", "effect": "NoSchedule"}])
    with pytest.raises(MarksConflict, match=f"node n: {says}"):
        stage_patch(theirs, stage, declared, OWNER)
    # Another effect is another slot.
    assert stage_patch(theirs, RESTRICT, Marks({}, (Taint("mykey", "v", "NoExecute"),)), OWNER) is not None


def test_a_value_that_was_there_before_the_stack_is_not_the_stacks_to_change() -> None:
    by_hand = node({}, [OURS.as_node_taint()])
    adopted = run(by_hand, (RESTRICT, Marks({}, (OURS,))))
    with pytest.raises(MarksConflict, match="value 'myvalue'"):
        stage_patch(adopted, RESTRICT, Marks({}, (Taint("mykey", "other", "NoSchedule"),)), OWNER)


def test_the_version_without_records_hands_its_marks_over_when_its_resources_go() -> None:
    """Upgrading: this version's resources find the marks and do not take them as theirs; the
    earlier version's resources, deleted at the end of the same `up`, add them to the record."""
    earlier = node({"mykey4pod": "asmgateway", "by-hand": "yes"}, [TEAM, OURS.as_node_taint()])
    declared = Marks({"mykey4pod": "asmgateway", "by-hand": "yes"}, (OURS,))
    upgraded = run(earlier, (ADMIT, declared), (RESTRICT, declared))
    assert json.loads(upgraded["metadata"]["annotations"].get(KEY, "{}")).get("labels", {}) == {}
    handed_over = run(upgraded)
    for stage, half in ((ADMIT, Marks({"mykey4pod": "asmgateway"}, ())), (RESTRICT, Marks({}, (OURS,)))):
        handed_over = applied(handed_over, handover_patch(handed_over, half, stage))
    assert marks_of(handed_over) == marks_of(upgraded)  # the hand-over takes nothing off
    destroyed = run(handed_over, (RESTRICT, None), (ADMIT, None))
    assert marks_of(destroyed) == ({"by-hand": "yes"}, [TEAM])
    assert KEY not in destroyed["metadata"]["annotations"]


def test_where_this_version_never_marked_the_node_the_earlier_resource_takes_its_marks_back() -> None:
    """The node left `nodes` in the upgrading `up`, or `destroy` ran before any `up` of this version."""
    earlier = node({"mykey4pod": "asmgateway", "team": "x"}, [TEAM, OURS.as_node_taint()])
    for stage, half in ((RESTRICT, Marks({}, (OURS,))), (ADMIT, Marks({"mykey4pod": "asmgateway"}, ()))):
        earlier = applied(earlier, handover_patch(earlier, half, stage))
    assert marks_of(earlier) == ({"team": "x"}, [TEAM])


def test_an_earlier_mark_another_stack_records_is_left_to_it() -> None:
    n = node({"mykey4pod": "asmgateway"}, [OURS.as_node_taint()])
    n["metadata"]["annotations"][Owner(PROJECT, "a").key] = json.dumps(DECLARED.as_props())
    n["metadata"]["annotations"][Owner(PROJECT, "b").key] = "{}"
    assert handover_patch(n, Marks({}, (OURS,)), RESTRICT) is None
    assert handover_patch(n, Marks({"mykey4pod": "asmgateway"}, ()), ADMIT) is None


def test_a_mark_two_stacks_hold_stays_until_neither_does() -> None:
    """prod marks the node first; staging then declares the same label and taint."""
    staging = Owner(PROJECT, "staging")
    shared = Marks({"pool": "gw"}, (OURS,))
    both = run(node({}, []), (ADMIT, shared), (RESTRICT, shared))
    for stage in (ADMIT, RESTRICT):
        both = applied(both, stage_patch(both, stage, shared, staging))
    assert json.loads(both["metadata"]["annotations"][staging.key]) == {
        "stack": staging.name,
        **shared.as_props(),
    }
    prod_gone = run(both, (RESTRICT, None), (ADMIT, None))
    assert marks_of(prod_gone) == ({"pool": "gw"}, [OURS.as_node_taint()])
    for stage in (RESTRICT, ADMIT):
        prod_gone = applied(prod_gone, stage_patch(prod_gone, stage, None, staging))
    assert marks_of(prod_gone) == ({}, [])


def test_unmarking_a_node_the_stack_has_no_record_on_writes_nothing() -> None:
    """A node dropped from `nodes`: admit (first) removes the record; restrict then adds none."""
    marked = run(node({}, []), (ADMIT, DECLARED), (RESTRICT, DECLARED))
    dropped = run(marked, (ADMIT, None))
    assert stage_patch(dropped, RESTRICT, None, OWNER) is None


def test_unmarking_in_restrict_leaves_the_labels_for_admit_after_the_gateways() -> None:
    """destroy: restrict, then the gateways (protected ones refuse), then admit."""
    marked = run(node({}, []), (ADMIT, DECLARED), (RESTRICT, DECLARED))
    untainted = run(marked, (RESTRICT, None))
    assert marks_of(untainted) == ({"mykey4pod": "asmgateway"}, [])


def test_a_record_that_does_not_parse_names_nothing() -> None:
    for text in ('"x"', "[1]", "42", "{not json", '{"labels": 3}'):
        n = node({"mykey4pod": "asmgateway"}, [])
        n["metadata"]["annotations"][KEY] = text
        after = run(n, (RESTRICT, None), (ADMIT, None))
        assert marks_of(after)[0] == {"mykey4pod": "asmgateway"}, text


def test_an_earlier_versions_node_patch_claim_is_released_and_its_marks_are_the_stacks() -> None:
    before = node({"mykey4pod": "asmgateway"}, [OURS.as_node_taint(), TEAM])
    node_patch_claim = {
        "manager": "pulumi-kubernetes-5a1b2c3d",
        "operation": "Apply",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:mykey4pod": {}}}, "f:spec": {"f:taints": {}}},
    }
    kubelet = {"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}
    before["metadata"]["managedFields"] = [kubelet, node_patch_claim]
    patch = stage_patch(before, ADMIT, DECLARED, OWNER)
    assert patch is not None
    assert patch["metadata"]["managedFields"] == [kubelet]
    assert "labels" not in patch["metadata"] and "spec" not in patch
    destroyed = run(before, (ADMIT, DECLARED), (RESTRICT, DECLARED), (RESTRICT, None), (ADMIT, None))
    assert marks_of(destroyed) == ({}, [TEAM])


def test_an_other_programs_node_patch_claim_is_not_released() -> None:
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
    patch = stage_patch(before, ADMIT, DECLARED, OWNER)
    assert patch is None or "managedFields" not in patch["metadata"]


# Every stack name Pulumi accepts (letters, digits, '-', '_', '.'; up to 100), and the awkward ones.
STACK_NAMES = [
    "prod",
    "prod-",
    "prod_",
    "prod.",
    "a.b_c-d",
    "-x-",
    "___",
    "x" * 100,
    "y" * 100,
    "P" * 44 + "-z",
]


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_every_stack_name_pulumi_accepts_makes_a_valid_record_key(stack: str) -> None:
    key = Owner(PROJECT, stack).key
    assert key.startswith(OWNER_ANNOTATION_PREFIX)
    assert qualified_name_problem(key) is None, key


def test_the_record_key_names_the_project_and_the_stack() -> None:
    keys = {Owner(project, stack).key for project in ("gw-a", "gw-b") for stack in STACK_NAMES}
    assert len(keys) == 2 * len(STACK_NAMES)
    assert Owner(PROJECT, "prod").key.startswith(f"{OWNER_ANNOTATION_PREFIX}prod-")


def test_a_value_another_stack_records_is_refused_naming_that_stack() -> None:
    """prod and staging both record the label and the taint; prod changing either is refused."""
    staging = Owner(PROJECT, "staging")
    shared = Marks({"mykey4pod": "asmgateway"}, (Taint("mykey", "v1", "NoSchedule"),))
    both = run(node({}, []), (ADMIT, shared), (RESTRICT, shared))
    for stage in (ADMIT, RESTRICT):
        both = applied(both, stage_patch(both, stage, shared, staging))
    relabelled = Marks({"mykey4pod": "gw2"}, shared.taints)
    with pytest.raises(MarksConflict, match=f"mykey4pod=asmgateway is recorded by stack {staging.name}"):
        stage_patch(both, ADMIT, relabelled, OWNER)
    retainted = Marks(shared.labels, (Taint("mykey", "v2", "NoSchedule"),))
    with pytest.raises(MarksConflict, match=f"mykey=v1:NoSchedule is recorded by stack {staging.name}"):
        stage_patch(both, RESTRICT, retainted, OWNER)
    # Alone on the node, prod may change its own value as before.
    alone = run(node({}, []), (ADMIT, shared), (RESTRICT, shared))
    assert stage_patch(alone, ADMIT, relabelled, OWNER) is not None


def test_a_record_under_the_earlier_key_is_moved_to_the_new_one_in_the_same_write() -> None:
    earlier = node({"mykey4pod": "asmgateway"}, [OURS.as_node_taint()])
    earlier["metadata"]["annotations"][OWNER.legacy_key] = json.dumps(DECLARED.as_props())
    moved = run(earlier, (ADMIT, DECLARED), (RESTRICT, DECLARED))
    annotations = moved["metadata"]["annotations"]
    assert OWNER.legacy_key not in annotations
    assert json.loads(annotations[KEY]) == {"stack": OWNER.name, **DECLARED.as_props()}
    # The marks are still the stack's: destroy takes them off.
    assert marks_of(run(moved, (RESTRICT, None), (ADMIT, None))) == ({}, [])


def test_another_project_with_a_stack_of_the_same_name_keeps_its_own_record() -> None:
    other = Owner("another-project", "prod")
    theirs = run(node({}, []))
    for stage in (ADMIT, RESTRICT):
        theirs = applied(theirs, stage_patch(theirs, stage, DECLARED, other))
    both = run(theirs, (ADMIT, DECLARED), (RESTRICT, DECLARED))
    gone = run(both, (RESTRICT, None), (ADMIT, None))
    assert marks_of(gone) == marks_of(theirs)  # the other project's prod still holds them


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


def test_a_toleration_for_a_while_does_not_keep_a_pod_from_a_no_execute_taint() -> None:
    """`tolerationSeconds` only delays the eviction: the pod still counts as evicted."""
    tainting = Tainting({"edge-a": (NEW,)}, frozenset())
    delayed = pod("cache", [{**NEW.as_toleration(), "tolerationSeconds": 300}])  # type: ignore[dict-item]
    assert [b.pod for b in others_evicted([delayed], lambda _: False, tainting)] == ["istio-system/cache"]
    assert others_evicted([pod("cache", [NEW.as_toleration()])], lambda _: False, tainting) == []


def daemon_pod(name: str, daemon_set: str, node: str = "edge-a") -> dict[str, Any]:
    """A DaemonSet's pod as its controller makes it: tolerating only NoSchedule, as node agents do."""
    made = pod(name, [{"operator": "Exists", "effect": "NoSchedule"}], node=node)
    made["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": daemon_set, "controller": True}
    ]
    return made


def test_daemon_set_pods_are_named_apart_and_allowed_separately_from_other_pods() -> None:
    tainting = Tainting({"edge-a": (NEW,), "edge-b": (NEW,)}, frozenset({NEW}))
    exporter = daemon_pod("node-exporter-x7k2p", "node-exporter")
    logs = daemon_pod("log-agent-9q", "log-agent", node="edge-b")
    # Owned by a DaemonSet but not as its controller: an ordinary pod here.
    adopted = pod("adopted", [])
    adopted["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "x", "controller": False}]
    found = others_evicted([exporter, logs, adopted], lambda _: False, tainting)
    assert [(b.pod, b.daemon_set) for b in found] == [
        ("istio-system/node-exporter-x7k2p", "istio-system/node-exporter"),
        ("istio-system/log-agent-9q", "istio-system/log-agent"),
        ("istio-system/adopted", None),
    ]
    assert "of DaemonSet istio-system/node-exporter" in str(found[0])

    refused = evictions_refused(found, EvictionsAllowed())
    assert "istio-system/adopted" in refused and "evictOtherPods" in refused
    assert "Add the toleration to istio-system/log-agent, istio-system/node-exporter" in refused
    assert "evictDaemonSetPods" in refused
    # Letting other pods go does not let a DaemonSet's go, and the other way round.
    only_daemons = evictions_refused(found, EvictionsAllowed(other_pods=True))
    assert "adopted" not in only_daemons and "node-exporter" in only_daemons
    only_others = evictions_refused(found, EvictionsAllowed(daemon_set_pods=True))
    assert "adopted" in only_others and "DaemonSet" not in only_others
    assert evictions_refused(found, EvictionsAllowed(True, True)) == ""


class PodsArriving:
    """The cluster side for a restrict: pods of another owner appear on a node after the wait."""

    def __init__(self, names: list[str], arrive_on: str) -> None:
        self.listed = {n: {"metadata": {"name": n, "labels": {}}, "spec": {}} for n in names}
        self.arrive_on = arrive_on
        self.patched: list[str] = []

    def nodes(self, names: Any = None, label_selector: str = "") -> dict[str, Any]:
        return self.listed

    def pods(
        self, namespace: str | None = None, label_selector: str = "", node: str | None = None, **_: Any
    ) -> Any:
        arrived = node == self.arrive_on and self.patched
        return [daemon_pod("fluent-bit-1", "fluent-bit", node=self.arrive_on)] if arrived else []

    def mark_node(self, name: str, stage: str, declared: Marks | None, owner: Owner) -> bool:
        self.patched.append(name)
        return True


def test_a_pod_that_arrives_mid_run_stops_the_taint_and_the_message_names_the_nodes_tainted() -> None:
    cluster = PodsArriving(["a", "b", "c"], arrive_on="b")
    resource = NodeMarksResource(cluster, OWNER, threading.Event(), lambda _: None)  # type: ignore[arg-type]
    news = {"stage": RESTRICT, "nodes": ["a", "b", "c"], "labels": {}, "taints": [NEW.as_node_taint()]}
    with pytest.raises(PartlyAppliedError) as failed:
        resource.apply(None, news)
    message = str(failed.value)
    assert cluster.patched == ["a"]
    assert "Nodes this `restrict` stage had done before the failure: a;" in message
    assert "Nothing was tainted" not in message
    assert "istio-system/fluent-bit" in message and failed.value.outputs["nodes"] == ["a"]
    # Allowed, the same run taints every node.
    allowed = PodsArriving(["a", "b", "c"], arrive_on="b")
    NodeMarksResource(allowed, OWNER, threading.Event(), lambda _: None).apply(  # type: ignore[arg-type]
        None, {**news, "evictDaemonSetPods": True}
    )
    assert allowed.patched == ["a", "b", "c"]


class FailingCluster:
    """Stands in for the cluster side (node_marks_plugin.cluster.Cluster): the second patch fails."""

    def __init__(self, names: list[str]) -> None:
        self.listed = {
            n: {**node({}, []), "metadata": {**node({}, [])["metadata"], "name": n}} for n in names
        }
        self.patched: list[str] = []

    def nodes(self, names: Any = None, label_selector: str = "") -> dict[str, Any]:
        return self.listed

    def mark_node(self, name: str, stage: str, declared: Marks | None, owner: Owner) -> bool:
        if self.patched:
            raise NodeMarksError(f"patching node {name}: 500 Internal Server Error")
        self.patched.append(name)
        return True


class RecordingCluster(FailingCluster):
    """The same, where every patch succeeds: which node got what (None: unmarked)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.patched: list[tuple[str, dict[str, str] | None]] = []  # type: ignore[assignment]

    def mark_node(self, name: str, stage: str, declared: Marks | None, owner: Owner) -> bool:
        self.patched.append((name, dict(declared.labels) if declared is not None else None))
        return True


def test_a_failure_after_some_nodes_changed_saves_which_in_state() -> None:
    cluster = FailingCluster(["a", "b", "c"])
    resource = NodeMarksResource(cluster, OWNER, threading.Event(), lambda _: None)  # type: ignore[arg-type]
    olds = {"stage": ADMIT, "nodes": ["a"], "labels": {}, "taints": []}
    news = {"stage": ADMIT, "nodes": ["b", "c"], "labels": {"k": "v"}, "taints": []}
    with pytest.raises(PartlyAppliedError, match="500 Internal Server Error") as failed:
        resource.apply(olds, news)
    # b changed, c did not, a is still marked: the next `up` or `destroy` must know of a and b.
    assert cluster.patched == ["b"]
    assert failed.value.outputs["nodes"] == ["a", "b"]
    assert failed.value.outputs["labels"] == {"k": "v"}


def test_refresh_reads_the_marks_every_listed_node_still_carries() -> None:
    cluster = FailingCluster(["a", "b"])
    cluster.listed["a"]["spec"]["taints"] = [OURS.as_node_taint(), NEW.as_node_taint()]
    cluster.listed["b"]["spec"]["taints"] = [OURS.as_node_taint()]  # NEW taken off by hand
    resource = NodeMarksResource(cluster, OWNER, threading.Event(), lambda _: None)  # type: ignore[arg-type]
    state = {
        "stage": RESTRICT,
        "nodes": ["a", "b"],
        "labels": {"k": "v"},
        "taints": Marks({}, (OURS, NEW)).as_props()["taints"],
    }
    read = resource.read(state, state)
    assert read["taints"] == [OURS.as_node_taint()]
    assert read["labels"] == {"k": "v"}  # restrict's state keeps the labels as declared


def test_refresh_after_a_partial_failure_keeps_the_nodes_still_to_clean() -> None:
    """`a` left the list and its unmark failed: state names it, the declared inputs do not."""
    cluster = FailingCluster(["a", "b"])
    resource = NodeMarksResource(cluster, OWNER, threading.Event(), lambda _: None)  # type: ignore[arg-type]
    declared = {"stage": ADMIT, "nodes": ["b"], "labels": {"k": "v"}, "taints": []}
    state = {**declared, "nodes": ["a", "b"]}
    read = resource.read(state, declared)
    assert read["nodes"] == ["b", "a"]
    # The next `up` then takes the stack's marks off `a` (its olds name it, its news do not).
    healthy = RecordingCluster(["a", "b"])
    NodeMarksResource(healthy, OWNER, threading.Event(), lambda _: None).apply(read, declared)  # type: ignore[arg-type]
    assert healthy.patched == [("b", {"k": "v"}), ("a", None)]
    # Without a partial failure the list reads back exactly as declared: no change to show.
    assert resource.read(declared, declared)["nodes"] == ["b"]


def test_releasing_a_dead_stacks_record_keeps_its_marks_unless_asked_and_never_another_stacks() -> None:
    gone = Owner(PROJECT, "gone")
    shared = Marks({"pool": "gw"}, (OURS,))
    both = run(node({}, []), (ADMIT, shared), (RESTRICT, shared))
    only_gone = Marks({"gone-only": "yes"}, (NEW,))
    for stage in (ADMIT, RESTRICT):
        both = applied(both, stage_patch(both, stage, shared.union(only_gone), gone))
    assert release_patch(both, "someone/else", take_marks_off=False) is None
    kept = applied(both, release_patch(both, gone.name, take_marks_off=False))
    assert gone.key not in kept["metadata"]["annotations"] and KEY in kept["metadata"]["annotations"]
    assert marks_of(kept) == marks_of(both)
    # By key too (a record of an earlier version names no stack), taking off what only it named.
    taken = applied(both, release_patch(both, gone.key, take_marks_off=True))
    assert marks_of(taken) == ({"pool": "gw"}, [OURS.as_node_taint()])


def test_destroy_right_after_the_upgrade_takes_off_what_the_earlier_key_recorded() -> None:
    """`restrict` runs first on destroy: with only the earlier key on the node, it must not drop
    the record before `admit` has taken the labels off."""
    earlier = node({"mykey4pod": "asmgateway"}, [OURS.as_node_taint()])
    earlier["metadata"]["annotations"][OWNER.legacy_key] = json.dumps(DECLARED.as_props())
    destroyed = run(earlier, (RESTRICT, None), (ADMIT, None))
    assert marks_of(destroyed) == ({}, [])
    assert not destroyed["metadata"]["annotations"]


def test_a_renamed_stacks_record_moves_to_its_new_name_and_the_earlier_key_is_matched() -> None:
    renamed = Owner(PROJECT, "prod-eu")
    earlier = node({"mykey4pod": "asmgateway"}, [OURS.as_node_taint()])
    earlier["metadata"]["annotations"][OWNER.legacy_key] = json.dumps(DECLARED.as_props())
    moved = applied(earlier, release_patch(earlier, OWNER.name, to=renamed))
    annotations = moved["metadata"]["annotations"]
    assert list(annotations) == [renamed.key]
    assert json.loads(annotations[renamed.key]) == {"stack": renamed.name, **DECLARED.as_props()}
    # The renamed stack's destroy takes its marks back.
    assert marks_of(run_as(moved, renamed, (RESTRICT, None), (ADMIT, None))) == ({}, [])


def test_the_hand_over_keeps_the_stack_a_record_names() -> None:
    n = node({"mykey4pod": "asmgateway"}, [OURS.as_node_taint()])
    n["metadata"]["annotations"][KEY] = OWNER.record_text(Marks({}, ()))
    handed = applied(n, handover_patch(n, Marks({"mykey4pod": "asmgateway"}, ()), ADMIT))
    assert json.loads(handed["metadata"]["annotations"][KEY])["stack"] == OWNER.name


@pytest.mark.parametrize(
    ("status", "message", "who"),
    [
        (
            403,
            'nodes "edge-a" is forbidden: User "system:serviceaccount:kube-system:deployer" cannot patch'
            ' resource "nodes" in API group "" at the cluster scope',
            RBAC,
        ),
        (
            403,
            "nodes \"edge-a\" is forbidden: ValidatingAdmissionPolicy 'labels' with binding 'labels' denied"
            " request: nodes may not carry mykey4pod",
            ADMISSION,
        ),
        # Gatekeeper's 403 says "cannot" and "resource" too; only the authorizer's phrasing is RBAC.
        (
            403,
            'admission webhook "validation.gatekeeper.sh" denied the request: [node-labels] the deployer'
            " cannot set labels on this resource",
            ADMISSION,
        ),
        (403, 'nodes "edge-a" is forbidden: node "edge-a" is not allowed to modify taints', ADMISSION),
        (403, 'forbidden: User "system:anonymous" cannot get path "/version"', RBAC),
        (403, "<html>Forbidden by the proxy</html>", OTHER),
        (
            400,
            'admission webhook "validate.kyverno.svc-fail" denied the request: label not allowed',
            ADMISSION,
        ),
        (400, 'admission webhook "x.example.com" does not support dry run', NO_DRY_RUN),
        (
            500,
            'Internal error occurred: failed calling webhook "x.example.com": context deadline',
            WEBHOOK_DOWN,
        ),
        (409, "Operation cannot be fulfilled on nodes: the object has been modified", OTHER),
    ],
)
def test_who_refused_a_request_is_told_apart_and_only_the_authorizers_words_are_rbac(
    status: int, message: str, who: str
) -> None:
    error = kubernetes.client.ApiException(status=status, reason="Refused")
    error.body = json.dumps({"message": message})
    refusal = api_error(error, "patching node edge-a")
    assert refusal.refused_by == who and refusal.status == status
    assert message in str(refusal)
    assert ("not RBAC" in str(refusal)) is (who == ADMISSION)
    assert ("lacks this permission" in str(refusal)) is (who == RBAC)


def test_the_dry_run_patch_is_both_stages_on_the_node_admit_leaves() -> None:
    """A label whose value changes: restrict computed on the node as read would take the label
    off; after admit, it is the declared value and stays."""
    before = {
        **node({"mykey4pod": "v1"}, []),
        "metadata": {
            "name": "edge-a",
            "resourceVersion": "7",
            "labels": {"mykey4pod": "v1"},
            "annotations": {KEY: OWNER.record_text(Marks({"mykey4pod": "v1"}, ()))},
        },
    }
    declared = Marks({"mykey4pod": "v2"}, (NEW,))
    first, both_stages = up_patches(before, declared, OWNER)
    assert first == stage_patch(before, ADMIT, declared, OWNER)  # the first request, as `up` sends it
    after = merged(before, both_stages)
    assert after["metadata"]["labels"] == {"mykey4pod": "v2"}
    assert after["spec"]["taints"] == [NEW.as_node_taint()]
    assert after["metadata"]["resourceVersion"] == "7"  # written on the version read
    # What the two stages leave, one after the other, is what the one patch leaves.
    admitted = applied(before, stage_patch(before, ADMIT, declared, OWNER))
    both = applied(admitted, stage_patch(admitted, RESTRICT, declared, OWNER))
    assert (
        marks_of(after) == marks_of(both)
        and after["metadata"]["annotations"] == both["metadata"]["annotations"]
    )
    assert up_patches(both, declared, OWNER) == []  # nothing left to do: nothing is sent
    # A node that left the list: restrict takes the taint off first, then admit the label.
    off_first, off_both = up_patches(both, None, OWNER)
    assert off_first == stage_patch(both, RESTRICT, None, OWNER)
    assert marks_of(merged(both, off_both)) == ({}, [])


def test_a_static_pods_mirror_is_never_counted_as_evicted() -> None:
    tainting = Tainting({"edge-a": (NEW,)}, frozenset())
    mirror = pod("kube-proxy-edge-a", [])
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    mirror["metadata"]["ownerReferences"] = [{"kind": "Node", "name": "edge-a", "controller": True}]
    assert others_evicted([mirror], lambda _: False, tainting) == []
    mirror["metadata"]["annotations"] = {}
    assert [b.pod for b in others_evicted([mirror], lambda _: False, tainting)] == [
        "istio-system/kube-proxy-edge-a"
    ]
