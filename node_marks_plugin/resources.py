"""The provider's two resources, on plain property dicts.

`NodeMarks` (one per stage for all the stack's named nodes) adds and removes
exactly the declared labels and taints; `TolerationRollout` (for a node pool,
whose taints ACK writes) only waits. Both wait once per `up`, whatever the
number of nodes: see `cluster.wait_for_rollout`. Whose a mark is lives on the
node itself (marks.stage_patch), so neither resource keeps more than its
inputs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from node_marks_plugin.cluster import (
    Cluster,
    NodeMarksError,
    evictions_refused,
    other_owners_evicted,
    refuse_evicting_others,
    wait_for_rollout,
)
from node_marks_plugin.marks import (
    ADMIT,
    RESTRICT,
    STAGES,
    EvictionsAllowed,
    Marks,
    Node,
    Owner,
    Tainting,
    conflicts,
    others_records,
    owned,
    show,
    taints_from,
)

NODE_MARKS = "asm-node-marks:index:NodeMarks"
TOLERATION_ROLLOUT = "asm-node-marks:index:TolerationRollout"
# Inputs whose change is an update; nothing here is ever replaced.
NODE_MARKS_INPUTS = (
    "stage",
    "nodes",
    "labels",
    "taints",
    "gatewayPods",
    "gatewayTolerates",
    "rolloutTimeoutSeconds",
    "evictOtherPods",
    "evictDaemonSetPods",
)
TOLERATION_ROLLOUT_INPUTS = (
    "waitsFor",
    "nodeLabels",
    "taints",
    "gatewayPods",
    "gatewayTolerates",
    "rolloutTimeoutSeconds",
    "evictOtherPods",
    "evictDaemonSetPods",
)

Props = Mapping[str, Any]
Log = Callable[[str], None]


class PartlyAppliedError(NodeMarksError):
    """A failure after some nodes changed; `outputs` is the state that says which."""

    def __init__(self, message: str, outputs: dict[str, Any]) -> None:
        super().__init__(message)
        self.outputs = outputs


@dataclass(frozen=True)
class Diff:
    changed: list[str]
    drift: list[str]  # what the nodes lack of the declared marks, for the preview's output


def _node_list(props: Props | None) -> list[str]:
    return list((props or {}).get("nodes") or [])


def _tainting(nodes: Mapping[str, Node], declared: Marks, props: Props) -> Tainting:
    return Tainting(
        {
            name: tuple(t for t in declared.taints if not t.on(node.get("spec", {}).get("taints") or []))
            for name, node in nodes.items()
        },
        frozenset(taints_from(props.get("gatewayTolerates"))),
    )


def _allowed(props: Props) -> EvictionsAllowed:
    # Absent in the state of earlier versions (and when false): nothing allowed.
    return EvictionsAllowed(bool(props.get("evictOtherPods")), bool(props.get("evictDaemonSetPods")))


def _wait(cluster: Cluster, props: Props, tainting: Tainting, cancelled: threading.Event, log: Log) -> None:
    """Tolerate before taint (cluster.wait_for_rollout), with the resource's own settings."""
    wait_for_rollout(
        cluster,
        props.get("gatewayPods") or [],
        tainting,
        timeout=float(props.get("rolloutTimeoutSeconds") or 600),
        allowed=_allowed(props),
        cancelled=cancelled,
        log=log,
    )


def _read_listed(names: list[str], every_node: Mapping[str, Node]) -> dict[str, Node]:
    nodes = {name: every_node[name] for name in names if name in every_node}
    missing = [n for n in names if n not in nodes]
    if missing:
        raise NodeMarksError(
            f"node(s) {', '.join(missing)} do not exist in the cluster (ecsCapacity.nodes);"
            " nothing was changed"
        )
    return nodes


def _refuse_conflicts(nodes: Mapping[str, Node], declared: Marks, owner: Owner) -> None:
    problems = [
        p
        for node in nodes.values()
        for p in conflicts(node, declared, owned(node, owner), others_records(node, owner))
    ]
    if problems:
        raise NodeMarksError(
            "; ".join(problems)
            + ". Nothing was changed. Declare the value on the node in ecsCapacity, or change the mark"
            " where it comes from: on the node (`kubectl label`, `kubectl taint`); for a value another"
            " stack records, take the mark out of one stack, change it in the other, then declare it"
            " again. A record of a stack that no longer exists is released with"
            " `scripts/node-marks.sh release`."
        )


