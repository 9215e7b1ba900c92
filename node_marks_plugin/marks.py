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

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from components.scheduling import Taint

ADMIT = "admit"
RESTRICT = "restrict"
STAGES = (ADMIT, RESTRICT)
# Every write to a node is made under this field manager.
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

    def union(self, other: Marks) -> Marks:
        return Marks({**self.labels, **other.labels}, tuple(sorted({*self.taints, *other.taints})))

    def __bool__(self) -> bool:
        return bool(self.labels or self.taints)


NO_MARKS = Marks()


# -- Ownership: what this stack put on a node --------------------------------------------------
#
# Each node carries, in an annotation of its own per stack, the labels and
# taints this stack put there. It is written in the same patch as the marks
# (one write, on the `resourceVersion` read), so the record and the node never
# disagree, whatever interrupts an `up`. A stage only ever takes off what the
# record names; a mark that was on the node before the stack declared it is
# never in the record, so nothing takes it off.

OWNER_ANNOTATION_PREFIX = "asm-serverless-gateway/marks."
# An annotation's name: at most 63 characters, alphanumeric at both ends.
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Owner:
    """A stack whose record a node carries: its project and its name, as its URNs say."""

    project: str
    stack: str

    @property
    def name(self) -> str:
        return f"{self.project}/{self.stack}"

    @property
    def key(self) -> str:
        """The annotation that holds its record: the stack's name for people, a hash of project
        and stack for uniqueness; valid for any name Pulumi accepts (`prod-`, `a.b_`, 100 chars)."""
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:10]
        readable = _NOT_IN_A_NAME.sub("", self.stack)[:44].strip("-_.")
        return OWNER_ANNOTATION_PREFIX + (f"{readable}-{digest}" if readable else digest)

    @property
    def legacy_key(self) -> str:
        """Where versions before the project was in the key kept the record (the stack name only)."""
        name = f"marks.{self.stack}"
        if len(name) > 63:
            name = f"marks.{hashlib.sha256(self.stack.encode()).hexdigest()[:32]}"
        return f"asm-serverless-gateway/{name}"

    @staticmethod
    def of_urn(urn: str) -> Owner:
        """`urn:pulumi:<stack>::<project>::<type>::<name>` -> its stack's owner."""
        stack, project = urn.removeprefix("urn:pulumi:").split("::")[:2]
        return Owner(project, stack)

    def record_text(self, marks: Marks) -> str:
        return json.dumps({"stack": self.name, **marks.as_props()}, sort_keys=True)


class MarksConflict(Exception):  # noqa: N818 - a refusal, raised to the operator as it is
    """A declared mark whose slot another writer holds with another value."""


def owned(node: Node, owner: Owner) -> Marks:
    """What this stack put on the node, as its record says; only what the node still carries.

    A record under the earlier key (the stack's name only) counts as this
    stack's: those versions could not tell two projects' stacks of one name apart.
    """
    annotations = node.get("metadata", {}).get("annotations") or {}
    record = _record(annotations.get(owner.key, "{}"))
    if owner.legacy_key in annotations:
        record = record.union(_record(annotations[owner.legacy_key]))
    return record.found_on(node)


def handover_patch(node: Node, marks: Marks, stage: str) -> dict[str, Any] | None:
    """What deleting one of the version-without-records' resources writes: a patch, or None.

    Upgrading, this version's resources mark the node first (a mark already
    there is not theirs) and the earlier version's are deleted at the end of
    the same `up`. Where this version has recorded the node (its one record
    there), the earlier marks are handed over: added to that record, so that
    `destroy` still takes them back. Where it has not (the node left `nodes`
    in the same `up`, or `destroy` runs before any `up` of this version), the
    earlier resource's delete does what it always did: take back its stage's
    half of what it put on, except what another stack's record names.
    """
    metadata = node.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    keys = [k for k in annotations if k.startswith(OWNER_ANNOTATION_PREFIX)]
    found = marks.found_on(node)
    if not found:
        return None
    if len(keys) == 1:
        record = _record(annotations[keys[0]])
        merged = record.union(found)
        if merged == record:
            return None
        stack = _record_stack(annotations[keys[0]])
        document = {**({"stack": stack} if stack else {}), **merged.as_props()}
        return {
            "metadata": {
                "resourceVersion": metadata.get("resourceVersion"),
                "annotations": {keys[0]: json.dumps(document, sort_keys=True)},
            }
        }
    claimed = NO_MARKS
    for key in keys:
        claimed = claimed.union(_record(annotations[key]))
    patch: dict[str, Any] = {"metadata": {"resourceVersion": metadata.get("resourceVersion")}}
    if stage == ADMIT:
        dropped = {k: None for k, v in found.labels.items() if claimed.labels.get(k) != v}
        if not dropped:
            return None
        patch["metadata"]["labels"] = dropped
    else:
        gone = [t for t in found.taints if t not in claimed.taints]
        if not gone:
            return None
        current = node.get("spec", {}).get("taints") or []
        patch["spec"] = {"taints": [t for t in current if not any(g.on([t]) for g in gone)]}
    return patch


