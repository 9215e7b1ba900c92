"""The serverless scheduling rules, as plain data.

Everything here is pure: node groups in, the `affinity` and `tolerations` of an
IstioGateway spec out, shaped and keyed exactly as Kubernetes has them. The
rules are derived from the node groups that the same stack declares, so the
gateway's placement cannot drift from the pool's labels and taints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True, order=True)
class Taint:
    key: str
    value: str
    effect: str

    def as_toleration(self) -> dict[str, str]:
        """A toleration for exactly this taint: its key, its value, its effect."""
        if not self.value:
            # A taint without a value is matched by key alone; this is still
            # scoped to one key and one effect, never a bare `Exists`.
            return {"key": self.key, "operator": "Exists", "effect": self.effect}
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}

    def as_node_taint(self) -> dict[str, str]:
        """This taint as a Node's `spec.taints` carries it."""
        if not self.value:
            return {"key": self.key, "effect": self.effect}
        return {"key": self.key, "value": self.value, "effect": self.effect}

    def same_slot(self, node_taint: Mapping[str, Any]) -> bool:
        """Whether a node's taint has this key and effect: a node holds one taint per pair."""
        return node_taint.get("key") == self.key and node_taint.get("effect") == self.effect

    def on(self, node_taints: Sequence[Mapping[str, Any]]) -> bool:
        """Whether a node's taint list carries exactly this taint."""
        return any(self.same_slot(t) and (t.get("value") or "") == self.value for t in node_taints)

    def tolerated_by(self, tolerations: Sequence[Mapping[str, Any]]) -> bool:
        """Whether a pod with these tolerations may stay on (and be placed on) a node with this taint.

        The rules are kube-scheduler's: an empty key with `Exists` matches every
        key, an empty effect matches every effect, `Equal` (the default) also
        compares the value.
        """
        for toleration in tolerations:
            key = toleration.get("key") or ""
            operator = toleration.get("operator") or "Equal"
            effect = toleration.get("effect") or ""
            if effect and effect != self.effect:
                continue
            if not key:
                if operator == "Exists":
                    return True
                continue
            if key != self.key:
                continue
            if operator == "Exists" or (toleration.get("value") or "") == self.value:
                return True
        return False


class NodeKind(StrEnum):
    ECS = "ecs"
    ECI = "eci"


@dataclass(frozen=True)
class NodeGroup:
    """Nodes the gateway may use, as the scheduler sees them: labels and taints."""

    kind: NodeKind
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = field(default=())

    def selector_term(self) -> dict[str, Any]:
        """One nodeSelectorTerm that matches every node of the group (labels ANDed)."""
        return {
            "matchExpressions": [
                {"key": key, "operator": "In", "values": [value]}
                for key, value in sorted(self.labels.items())
            ]
        }


# What ACK's virtual-kubelet puts on every virtual node; it cannot be changed.
VIRTUAL_NODE_LABELS: Mapping[str, str] = {"type": "virtual-kubelet"}
VIRTUAL_NODE_TAINT = Taint("virtual-kubelet.io/provider", "alibabacloud", "NoSchedule")
VIRTUAL_NODES = NodeGroup(NodeKind.ECI, VIRTUAL_NODE_LABELS, (VIRTUAL_NODE_TAINT,))


class Policy(StrEnum):
    """Where the gateway's pods may go, and which kind of node they prefer."""

    PREFER_ECS = "prefer-ecs"  # the guide's: ECS first, ECI as overflow
    PREFER_ECI = "prefer-eci"
    ECS_ONLY = "ecs-only"
    ECI_ONLY = "eci-only"

    @property
    def allowed(self) -> tuple[NodeKind, ...]:
        """The kinds of node the policy admits, the preferred one first."""
        return {
            Policy.PREFER_ECS: (NodeKind.ECS, NodeKind.ECI),
            Policy.PREFER_ECI: (NodeKind.ECI, NodeKind.ECS),
            Policy.ECS_ONLY: (NodeKind.ECS,),
            Policy.ECI_ONLY: (NodeKind.ECI,),
        }[self]


@dataclass(frozen=True)
class Weights:
    """Preferred-affinity weights: the preferred kind of node, then the overflow."""

    preferred: int = 80
    overflow: int = 20


@dataclass(frozen=True)
class SchedulingRules:
    affinity: dict[str, Any]
    tolerations: list[dict[str, str]]

    def as_spec(self) -> dict[str, Any]:
        return {"affinity": self.affinity, "tolerations": self.tolerations}


class MissingNodeGroupError(ValueError):
    """The policy admits a kind of node that the stack does not declare."""

    def __init__(self, policy: Policy, kind: NodeKind) -> None:
        super().__init__(f"policy {policy.value} needs {kind.value.upper()} nodes")
        self.policy = policy
        self.kind = kind


def derive_rules(
    policy: Policy,
    groups: Mapping[NodeKind, NodeGroup],
    weights: Weights = Weights(),
) -> SchedulingRules:
    """The gateway's node affinity and tolerations for a policy over node groups.

    Required affinity admits exactly the groups the policy allows (one
    nodeSelectorTerm each, ORed); preferred affinity ranks them by weight;
    tolerations cover exactly the taints of those groups.
    """
    allowed = []
    for kind in policy.allowed:
        if kind not in groups:
            raise MissingNodeGroupError(policy, kind)
        allowed.append(groups[kind])

    node_affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [group.selector_term() for group in allowed]
        }
    }
    if len(allowed) > 1:
        preferred, overflow = allowed
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": weights.preferred, "preference": preferred.selector_term()},
            {"weight": weights.overflow, "preference": overflow.selector_term()},
        ]

    taints = sorted({taint for group in allowed for taint in group.taints})
    return SchedulingRules(
        affinity={"nodeAffinity": node_affinity},
        tolerations=[taint.as_toleration() for taint in taints],
    )


def resource_policy_units(policy: Policy, groups: Mapping[NodeKind, NodeGroup]) -> list[dict[str, Any]]:
    """ACK ResourcePolicy units for a policy: the allowed kinds of node, in order.

    ACK's scheduler fills each unit before it tries the next, which is the
    strict ECS-first (or ECI-first) that preferred affinity alone only asks for.
    """
    units: list[dict[str, Any]] = []
    for kind in policy.allowed:
        if kind not in groups:
            raise MissingNodeGroupError(policy, kind)
        if kind is NodeKind.ECS:
            units.append({"resource": "ecs", "nodeSelector": dict(sorted(groups[kind].labels.items()))})
        else:
            units.append({"resource": "eci"})
    return units


def expression_matches(labels: Mapping[str, str], expression: Mapping[str, Any]) -> bool:
    """Whether labels meet one `matchExpressions` entry (of a node or a label selector)."""
    key, operator = expression["key"], expression["operator"]
    values = expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and key in labels:
        number, bound = int(labels[key]), int(values[0])
        return number > bound if operator == "Gt" else number < bound
    return False