@dataclass
class NodeMarksResource:
    """Create, update and delete of one stage's marks on every named node."""

    cluster: Cluster
    owner: Owner  # the stack whose record on each node says what it put there
    cancelled: threading.Event
    log: Log

    def apply(self, olds: Props | None, news: Props, *, preview: bool = False) -> dict[str, Any]:
        """Take the nodes from `olds` (None on create) to `news`; the outputs to store."""
        stage = news["stage"]
        if stage not in STAGES:
            raise NodeMarksError(f"stage must be one of {STAGES}, not {stage!r}")
        declared = Marks.from_props(news)
        listed = _node_list(news)
        nodes = _read_listed(listed, self.cluster.nodes(listed))
        # Before anything changes: a mark another writer holds with another value.
        _refuse_conflicts(nodes, declared, self.owner)
        tainting = _tainting(nodes, declared, news)
        outputs = {k: news.get(k) for k in NODE_MARKS_INPUTS if k in news}
        if preview:
            if stage == RESTRICT:
                warn_evictions(self.cluster, news, tainting, self.log)
            else:
                warn_label_value_changes(nodes, declared, self.owner, self.log)
            return outputs
        if stage == RESTRICT:
            _wait(self.cluster, news, tainting, self.cancelled, self.log)
        touched: list[str] = []
        allowed = _allowed(news)
        try:
            for name in listed:
                if stage == RESTRICT and tainting.evicting(name) and not allowed.every_pod:
                    # Pods may have arrived on this node while others were patched.
                    here = Tainting({name: tainting.adds[name]}, tainting.gateway_tolerates)
                    refuse_evicting_others(
                        other_owners_evicted(self.cluster, news.get("gatewayPods") or [], here),
                        allowed,
                        first=not touched,
                    )
                self._mark(name, stage, declared)
                touched.append(name)
            # Nodes no longer listed: each stage takes back what the stack put there.
            for name in _node_list(olds):
                if name not in listed:
                    self._mark(name, stage, None)
                    touched.append(name)
        except NodeMarksError as error:
            if not touched:
                raise
            # Some nodes changed: state must name them, or a later `up` or
            # `destroy` would not know to take their marks back; the operator is told which.
            partial = {**outputs, "nodes": sorted({*_node_list(olds), *touched})}
            changed = (
                f" Nodes this `{stage}` stage had done before the failure: {', '.join(touched)}; the state"
                " keeps them (the next `up` finishes the rest, `destroy` takes the stack's marks off them)."
            )
            raise PartlyAppliedError(f"{str(error).rstrip('.')}.{changed}", partial) from None
        return outputs

    def _mark(self, name: str, stage: str, declared: Marks | None) -> None:
        if self.cancelled.is_set():
            raise NodeMarksError("cancelled; the nodes not changed yet were left as they were")
        self.cluster.mark_node(name, stage, declared, self.owner)

    def delete(self, olds: Props) -> None:
        for name in _node_list(olds):
            self._mark(name, olds["stage"], None)

    def read(self, state: Props, inputs: Props) -> dict[str, Any]:
        """`refresh`: the state with this stage's marks narrowed to what every listed node still carries.

        From what is declared (the inputs), so that a mark put back by hand reads
        as declared again; but the nodes are the state's as well as the declared:
        after a partial failure the state names nodes still to clean (a node that
        left the list and whose unmark failed), and dropping them would leave the
        stack's marks and record on it for good.
        """
        declared_nodes = _node_list(inputs)
        nodes_to_keep = [*declared_nodes, *(n for n in _node_list(state) if n not in declared_nodes)]
        state = {**state, **inputs, "nodes": nodes_to_keep}
        declared = Marks.from_props(state)
        nodes = list(self.cluster.nodes(_node_list(state)).values())
        carried = declared
        for node in nodes:
            found = declared.found_on(node)
            carried = Marks(
                {k: v for k, v in carried.labels.items() if k in found.labels},
                tuple(t for t in carried.taints if t in found.taints),
            )
        narrowed = (
            Marks(carried.labels, declared.taints)
            if state["stage"] == ADMIT
            else Marks(declared.labels, carried.taints)
        )
        return {**state, **narrowed.as_props()}

    def diff(self, olds: Props, news: Props) -> Diff:
        """What changed in the inputs, and marks taken off the nodes behind the stack's back."""
        changed = changed_keys(olds, news, NODE_MARKS_INPUTS)
        declared = Marks.from_props(news)
        nodes = _read_listed(_node_list(news), self.cluster.nodes(_node_list(news)))
        _refuse_conflicts(nodes, declared, self.owner)
        drift = []
        for name, node in nodes.items():
            found = declared.found_on(node)
            if news["stage"] == RESTRICT:
                lacking = [show(t) for t in declared.taints if t not in found.taints]
            else:
                lacking = [f"{k}={v}" for k, v in declared.labels.items() if k not in found.labels]
            if lacking:
                drift.append(f"{name} lacks {', '.join(lacking)}")
        return Diff(changed, drift)