def _record(text: str) -> Marks:
    """A record as its annotation holds it; one that does not parse names nothing (nothing is taken off)."""
    try:
        document = json.loads(text)
        return Marks.from_props(document) if isinstance(document, dict) else NO_MARKS
    except (ValueError, KeyError, TypeError, AttributeError):
        return NO_MARKS


def others_records(node: Node, owner: Owner) -> dict[str, Marks]:
    """What other stacks recorded on the node, by how messages name each (the stack its record
    names; a record of an earlier version names none, so its key): never this stack's to change
    or take off."""
    return {
        name: marks
        for key, (name, marks) in records(node).items()
        if key not in (owner.key, owner.legacy_key)
    }


def _record_stack(text: str) -> str | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    stack = document.get("stack") if isinstance(document, dict) else None
    return stack if isinstance(stack, str) else None


def _union(records: Mapping[str, Marks]) -> Marks:
    found = NO_MARKS
    for marks in records.values():
        found = found.union(marks)
    return found


def records(node: Node) -> dict[str, tuple[str, Marks]]:
    """Every stack's record on the node: annotation key -> (how messages name it: the stack it
    names, or for a record of an earlier version, which names none, "the record <key>"; what it
    says the stack put there)."""
    annotations = node.get("metadata", {}).get("annotations") or {}
    return {
        key: (_record_stack(text) or f"the record {key}", _record(text))
        for key, text in sorted(annotations.items())
        if key.startswith(OWNER_ANNOTATION_PREFIX)
    }


def release_patch(
    node: Node, whose: str, take_marks_off: bool = False, to: Owner | None = None
) -> dict[str, Any] | None:
    """A merge patch that drops a stack's record (a stack that no longer exists), or None where
    the node has none. `whose` is the stack (`project/stack`, its earlier key included) or the
    record's annotation key.

    The marks it names stay on the node unless `take_marks_off`: then those that
    no other record names go too (what that stack's `destroy` would have done).
    With `to`, the record moves to that stack instead (a renamed stack), joined
    with what that stack recorded there already.
    """
    found = records(node)
    project, _, stack = whose.partition("/")
    former = Owner(project, stack) if stack else None
    keys = [
        key
        for key, (name, _) in found.items()
        if whose in (key, name) or (former is not None and key in (former.key, former.legacy_key))
    ]
    if not keys or (to is not None and keys == [to.key]):
        return None
    metadata = node.get("metadata", {})
    annotations: dict[str, str | None] = dict.fromkeys(keys)
    patch: dict[str, Any] = {
        "metadata": {"resourceVersion": metadata.get("resourceVersion"), "annotations": annotations}
    }
    released = _union({key: found[key][1] for key in keys})
    if to is not None:
        joined = released.union(found[to.key][1] if to.key in found else NO_MARKS)
        annotations[to.key] = to.record_text(joined)
    elif take_marks_off:
        on_node = released.found_on(node)
        kept = _union({key: marks for key, (_, marks) in found.items() if key not in keys})
        labels = {k: None for k, v in on_node.labels.items() if kept.labels.get(k) != v}
        gone = [t for t in on_node.taints if t not in kept.taints]
        if labels:
            patch["metadata"]["labels"] = labels
        if gone:
            current = node.get("spec", {}).get("taints") or []
            patch["spec"] = {"taints": [t for t in current if not any(g.on([t]) for g in gone)]}
    return patch


