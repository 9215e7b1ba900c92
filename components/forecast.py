"""Where the gateway's pods will land, before `up`: a forecast from the nodes and the rules (pure).

The ECS room is counted as kube-scheduler's fit check counts it (a pod fits a
node while its requests, added to what is already requested there, stay
within the node's allocatable CPU, memory and pod count), node by node. The
gateways of a stack share the ECS nodes: at each point (every gateway at
`minReplicas`, then at `replicaCount`, then at `maxReplicas`) they are
placed in declaration order. What does not fit on ECS goes to ECI where the
policy allows it (virtual nodes have room for any burst), else stays Pending.

That is exactly what an ECS-first scheduler does (ACK's ResourcePolicy, or
preferred affinity made decisive). kube-scheduler's default scoring spreads
pods by other scores too, so some may go to ECI while ECS still has room:
then the ECS figures are an upper bound, and the forecast says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from components.scheduling import Policy

GIB = Decimal(2**30)


def gateway_key(namespace: str, name: str) -> str:
    """How the forecast names a gateway: two gateways may share a name in two namespaces."""
    return f"{namespace}/{name}"


@dataclass(frozen=True)
class PodSize:
    """What one gateway pod requests: CPU in cores, memory in bytes."""

    cpu: Decimal
    memory: Decimal


@dataclass(frozen=True)
class NodeRoom:
    """What one ECS node has left for gateway pods."""

    name: str
    cpu: Decimal
    memory: Decimal
    pods: int

    def holds(self, size: PodSize) -> int:
        """How many pods of `size` fit here, as the scheduler's fit check counts."""
        by_cpu = int(self.cpu // size.cpu) if size.cpu > 0 else self.pods
        by_memory = int(self.memory // size.memory) if size.memory > 0 else self.pods
        return max(0, min(by_cpu, by_memory, self.pods))

    def short_of(self, size: PodSize) -> str:
        """What keeps one more pod off, in the scheduler's words."""
        if self.pods < 1:
            return "Too many pods"
        if self.cpu < size.cpu:
            return "Insufficient cpu"
        return "Insufficient memory"

    def minus(self, size: PodSize, count: int) -> NodeRoom:
        return replace(self, cpu=self.cpu - size.cpu * count, memory=self.memory - size.memory * count,
                       pods=self.pods - count)  # fmt: skip


@dataclass(frozen=True)
class Inventory:
    """The gateway's ECS nodes as the forecast sees them, and where that came from."""

    nodes: tuple[NodeRoom, ...] | None  # None: not known (no kubeconfig and no instance type)
    source: str  # one line: read from the cluster, or from the instance types' table
    live: bool = False  # allocatable less what runs there (True), or capacity, an upper bound
    # Live only: where the gateway's pods run now, by gateway: node kind -> pods.
    running: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Demand:
    """One gateway as the forecast needs it."""

    name: str  # namespace/name: two gateways may share a name in two namespaces
    size: PodSize
    min_replicas: int
    replicas: int
    max_replicas: int
    # What one ECI pod of it is billed as: the first `k8s.aliyun.com/eci-use-specs` size,
    # else its requests (ECI rounds them up to a size it offers: at least that).
    eci_size: PodSize | None = None

    @property
    def eci_billed(self) -> PodSize:
        return self.eci_size or self.size


# "2-4Gi": vCPUs and GiB, as the eci-use-specs annotation gives a size.
_ECI_SIZE = re.compile(r"^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)Gi$")


def eci_spec_size(annotation: str | None) -> PodSize | None:
    """The size ECI bills a pod at from its `k8s.aliyun.com/eci-use-specs` annotation: the first
    spec listed (a vCPU-memory size, or an ECS instance type in the table), if one is known."""
    first = (annotation or "").split(",")[0].strip()
    matched = _ECI_SIZE.match(first)
    if matched:
        return PodSize(Decimal(matched.group(1)), Decimal(matched.group(2)) * GIB)
    size = instance_type_size(first)
    return PodSize(Decimal(size[0]), Decimal(size[1]) * GIB) if size else None


@dataclass(frozen=True)
class Placement:
    replicas: int
    ecs: int
    eci: int
    pending: int
    reason: str = ""  # why pods are Pending


@dataclass(frozen=True)
class GatewayForecast:
    gateway: str
    size: PodSize
    ecs_room: int | None  # pods of this gateway the ECS nodes hold, the gateway alone; None: unknown
    at_min: Placement
    at_replicas: Placement
    at_max: Placement
    eci_cpu_at_max: Decimal  # cores the ECI pods are billed for at maxReplicas
    eci_memory_at_max: Decimal  # bytes
    eci_from_specs: bool = False  # from eci-use-specs (else the requests: ECI may round up)

    def as_output(self) -> dict[str, Any]:
        def point(p: Placement) -> dict[str, Any]:
            data: dict[str, Any] = {"replicas": p.replicas, "ecs": p.ecs, "eci": p.eci, "pending": p.pending}
            if p.reason:
                data["pendingReason"] = p.reason
            return data

        return {
            "gateway": self.gateway,
            "podRequests": {"cpu": f"{self.size.cpu.normalize():f}", "memory": f"{self.size.memory:f}"},
            "ecsRoom": self.ecs_room,
            "minReplicas": point(self.at_min),
            "replicaCount": point(self.at_replicas),
            "maxReplicas": point(self.at_max),
            "eciAtMax": {
                "vcpu": float(self.eci_cpu_at_max),
                "memoryGiB": float(self.eci_memory_at_max / GIB),
                "from": "eci-use-specs" if self.eci_from_specs else "requests (ECI rounds up: at least)",
            },
        }


@dataclass(frozen=True)
class Forecast:
    policy: Policy
    inventory: Inventory
    exact: bool  # the ECS figures are what the scheduler does, not an upper bound
    gateways: tuple[GatewayForecast, ...]
    warnings: tuple[str, ...]

    @property
    def how_exact(self) -> str:
        if self.exact:
            return "exact"
        if not self.inventory.live:
            return (
                "ECS at most (node capacity, before ACK's reservation and DaemonSets);"
                " ECI and Pending at least"
            )
        if self.policy is Policy.PREFER_ECI:
            return "ECI at most: default scoring may use ECS too"
        return "ECS at most: default scoring may use ECI sooner"

    def as_output(self) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "ecsNodes": self.inventory.source,
            "live": self.inventory.live,
            "ecsFigures": self.how_exact,
            "gateways": [g.as_output() for g in self.gateways],
            "warnings": list(self.warnings),
        }

    def table(self, cluster: str | None = None) -> str:
        """A short table for the preview's output; `cluster` names the cluster, where there are several."""
        where = f" in cluster {cluster}" if cluster else ""
        lines = [
            f"placement forecast{where} ({self.policy.value}; ECS nodes: {self.inventory.source};"
            f" {self.how_exact}):",
            f"  {'gateway':32} {'at':>13} {'replicas':>8} {'ECS':>5} {'ECI':>5} {'Pending':>8}",
        ]
        if self.inventory.nodes is None:
            lines.insert(
                1, "  ECS room unknown: every pod the ECS nodes cannot be shown to hold is counted elsewhere"
            )
        for g in self.gateways:
            for label, p in (
                ("minReplicas", g.at_min),
                ("replicaCount", g.at_replicas),
                ("maxReplicas", g.at_max),
            ):
                counts = f"{p.replicas:>8} {p.ecs:>5} {p.eci:>5} {p.pending:>8}"
                reason = f"  ({p.reason})" if p.reason else ""
                lines.append(f"  {g.gateway:32} {label:>13} {counts}{reason}")
            if g.at_max.eci:
                basis = "eci-use-specs" if g.eci_from_specs else "requests; ECI rounds up to its sizes"
                lines.append(
                    f"  {'':32} ECI at maxReplicas: {g.eci_cpu_at_max.normalize():f} vCPU,"
                    f" {(g.eci_memory_at_max / GIB).quantize(Decimal('0.1')):f} GiB ({basis}),"
                    " billed per second while they run"
                )
        return "\n".join(lines)


def _place(
    policy: Policy, rooms: list[NodeRoom], demand: Demand, count: int, eci: bool
) -> tuple[Placement, list[NodeRoom]]:
    """Place `count` pods of one gateway: ECS first-fit where the policy allows, then ECI or Pending."""
    on_ecs = 0
    if policy in (Policy.PREFER_ECS, Policy.ECS_ONLY):
        for index, room in enumerate(rooms):
            take = min(room.holds(demand.size), count - on_ecs)
            if take:
                rooms[index] = room.minus(demand.size, take)
                on_ecs += take
            if on_ecs == count:
                break
    rest = count - on_ecs
    if rest and eci and policy is not Policy.ECS_ONLY:
        return Placement(count, on_ecs, rest, 0), rooms
    if not rest:
        return Placement(count, on_ecs, 0, 0), rooms
    if not rooms:
        reason = "no ECS node admits the gateway"
    else:
        reasons = sorted({room.short_of(demand.size) for room in rooms})
        reason = f"0/{len(rooms)} ECS nodes available: " + ", ".join(reasons)
    return Placement(count, on_ecs, 0, rest, reason), rooms


def forecast(
    policy: Policy,
    inventory: Inventory,
    demands: Sequence[Demand],
    *,
    eci: bool,
    ecs_first: bool,
    notes: Sequence[str] = (),
) -> Forecast:
    """The forecast of every gateway at min, replicaCount and max. `eci`: virtual nodes exist or
    are installed; `ecs_first`: an ECS-first scheduler (ACK's ResourcePolicy) places the pods."""
    nodes = list(inventory.nodes or ())
    points: dict[str, list[Placement]] = {d.name: [] for d in demands}
    for attribute in ("min_replicas", "replicas", "max_replicas"):
        rooms = list(nodes)
        for demand in demands:
            placement, rooms = _place(policy, rooms, demand, getattr(demand, attribute), eci)
            points[demand.name].append(placement)
    gateways = tuple(
        GatewayForecast(
            d.name,
            d.size,
            sum(n.holds(d.size) for n in nodes) if inventory.nodes is not None else None,
            at_min=points[d.name][0],
            at_replicas=points[d.name][1],
            at_max=points[d.name][2],
            eci_cpu_at_max=d.eci_billed.cpu * points[d.name][2].eci,
            eci_memory_at_max=d.eci_billed.memory * points[d.name][2].eci,
            eci_from_specs=d.eci_size is not None,
        )
        for d in demands
    )
    chooses = policy in (Policy.PREFER_ECS, Policy.PREFER_ECI)
    exact = inventory.live and (ecs_first or not chooses)
    warnings = _warnings(policy, inventory, gateways) + tuple(notes)
    return Forecast(policy, inventory, exact, gateways, warnings)


def _warnings(policy: Policy, inventory: Inventory, gateways: Iterable[GatewayForecast]) -> tuple[str, ...]:
    warnings = []
    uses_ecs = policy in (Policy.PREFER_ECS, Policy.ECS_ONLY)
    if uses_ecs and inventory.nodes is not None and not inventory.nodes:
        warnings.append(f"no ECS node admits the gateway ({inventory.source})")
    for g in gateways:
        top = g.at_max
        if policy is Policy.ECS_ONLY and top.pending:
            warnings.append(
                f"{g.gateway}: ecs-only leaves {top.pending} of {top.replicas} pods Pending at maxReplicas"
                f" ({top.reason})"
            )
        if policy is Policy.PREFER_ECS and top.eci * 2 > top.replicas:
            warnings.append(
                f"{g.gateway}: prefer-ecs sends {top.eci} of {top.replicas} pods to ECI at maxReplicas"
                f" ({g.eci_cpu_at_max.normalize():f} vCPU, billed per second while they run)"
            )
        running = inventory.running.get(g.gateway, {})
        moved = running.get("ecs", 0) if policy is Policy.ECI_ONLY else 0
        moved += running.get("eci", 0) if policy is Policy.ECS_ONLY else 0
        moved += running.get("other", 0)
        if moved:
            warnings.append(
                f"{g.gateway}: {moved} serving pod(s) run where {policy.value} does not put them"
                f" ({dict(running)}); the mesh's rollout moves them"
            )
    return tuple(warnings)


# vCPUs of each instance size, and GiB of memory per vCPU of each family, as
# Alibaba Cloud's "Instance families" page of the ECS documentation lists
# them (g: general purpose 1:4, c: compute optimised 1:2, r: memory optimised
# 1:8). Capacity, before ACK's per-node reservation ("Resource reservation
# policy"), so figures from this table are upper bounds.
SIZE_VCPUS = {
    "large": 2,
    "xlarge": 4,
    "2xlarge": 8,
    "3xlarge": 12,
    "4xlarge": 16,
    "6xlarge": 24,
    "8xlarge": 32,
}
FAMILY_GIB_PER_VCPU = {"g6": 4, "g7": 4, "g8i": 4, "c6": 2, "c7": 2, "c8i": 2, "r6": 8, "r7": 8, "r8i": 8}
# The pods a node takes when the cluster does not say (Kubernetes' default).
DEFAULT_MAX_PODS = 110


def instance_type_size(instance_type: str) -> tuple[int, int] | None:
    """(vCPUs, GiB) of an ECS instance type in the table, e.g. ecs.g7.xlarge -> (4, 16)."""
    parts = instance_type.split(".")
    if (
        len(parts) != 3
        or parts[0] != "ecs"
        or parts[1] not in FAMILY_GIB_PER_VCPU
        or parts[2] not in SIZE_VCPUS
    ):
        return None
    vcpus = SIZE_VCPUS[parts[2]]
    return vcpus, vcpus * FAMILY_GIB_PER_VCPU[parts[1]]


def declared_inventory(instance_type: str | None, names: Sequence[str], why_count: str = "") -> Inventory:
    """ECS nodes from an instance type and node names, when the cluster cannot be read."""
    if instance_type is None:
        return Inventory(None, "unknown: no clusterKubeconfig to read them, and no instance type")
    size = instance_type_size(instance_type)
    if size is None:
        return Inventory(None, f"unknown: {instance_type} is not in the instance type table")
    vcpus, gib = size
    nodes = tuple(NodeRoom(n, Decimal(vcpus), Decimal(gib) * GIB, DEFAULT_MAX_PODS) for n in names)
    return Inventory(
        nodes, f"{len(nodes)} x {instance_type}{why_count} ({vcpus} vCPU, {gib} GiB each, capacity)"
    )
