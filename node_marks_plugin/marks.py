"""What the node-marks provider writes and what it waits for, as pure functions.

A Node's `spec.taints` is an atomic list: server-side apply makes one field
manager own all of it, so a stack that applied its taints by SSA would remove
every taint it did not declare (Kubernetes' own `not-ready`/`unreachable`,
ACK's, a team's `maintenance`). Nodes are changed the way `kubectl label` and
`kubectl taint` do instead: read the node, add or remove exactly the declared
labels and taints, write it back on the `resourceVersion` that was read.

A change is split in two stages so that the gateway is never evicted or
stranded by the stack's own `up`:

- `admit` runs before the gateways change: it adds the declared labels and
  removes the taints the stack no longer declares (both only widen where the
  gateway's pods may run);
- `restrict` runs after the gateways change and their pods have rolled out
  with the new tolerations: it adds the declared taints and removes the labels
  the stack no longer declares.

Ownership: a mark the node carried before the stack first declared it (put on
by hand, as the guide does, or by another writer) is recorded by `admit` as
pre-existing, and no stage ever takes it off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from components.scheduling import Taint

ADMIT = "admit"
RESTRICT = "restrict"
STAGES = (ADMIT, RESTRICT)
# Every write to a node is made under this field manager: the API server's
# managedFields then say which labels this project put on a node.
FIELD_MANAGER = "asm-serverless-gateway"
# Pods the kubelet or a controller has finished with: they hold no
# connections, and the pod garbage collector may keep them for a long while.
FINISHED_PHASES = ("Succeeded", "Failed")

Node = Mapping[str, Any]
Pod = Mapping[str, Any]


def taints_from(items: Iterable[Mapping[str, Any]] | None) -> tuple[Taint, ...]:
    return tuple(Taint(t["key"], t.get("value") or "", t["effect"]) for t in items or ())


def show(taint: Taint) -> str:
    """A taint as `kubectl taint` spells it."""
    return f"{taint.key}={taint.value}:{taint.effect}" if taint.value else f"{taint.key}:{taint.effect}"


@dataclass(frozen=True)
class Marks:
    """Labels and taints: what the stack declares for a node, or a part of that."""

    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    @staticmethod
    def from_props(props: Mapping[str, Any] | None) -> Marks:
        props = props or {}
        return Marks(dict(props.get("labels") or {}), taints_from(props.get("taints")))

    def as_props(self) -> dict[str, Any]:
        return {
            "labels": dict(sorted(self.labels.items())),
            "taints": [t.as_node_taint() for t in sorted(self.taints)],
        }

    def found_on(self, node: Node) -> Marks:
        """The part of these marks that the node carries now."""
        labels = node.get("metadata", {}).get("labels") or {}
        taints = node.get("spec", {}).get("taints") or []
        return Marks(
            {k: v for k, v in self.labels.items() if labels.get(k) == v},
            tuple(t for t in self.taints if t.on(taints)),
        )

    def without(self, other: Marks) -> Marks:
        """These marks less those in `other` (a label only where its value is the same)."""
        return Marks(
            {k: v for k, v in self.labels.items() if other.labels.get(k) != v},
            tuple(t for t in self.taints if t not in other.taints),
        )

    def union(self, other: Marks) -> Marks:
        return Marks({**self.labels, **other.labels}, tuple(sorted({*self.taints, *other.taints})))

    def within(self, declared: Marks) -> Marks:
        """The part of these marks that `declared` still holds."""
        return Marks(
            {k: v for k, v in self.labels.items() if declared.labels.get(k) == v},
            tuple(t for t in self.taints if t in declared.taints),
        )

    def __bool__(self) -> bool:
        return bool(self.labels or self.taints)


NO_MARKS = Marks()


@dataclass(frozen=True)
class NodeChange:
    """One stage's change to one node: labels to set or drop, taints to add or drop."""

    set_labels: Mapping[str, str] = field(default_factory=dict)
    drop_labels: Mapping[str, str] = field(default_factory=dict)
    add_taints: Sequence[Taint] = ()
    drop_taints: Sequence[Taint] = ()


def stage_change(stage: str, old: Marks | None, new: Marks | None, keep: Marks = NO_MARKS) -> NodeChange:
    """What a stage writes when the declared marks go from `old` to `new`.

    `old` is None when the node is first marked, `new` when it is unmarked:
    then each stage takes back only what it added. Nothing in `keep` (the
    marks the node had before the stack) is ever dropped.
    """
    old = (old or NO_MARKS).without(keep)
    if new is None:
        return NodeChange(drop_labels=old.labels) if stage == ADMIT else NodeChange(drop_taints=old.taints)
    if stage == ADMIT:
        dropped = tuple(t for t in old.taints if t not in new.taints)
        return NodeChange(set_labels=new.labels, drop_taints=dropped)
    return NodeChange(
        drop_labels={k: v for k, v in old.labels.items() if k not in new.labels},
        add_taints=new.taints,
    )