def conflicts(node: Node, declared: Marks, record: Marks, others: Mapping[str, Marks]) -> list[str]:
    """Declared marks whose slot the node holds with a value this stack may not replace.

    A node holds one value per label key, and one taint per key and effect.
    `kubectl label` and `kubectl taint` without `--overwrite` refuse to
    replace another value, and so does the stack, unless the value on the node
    is its own (an earlier declaration) and no other stack records it too
    (`others`): that stack's gateway relies on it.
    """
    name = node.get("metadata", {}).get("name")
    problems = []
    labels = node.get("metadata", {}).get("labels") or {}

    for key, value in declared.labels.items():
        held = labels.get(key)
        if held is None or held == value:
            continue
        holders = sorted(stack for stack, marks in others.items() if marks.labels.get(key) == held)
        if holders:
            problems.append(
                f"node {name}: the label {key}={held} is recorded by stack {', '.join(holders)} as well;"
                f" this stack declares '{value}', and changing it would take the node from that stack's"
                " gateway"
            )
        elif record.labels.get(key) != held:
            problems.append(
                f"node {name}: the label {key} is already on the node with the value '{held}'"
                f" (not put there by this stack); the stack declares '{value}'"
            )
    for taint in declared.taints:
        for other in node.get("spec", {}).get("taints") or []:
            value = other.get("value") or ""
            if not taint.same_slot(other) or value == taint.value:
                continue
            old = Taint(taint.key, value, taint.effect)
            holders = sorted(stack for stack, marks in others.items() if old in marks.taints)
            if holders:
                problems.append(
                    f"node {name}: the taint {show(old)} is recorded by stack {', '.join(holders)} as well;"
                    f" this stack declares '{taint.value}', and changing it would break that stack's"
                    " gateway's tolerations"
                )
            elif old not in record.taints:
                problems.append(
                    f"node {name}: the taint {taint.key}:{taint.effect} is already on the node with the"
                    f" value '{value}' (not put there by this stack); the stack declares '{taint.value}'"
                )
    return problems


def stage_patch(node: Node, stage: str, declared: Marks | None, owner: Owner) -> dict[str, Any] | None:
    """A JSON merge patch that brings `node` to one stage's half of `declared`, or None.

    `declared` None unmarks the node (the stack no longer lists it, or is
    destroyed). `admit` sets the declared labels and takes off the stack's
    taints that are no longer declared; `restrict` adds the declared taints
    and takes off the stack's labels that are no longer declared. Only marks
    in the stack's record are ever taken off or replaced; the record is
    updated in the same patch. Labels are merged key by key (null deletes
    one); the taint list is written whole, since a merge patch replaces
    lists, with every taint the stack does not own kept as it was (its
    value, its `timeAdded`) and in its place.
    """
    wanted = declared or NO_MARKS
    metadata = node.get("metadata", {})
    labels: Mapping[str, str] = metadata.get("labels") or {}
    current: list[Mapping[str, Any]] = list(node.get("spec", {}).get("taints") or [])
    handover, adopted = released_node_patch_claims(node, wanted)
    record = owned(node, owner).union(adopted)
    others = others_records(node, owner)
    shared = _union(others)
    checked = Marks(wanted.labels, ()) if stage == ADMIT else Marks({}, wanted.taints)
    problems = conflicts(node, checked, record, others)
    if problems:
        raise MarksConflict("; ".join(problems))

    label_patch: dict[str, str | None] = {}
    record_labels = dict(record.labels)
    taints = list(current)
    record_taints = set(record.taints)
    if stage == ADMIT:
        for k, v in wanted.labels.items():
            if labels.get(k) != v:
                label_patch[k] = v
                record_labels[k] = v
            elif shared.labels.get(k) == v:
                record_labels[k] = v  # another stack's too: it stays until neither declares it
        dropped = [t for t in record.taints if t not in wanted.taints]
        taints = [t for t in taints if not any(d.on([t]) for d in dropped if d not in shared.taints)]
        record_taints -= set(dropped)
        if declared is None:
            label_patch.update({k: None for k, v in record.labels.items() if shared.labels.get(k) != v})
            record_labels = {}
    else:
        for taint in wanted.taints:
            if taint.on(taints):
                if taint in shared.taints:
                    record_taints.add(taint)  # another stack's too: it stays until neither declares it
                continue
            slot = next((i for i, t in enumerate(taints) if taint.same_slot(t)), None)
            if slot is None:
                taints.append(taint.as_node_taint())
            else:  # the stack's own old value (others' were refused above)
                record_taints.discard(Taint(taint.key, taints[slot].get("value") or "", taint.effect))
                taints[slot] = taint.as_node_taint()
            record_taints.add(taint)
        if declared is None:
            # Unmarking: the taints only. The labels go with `admit`, after the
            # gateways (destroy's order), so the nodes stay the gateway's until then.
            taints = [
                t for t in taints if not any(d.on([t]) for d in record.taints if d not in shared.taints)
            ]
            record_taints = set()
        else:
            for k, v in record.labels.items():
                if wanted.labels.get(k) != v:
                    if shared.labels.get(k) != v:
                        label_patch[k] = None
                    record_labels.pop(k, None)

    new_record = Marks(record_labels, tuple(sorted(record_taints)))
    annotations = metadata.get("annotations") or {}
    # The record stays while the stack marks the node, even empty: it says the
    # stack has been here (an earlier version's marks are handed over to it).
    # Unmarked for good (admit, last), it goes.
    recorded = owner.key in annotations or owner.legacy_key in annotations
    unmarked = declared is None and (stage == ADMIT or not recorded)
    record_text = None if unmarked else owner.record_text(new_record)
    legacy = owner.legacy_key in annotations
    if (
        not label_patch
        and taints == current
        and handover is None
        and not legacy
        and annotations.get(owner.key) == record_text
    ):
        return None
    # The record moves from the earlier key in the same write.
    records = {owner.key: record_text, **({owner.legacy_key: None} if legacy else {})}
    patch: dict[str, Any] = {
        "metadata": {"resourceVersion": metadata.get("resourceVersion"), "annotations": records}
    }
    if handover is not None:
        patch["metadata"]["managedFields"] = handover
    if label_patch:
        patch["metadata"]["labels"] = label_patch
    if taints != current:
        patch["spec"] = {"taints": taints}
    return patch


