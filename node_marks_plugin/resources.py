"""The provider's two resources, on plain property dicts.

`NodeMarks` (one per stage for all the stack's named nodes) adds and removes
exactly the declared labels and taints; `TolerationRollout` (for a node pool,
whose taints ACK writes) only waits. Both wait once per `up`, whatever the
number of nodes: see `cluster.wait_for_rollout`.
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
    other_owners_evicted,
    wait_for_rollout,
)
from node_marks_plugin.marks import (
    ADMIT,
    NO_MARKS,
    RESTRICT,
    STAGES,
    Marks,
    Node,
    Tainting,
    preexisting,
    show,
    stage_change,
    taint_conflicts,
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
    "preexisting",
    "gatewayPods",
    "gatewayTolerates",
    "rolloutTimeoutSeconds",
    "evictOtherPods",
)
TOLERATION_ROLLOUT_INPUTS = (
    "waitsFor",
    "nodeLabels",
    "taints",
    "gatewayPods",
    "gatewayTolerates",
    "rolloutTimeoutSeconds",
    "evictOtherPods",
)

Props = Mapping[str, Any]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Diff:
    changed: list[str]
    drift: list[str]  # what the nodes lack of the declared marks, for the preview's output


def _kept(props: Props | None, node: str) -> Marks:
    """The marks `node` carried before the stack declared them (recorded by `admit`)."""
    return Marks.from_props(((props or {}).get("preexisting") or {}).get(node))


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


def _wait(cluster: Cluster, props: Props, tainting: Tainting, cancelled: threading.Event) -> None:
    wait_for_rollout(
        cluster,
        props.get("gatewayPods") or [],
        tainting,
        timeout=float(props.get("rolloutTimeoutSeconds") or 600),
        evict_other_pods=bool(props.get("evictOtherPods")),
        cancelled=cancelled,
    )


def _read_listed(cluster: Cluster, names: list[str]) -> dict[str, Node]:
    nodes = cluster.nodes(names)
    missing = [n for n in names if n not in nodes]
    if missing:
        raise NodeMarksError(
            f"node(s) {', '.join(missing)} do not exist in the cluster (ecsCapacity.nodes);"
            " nothing was changed"
        )
    return nodes


def _refuse_conflicts(nodes: Mapping[str, Node], declared: Marks, olds: Props | None) -> None:
    ours_before = taints_from((olds or {}).get("taints"))
    problems = [p for node in nodes.values() for p in taint_conflicts(node, declared.taints, ours_before)]
    if problems:
        raise NodeMarksError(
            "; ".join(problems)
            + ". Nothing was changed. Remove or change that taint on the node first (`kubectl taint`), or"
            " declare its value in ecsCapacity.taints."
        )


class NodeMarksResource:
    """Create, update and delete of one stage's marks on every named node."""

    def __init__(self, cluster: Cluster, cancelled: threading.Event) -> None:
        self.cluster = cluster
        self.cancelled = cancelled

    def apply(self, olds: Props | None, news: Props, *, preview: bool = False) -> dict[str, Any]:
        """Take the nodes from `olds` (None on create) to `news`; the outputs to store."""
        stage = news["stage"]
        if stage not in STAGES:
            raise NodeMarksError(f"stage must be one of {STAGES}, not {stage!r}")
        declared = Marks.from_props(news)
        old_declared = Marks.from_props(olds) if olds is not None else None
        listed, before = _node_list(news), _node_list(olds)
        nodes = _read_listed(self.cluster, listed)
        _refuse_conflicts(nodes, declared, olds)

        outputs = {k: news.get(k) for k in NODE_MARKS_INPUTS if k in news}
        records: dict[str, Any] = {}
        changes = {}
        for name in listed:
            old = old_declared if name in before else None
            kept_before = _kept(olds, name) if old is not None else NO_MARKS
            if stage == ADMIT:
                # Only marks newly declared for a node can be found there before the stack.
                found = preexisting(nodes[name], declared.without(old or NO_MARKS))
                record = kept_before.within(declared).union(found)
                if record:
                    records[name] = record.as_props()
                kept_now = found
            else:
                kept_now = _kept(news, name)  # recorded by `admit`, an input here
            changes[name] = stage_change(stage, old, declared, kept_before.union(kept_now))
        # Nodes no longer listed: each stage takes back what it added there.
        for name in before:
            if name not in listed:
                changes[name] = stage_change(stage, old_declared, None, _kept(olds, name))
        if stage == ADMIT:
            outputs["preexisting"] = records
        if preview:
            return outputs
        if stage == RESTRICT:
            _wait(self.cluster, news, _tainting(nodes, declared, news), self.cancelled)
        for name, change in changes.items():
            self.cluster.change_node(name, change)
        return outputs

    def delete(self, olds: Props) -> None:
        old = Marks.from_props(olds)
        for name in _node_list(olds):
            self.cluster.change_node(name, stage_change(olds["stage"], old, None, _kept(olds, name)))

    def diff(self, olds: Props, news: Props, log: Log) -> Diff:
        """What changed in the inputs, and marks taken off the nodes behind the stack's back."""
        changed = changed_keys(olds, news, NODE_MARKS_INPUTS)
        declared = Marks.from_props(news)
        nodes = _read_listed(self.cluster, _node_list(news))
        _refuse_conflicts(nodes, declared, olds)
        drift = []
        for name, node in nodes.items():
            lacking = declared.without(declared.found_on(node))
            if news["stage"] == RESTRICT and lacking.taints:
                drift.append(f"{name} lacks {', '.join(show(t) for t in lacking.taints)}")
            if news["stage"] == ADMIT and lacking.labels:
                drift.append(f"{name} lacks {', '.join(f'{k}={v}' for k, v in lacking.labels.items())}")
        if news["stage"] == RESTRICT:
            warn_evictions(self.cluster, news, _tainting(nodes, declared, news), log)
        return Diff(changed, drift)