def node_patch(node: Node, change: NodeChange) -> dict[str, Any] | None:
    """A JSON merge patch that makes `change` on `node`, or None when it already holds.

    Labels are merged key by key (null deletes one); the taint list is written
    whole, since a merge patch replaces lists, with every taint the change does
    not name kept as it was (its value, its `timeAdded`) and in its place. A
    label is dropped only while it still has the value the stack gave it.
    """
    metadata = node.get("metadata", {})
    labels: Mapping[str, str] = metadata.get("labels") or {}
    label_patch: dict[str, str | None] = {k: v for k, v in change.set_labels.items() if labels.get(k) != v}
    for key, value in change.drop_labels.items():
        if labels.get(key) == value and key not in change.set_labels:
            label_patch[key] = None

    current: list[Mapping[str, Any]] = list(node.get("spec", {}).get("taints") or [])
    taints = [t for t in current if not any(d.on([t]) for d in change.drop_taints)]
    for taint in change.add_taints:
        if not taint.on(taints):
            # Another value in the same key and effect was refused before
            # (`taint_conflicts`), or is the stack's own old value.
            slot = next((i for i, t in enumerate(taints) if taint.same_slot(t)), None)
            if slot is None:
                taints.append(taint.as_node_taint())
            else:
                taints[slot] = taint.as_node_taint()

    handover = released_managed_fields(node, change)
    if not label_patch and taints == current and handover is None:
        return None
    patch: dict[str, Any] = {"metadata": {"resourceVersion": metadata.get("resourceVersion")}}
    if handover is not None:
        patch["metadata"]["managedFields"] = handover
    if label_patch:
        patch["metadata"]["labels"] = label_patch
    if taints != current:
        patch["spec"] = {"taints": taints}
    return patch


# -- Ownership --------------------------------------------------------------------------------


def _claims(node: Node, manager: Callable[[Mapping[str, Any]], bool]) -> tuple[set[str], bool]:
    """The label keys, and whether the taint list, that matching field managers claim."""
    labels: set[str] = set()
    taints = False
    for entry in node.get("metadata", {}).get("managedFields") or []:
        if not manager(entry):
            continue
        fields = entry.get("fieldsV1") or {}
        labels |= {k.removeprefix("f:") for k in fields.get("f:metadata", {}).get("f:labels", {})}
        taints = taints or "f:taints" in fields.get("f:spec", {})
    return labels, taints


def _ours(entry: Mapping[str, Any]) -> bool:
    return entry.get("manager") == FIELD_MANAGER


def preexisting(node: Node, newly_declared: Marks) -> Marks:
    """The newly declared marks that the node already carries, put there by someone else.

    A mark this project wrote earlier (an `up` that died before it could save
    state, or an earlier version of the stack) is not someone else's: the API
    server's managedFields name this project's field manager for a label it
    set, and for the taint list when it wrote that list last.
    """
    found = newly_declared.found_on(node)
    our_labels, our_taints = _claims(node, _ours)
    return Marks(
        {k: v for k, v in found.labels.items() if k not in our_labels},
        () if our_taints else found.taints,
    )


def taint_conflicts(node: Node, declared: Sequence[Taint], ours_before: Sequence[Taint]) -> list[str]:
    """Declared taints whose key and effect the node holds with another writer's value.

    A node holds one taint per key and effect. `kubectl taint` without
    `--overwrite` refuses to replace another value, and so does the stack,
    unless that value is one the stack itself declared before.
    """
    problems = []
    name = node.get("metadata", {}).get("name")
    for taint in declared:
        for held in node.get("spec", {}).get("taints") or []:
            value = held.get("value") or ""
            theirs = Taint(taint.key, value, taint.effect)
            if taint.same_slot(held) and value != taint.value and theirs not in ours_before:
                problems.append(
                    f"node {name}: the taint {taint.key}:{taint.effect} is already on the node with the"
                    f" value '{value}' (not put there by this stack); the stack declares '{taint.value}'"
                )
    return problems


# What earlier versions of this stack applied nodes' marks with: the Kubernetes
# provider's NodePatch, by server-side apply under a field manager named so.
NODE_PATCH_MANAGER_PREFIX = "pulumi-kubernetes-"