def warn_label_value_changes(nodes: Mapping[str, Node], declared: Marks, owner: Owner, log: Log) -> None:
    """A label's new value goes on before the gateways' rules follow it: say so in the preview."""
    changing = set()
    for node in nodes.values():
        record = owned(node, owner)
        changing |= {k for k, v in declared.labels.items() if k in record.labels and record.labels[k] != v}
    if changing:
        log(
            f"the label(s) {', '.join(sorted(changing))} change value on the gateway's nodes before the"
            " gateways' rules follow, in this same `up`: meanwhile a new gateway pod cannot be placed on"
            " them. To avoid that window, add a label under a new key, then remove the old one."
        )


def warn_evictions(cluster: Cluster, props: Props, tainting: Tainting, log: Log) -> None:
    """Say in the preview which pods of other owners a NoExecute taint would evict, and whether
    `up` will let it (ecsCapacity's evictOtherPods and evictDaemonSetPods) or stop first."""
    if not any(tainting.evicting(n) for n in tainting.adds):
        return
    evicted = other_owners_evicted(cluster, props.get("gatewayPods") or [], tainting, cached=True)
    allowed = _allowed(props)
    let = "; ".join(str(b) for b in evicted if allowed.allows(b))
    if let:
        log(f"`up` will let a NoExecute taint evict pods the stack does not own, as configured: {let}")
    refused = evictions_refused(evicted, allowed)
    if refused:
        log(f"`up` will stop before adding a NoExecute taint. {refused}")


@dataclass
class TolerationRolloutResource:
    """A gate before a node pool changes: waits until the pool's taints may go on its nodes."""

    cluster: Cluster
    cancelled: threading.Event
    log: Log

    def _tainting(self, olds: Props | None, news: Props, *, cached: bool) -> Tainting:
        """The pool's nodes by its labels, old and new (a label renamed in the same `up`);
        `cached` for a preview, fresh before the taints go on."""
        nodes: dict[str, Node] = {}
        for props in (olds or {}, news):
            selector = ",".join(f"{k}={v}" for k, v in sorted((props.get("nodeLabels") or {}).items()))
            if selector:
                nodes.update(self.cluster.nodes(label_selector=selector, cached=cached))
        return _tainting(nodes, Marks.from_props(news), news)

    def apply(self, olds: Props | None, news: Props, *, preview: bool = False) -> dict[str, Any]:
        tainting = self._tainting(olds, news, cached=preview)
        if preview:
            warn_evictions(self.cluster, news, tainting, self.log)
        else:
            _wait(self.cluster, news, tainting, self.cancelled, self.log)
        return {k: news.get(k) for k in TOLERATION_ROLLOUT_INPUTS if k in news}

    def diff(self, olds: Props, news: Props) -> Diff:
        return Diff(changed_keys(olds, news, TOLERATION_ROLLOUT_INPUTS), [])


def changed_keys(olds: Props, news: Props, keys: tuple[str, ...]) -> list[str]:
    """The inputs among `keys` whose values differ (maps compared regardless of key order)."""
    return [
        k for k in keys if json.dumps(olds.get(k), sort_keys=True) != json.dumps(news.get(k), sort_keys=True)
    ]