def warn_evictions(cluster: Cluster, props: Props, tainting: Tainting, log: Log) -> None:
    """Say in the preview which pods of other owners a NoExecute taint would evict."""
    if not any(tainting.evicting(n) for n in tainting.adds):
        return
    evicted = other_owners_evicted(cluster, props.get("gatewayPods") or [], tainting)
    if not evicted:
        return
    shown = "; ".join(str(b) for b in evicted)
    if props.get("evictOtherPods"):
        log(f"`up` will let a NoExecute taint evict pods it does not own (evictOtherPods): {shown}")
    else:
        log(
            f"`up` will stop before adding a NoExecute taint that would evict pods it does not own: {shown}."
            " Give them the toleration, move them, or set ecsCapacity.evictOtherPods: true."
        )


class TolerationRolloutResource:
    """A gate before a node pool changes: waits until the pool's taints may go on its nodes."""

    def __init__(self, cluster: Cluster, cancelled: threading.Event) -> None:
        self.cluster = cluster
        self.cancelled = cancelled

    def _tainting(self, props: Props) -> tuple[dict[str, Node], Tainting]:
        selector = ",".join(f"{k}={v}" for k, v in sorted((props.get("nodeLabels") or {}).items()))
        nodes = self.cluster.nodes(label_selector=selector) if selector else {}
        return nodes, _tainting(nodes, Marks.from_props(props), props)

    def apply(self, news: Props, *, preview: bool = False) -> dict[str, Any]:
        if not preview:
            _, tainting = self._tainting(news)
            _wait(self.cluster, news, tainting, self.cancelled)
        return {k: news.get(k) for k in TOLERATION_ROLLOUT_INPUTS if k in news}

    def diff(self, olds: Props, news: Props, log: Log) -> Diff:
        changed = changed_keys(olds, news, TOLERATION_ROLLOUT_INPUTS)
        if changed:
            _, tainting = self._tainting(news)
            warn_evictions(self.cluster, news, tainting, log)
        return Diff(changed, [])


def changed_keys(olds: Props, news: Props, keys: tuple[str, ...]) -> list[str]:
    """The inputs among `keys` whose values differ (maps compared regardless of key order)."""
    return [
        k for k in keys if json.dumps(olds.get(k), sort_keys=True) != json.dumps(news.get(k), sort_keys=True)
    ]