def released_managed_fields(node: Node, change: NodeChange) -> list[Any] | None:
    """The node's managedFields without an earlier NodePatch's claim on these marks, or None.

    Upgrading replaced the NodePatch of earlier versions; deleting it would
    remove every field it applied, the whole atomic taint list included. Its
    claim is taken off first (as a `kubectl` user may edit managedFields), so
    that delete touches nothing. Only a claim that is this project's is taken:
    a server-side apply by a `pulumi-kubernetes-*` manager that claims at least
    one of the labels the stack sets and no label it does not, and nothing
    besides labels, the taints and Pulumi's own annotation. Another stack's
    NodePatch claims labels of its own, and keeps its claim.
    """
    if not change.set_labels and not change.add_taints:
        return None
    entries = list(node.get("metadata", {}).get("managedFields") or [])
    ours = {f"f:{key}" for key in change.set_labels}

    def earlier_node_patch(entry: Mapping[str, Any]) -> bool:
        if not str(entry.get("manager", "")).startswith(NODE_PATCH_MANAGER_PREFIX):
            return False
        if entry.get("operation") != "Apply":
            return False
        fields = entry.get("fieldsV1") or {}
        metadata = fields.get("f:metadata", {})
        labels = set(metadata.get("f:labels", {}))
        annotations = set(metadata.get("f:annotations", {})) - {"f:pulumi.com/patchForce"}
        return (
            set(fields) <= {"f:metadata", "f:spec"}
            and set(metadata) <= {"f:labels", "f:annotations"}
            and set(fields.get("f:spec", {})) <= {"f:taints"}
            and not annotations
            and bool(labels & ours)
            and labels <= ours
        )

    kept = [e for e in entries if not earlier_node_patch(e)]
    if len(kept) == len(entries):
        return None
    # An empty list would leave managedFields as they are; `[{}]` clears them.
    return kept or [{}]


# -- The rollout gate: tolerate before taint ------------------------------------------------


def is_finished(pod: Pod) -> bool:
    return pod.get("status", {}).get("phase") in FINISHED_PHASES


def pod_name(pod: Pod) -> str:
    metadata = pod.get("metadata", {})
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def untolerated(pod: Pod, taints: Iterable[Taint]) -> list[Taint]:
    tolerations = pod.get("spec", {}).get("tolerations") or []
    return [t for t in taints if not t.tolerated_by(tolerations)]


@dataclass(frozen=True)
class Tainting:
    """Taints about to go onto nodes, and which of them the gateways are meant to tolerate."""

    adds: Mapping[str, tuple[Taint, ...]]  # node name -> taints it does not carry yet
    gateway_tolerates: frozenset[Taint]  # the gateways' rules tolerate these (their policy admits the nodes)

    def __bool__(self) -> bool:
        return any(self.adds.values())

    def evicting(self, node: str | None) -> tuple[Taint, ...]:
        return tuple(t for t in self.adds.get(node or "", ()) if t.effect == "NoExecute")


@dataclass(frozen=True)
class Blocker:
    pod: str
    node: str | None
    taints: tuple[Taint, ...]
    evicts: bool  # a NoExecute taint on its own node; else the taint would only keep it out

    def __str__(self) -> str:
        where = f"on {self.node}" if self.node else "not scheduled"
        effect = "would be evicted by" if self.evicts else "does not tolerate"
        return f"{self.pod} ({where}) {effect} {', '.join(show(t) for t in self.taints)}"


def gateway_blockers(gateway_pods: Iterable[Pod], tainting: Tainting) -> list[Blocker]:
    """The gateway's pods that must go (roll out anew) before the taints go on.

    A pod is waited for when it lacks a toleration that the gateway's rules
    give (the rollout replaces it), or when it runs on a node about to get a
    NoExecute taint it does not tolerate (under `eci-only` the rollout moves
    it off). Finished pods are never waited for. A terminating pod still
    drains its connections, so it is.
    """
    adding = {t for taints in tainting.adds.values() for t in taints}
    meant = sorted(adding & tainting.gateway_tolerates)
    blockers = []
    for pod in gateway_pods:
        if is_finished(pod):
            continue
        node = pod.get("spec", {}).get("nodeName")
        lacking = untolerated(pod, meant)
        evicting = untolerated(pod, tainting.evicting(node))
        if lacking or evicting:
            blockers.append(
                Blocker(pod_name(pod), node, tuple(sorted({*lacking, *evicting})), evicts=bool(evicting))
            )
    return blockers


def others_evicted(
    pods_on_nodes: Iterable[Pod], is_gateway: Callable[[Pod], bool], tainting: Tainting
) -> list[Blocker]:
    """Pods of other owners that a NoExecute taint about to be added would evict."""
    evicted = []
    for pod in pods_on_nodes:
        if is_finished(pod) or is_gateway(pod):
            continue
        node = pod.get("spec", {}).get("nodeName")
        taints = untolerated(pod, tainting.evicting(node))
        if taints:
            evicted.append(Blocker(pod_name(pod), node, tuple(taints), evicts=True))
    return evicted


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether labels match an equality-based label selector (`k=v,k2=v2`), as the gateways' are."""
    for term in filter(None, (part.strip() for part in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True