def merged(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`target` with a JSON merge patch applied, as the API server applies one (RFC 7386): maps
    merge key by key, null deletes, anything else replaces (a list whole)."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            below = result.get(key)
            result[key] = merged(below if isinstance(below, Mapping) else {}, value)
        else:
            result[key] = value
    return result


def _composed(first: Mapping[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """One merge patch that does `first`, then `then` (a null in `then` still deletes)."""
    result = dict(first)
    for key, value in then.items():
        before = result.get(key)
        both = isinstance(value, Mapping) and isinstance(before, Mapping)
        result[key] = _composed(before, value) if both else value  # type: ignore[arg-type]
    return result


def up_patches(node: Node, declared: Marks | None, owner: Owner) -> list[dict[str, Any]]:
    """What an `up` writes to one node, for dry runs: the first stage's patch on the node as read
    (as `up` sends it), then both stages as one patch (the node as `up` leaves it, judged
    against the node as read). Marking, `admit` goes first; unmarking (a node that left the
    list), `restrict` takes the taints off first. Empty where nothing changes. A rule that
    compares the node before a write with after it (`oldObject`) judges the second against the
    node as read, not as the first stage left it: only `up` itself can tell that one exactly."""
    first, second = (ADMIT, RESTRICT) if declared is not None else (RESTRICT, ADMIT)
    one = stage_patch(node, first, declared, owner)
    two = stage_patch(merged(node, one) if one else node, second, declared, owner)
    if one is None or two is None:
        return [p for p in (one, two) if p is not None]
    return [one, _composed(one, two)]


# What earlier versions of this stack applied nodes' marks with: the Kubernetes
# provider's NodePatch, by server-side apply under a field manager named so.
NODE_PATCH_MANAGER_PREFIX = "pulumi-kubernetes-"


def released_node_patch_claims(node: Node, declared: Marks) -> tuple[list[Any] | None, Marks]:
    """The node's managedFields without an earlier NodePatch's claim on the declared marks, and those marks.

    Upgrading replaced the NodePatch of earlier versions; deleting it would
    remove every field it applied, the whole atomic taint list included. Its
    claim is taken off first (as a `kubectl` user may edit managedFields), so
    that delete touches nothing, and what it claimed joins the stack's record.
    Only a claim that is this project's is taken: a server-side apply by a
    `pulumi-kubernetes-*` manager that claims at least one of the declared
    labels and no other label, and nothing besides labels, the taints and
    Pulumi's own annotation. Another program's NodePatch claims labels of its
    own, and keeps its claim.
    """
    if not declared:
        return None, NO_MARKS
    entries = list(node.get("metadata", {}).get("managedFields") or [])
    ours = {f"f:{key}" for key in declared.labels}
    adopted_labels: set[str] = set()
    adopted_taints = False

    def earlier_node_patch(entry: Mapping[str, Any]) -> bool:
        nonlocal adopted_taints
        if not str(entry.get("manager", "")).startswith(NODE_PATCH_MANAGER_PREFIX):
            return False
        if entry.get("operation") != "Apply":
            return False
        fields = entry.get("fieldsV1") or {}
        metadata = fields.get("f:metadata", {})
        labels = set(metadata.get("f:labels", {}))
        annotations = set(metadata.get("f:annotations", {})) - {"f:pulumi.com/patchForce"}
        released = (
            set(fields) <= {"f:metadata", "f:spec"}
            and set(metadata) <= {"f:labels", "f:annotations"}
            and set(fields.get("f:spec", {})) <= {"f:taints"}
            and not annotations
            and bool(labels & ours)
            and labels <= ours
        )
        if released:
            adopted_labels.update(k.removeprefix("f:") for k in labels)
            adopted_taints = adopted_taints or "f:taints" in fields.get("f:spec", {})
        return released

    kept = [e for e in entries if not earlier_node_patch(e)]
    if len(kept) == len(entries):
        return None, NO_MARKS
    adopted = Marks(
        {k: v for k, v in declared.labels.items() if k in adopted_labels},
        declared.taints if adopted_taints else (),
    ).found_on(node)
    # An empty list would leave managedFields as they are; `[{}]` clears them.
    return kept or [{}], adopted


# -- The rollout gate: tolerate before taint ------------------------------------------------


def is_finished(pod: Pod) -> bool:
    return pod.get("status", {}).get("phase") in FINISHED_PHASES


def pod_name(pod: Pod) -> str:
    metadata = pod.get("metadata", {})
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def untolerated(pod: Pod, taints: Iterable[Taint]) -> list[Taint]:
    """The taints a pod does not tolerate for good.

    A toleration with `tolerationSeconds` only delays a NoExecute eviction, so
    for a NoExecute taint it does not count.
    """
    tolerations = pod.get("spec", {}).get("tolerations") or []
    lasting = [t for t in tolerations if t.get("tolerationSeconds") is None]
    return [t for t in taints if not t.tolerated_by(lasting if t.effect == "NoExecute" else tolerations)]


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
    daemon_set: str | None = None  # namespace/name of the DaemonSet that runs the pod, if one does

    def __str__(self) -> str:
        where = f"on {self.node}" if self.node else "not scheduled"
        if self.daemon_set:
            where += f", of DaemonSet {self.daemon_set}"
        effect = "would be evicted by" if self.evicts else "does not tolerate"
        return f"{self.pod} ({where}) {effect} {', '.join(show(t) for t in self.taints)}"


MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


def daemon_set_of(pod: Pod) -> str | None:
    """The DaemonSet that controls a pod (namespace/name), as `kubectl drain` tells them apart.

    Its controller would not put such a pod back on a node whose taint it does
    not tolerate: evicted, it stays off that node.
    """
    metadata = pod.get("metadata", {})
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") == "DaemonSet":
            return f"{metadata.get('namespace')}/{owner.get('name')}"
    return None


@dataclass(frozen=True)
class EvictionsAllowed:
    """Which pods of other owners a NoExecute taint the stack adds may evict (ecsCapacity's
    `evictOtherPods` and `evictDaemonSetPods`); the rest stop `up` before the taint."""

    other_pods: bool = False
    daemon_set_pods: bool = False

    @property
    def every_pod(self) -> bool:
        return self.other_pods and self.daemon_set_pods

    def allows(self, blocker: Blocker) -> bool:
        return self.daemon_set_pods if blocker.daemon_set else self.other_pods


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
        # A static pod's mirror: the kubelet runs it whatever the taints (and `kubectl drain`
        # leaves it); deleting the mirror only has the kubelet make it again.
        mirror = MIRROR_POD_ANNOTATION in (pod.get("metadata", {}).get("annotations") or {})
        if is_finished(pod) or is_gateway(pod) or mirror:
            continue
        node = pod.get("spec", {}).get("nodeName")
        taints = untolerated(pod, tainting.evicting(node))
        if taints:
            evicted.append(Blocker(pod_name(pod), node, tuple(taints), True, daemon_set_of(pod)))
    return evicted


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether labels match an equality-based label selector (`k=v,k2=v2`), as the gateways' are."""
    for term in filter(None, (part.strip() for part in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True
