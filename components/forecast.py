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


Amounts = tuple[tuple[str, Decimal], ...]  # resource name -> amount, sorted: hashable


def amounts(mapping: Mapping[str, Decimal]) -> Amounts:
    """Other resources as PodSize and NodeRoom keep them (zeros dropped)."""
    return tuple(sorted((name, amount) for name, amount in mapping.items() if amount))


@dataclass(frozen=True)
class PodSize:
    """What one gateway pod requests: CPU in cores, memory in bytes, and every other resource
    it asks for (`ephemeral-storage`, extended resources), which the scheduler checks too."""

    cpu: Decimal
    memory: Decimal
    other: Amounts = ()


@dataclass(frozen=True)
class NodeRoom:
    """What one ECS node has left for gateway pods: every resource kube-scheduler's fit check
    (NodeResourcesFit) compares, and the pod count."""

    name: str
    cpu: Decimal
    memory: Decimal
    pods: int
    other: Amounts = ()  # what is left of other allocatable resources (ephemeral-storage, ...)

    def _left(self, resource: str) -> Decimal:
        return dict(self.other).get(resource, Decimal(0))

    def holds(self, size: PodSize) -> int:
        """How many pods of `size` fit here, as the scheduler's fit check counts: a resource
        the pod requests must be left on the node (one it does not request is not checked)."""
        limits = [self.pods]
        for left, wanted in ((self.cpu, size.cpu), (self.memory, size.memory)):
            if wanted > 0:
                limits.append(int(left // wanted))
        limits += [int(self._left(name) // wanted) for name, wanted in size.other if wanted > 0]
        return max(0, min(limits))

    def short_of(self, size: PodSize) -> str:
        """What keeps one more pod off, in the scheduler's words."""
        if self.pods < 1:
            return "Too many pods"
        if self.cpu < size.cpu:
            return "Insufficient cpu"
        if self.memory < size.memory:
            return "Insufficient memory"
        lacking = [name for name, wanted in size.other if self._left(name) < wanted]
        return f"Insufficient {lacking[0]}" if lacking else "Insufficient resources"

    def minus(self, size: PodSize, count: int) -> NodeRoom:
        """The room left after `count` pods of `size` (a negative count gives room back)."""
        other = dict(self.other)
        for name, wanted in size.other:
            other[name] = other.get(name, Decimal(0)) - wanted * count
        return replace(self, cpu=self.cpu - size.cpu * count, memory=self.memory - size.memory * count,
                       pods=self.pods - count, other=tuple(sorted(other.items())))  # fmt: skip


@dataclass(frozen=True)
class Inventory:
    """The gateway's ECS nodes as the forecast sees them, and where that came from."""

    nodes: tuple[NodeRoom, ...] | None  # None: not known (no kubeconfig and no instance type)
    source: str  # one line: read from the cluster, or from the instance types' table
    live: bool = False  # allocatable less what runs there (True), or capacity, an upper bound
    # Live only: where the gateway's pods run now, by gateway: node kind -> pods.
    running: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Live only, by gateway: its pods on each ECS node of `nodes` (node name -> pods), which
    # `nodes` leaves out of what is used there (the forecast places them itself).
    own_on_nodes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Live only, by gateway: how long each of its pods on ECI has run, in seconds (None: unknown).
    eci_ages: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the reading saw that the figures should be read with

    def rooms_now(self, sizes: Mapping[str, PodSize]) -> list[NodeRoom]:
        """The ECS nodes' room with the gateways' own pods counted where they run now."""
        rooms = list(self.nodes or ())
        for gateway, on_nodes in self.own_on_nodes.items():
            size = sizes.get(gateway)
            if size is None:
                continue
            rooms = [room.minus(size, on_nodes.get(room.name, 0)) for room in rooms]
        return rooms


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
    # Its rolling update at replicaCount, as pods: surge above it, unavailable below it (None: unknown).
    strategy: tuple[int, int] | None = None

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
class Drift:
    """Gateway pods on ECI now that the ECS nodes have room for now: billed per second for nothing."""

    movable: int  # pods on ECI that the ECS nodes' room now holds
    on_eci: int  # all its pods on ECI now
    cpu: Decimal  # vCPU those movable pods are billed for
    memory: Decimal  # bytes
    longest: float | None  # seconds the longest-running of them has run on ECI, if known

    def describe(self) -> str:
        since = f" for up to {_duration(self.longest)}" if self.longest is not None else ""
        return (
            f"{self.movable} of its {self.on_eci} pod(s) on ECI could run on ECS now{since}:"
            f" {self.cpu.normalize():f} vCPU, {(self.memory / GIB).quantize(Decimal('0.1')):f} GiB"
            " of ECI billed per second while they stay"
        )


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 2:
        return f"{int(seconds)} s"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


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
    exact: bool = False  # its ECS figures are what the scheduler does (else an upper bound)
    # Live only: where a rollout of replicaCount pods under its strategy ends, from the pods now.
    after_rollout: Placement | None = None
    drift: Drift | None = None  # live only: its pods on ECI that ECS has room for now
    running: Mapping[str, int] = field(default_factory=dict)  # live only: node kind -> its pods now

    def as_output(self) -> dict[str, Any]:
        def point(p: Placement) -> dict[str, Any]:
            data: dict[str, Any] = {"replicas": p.replicas, "ecs": p.ecs, "eci": p.eci, "pending": p.pending}
            if p.reason:
                data["pendingReason"] = p.reason
            return data

        output: dict[str, Any] = {
            "gateway": self.gateway,
            "podRequests": {
                "cpu": f"{self.size.cpu.normalize():f}",
                "memory": f"{self.size.memory:f}",
                **{name: f"{amount.normalize():f}" for name, amount in self.size.other},
            },
            "ecsRoom": self.ecs_room,
            "ecsFigures": "exact" if self.exact else "at most",
            "minReplicas": point(self.at_min),
            "replicaCount": point(self.at_replicas),
            "maxReplicas": point(self.at_max),
            "eciAtMax": {
                "vcpu": float(self.eci_cpu_at_max),
                "memoryGiB": float(self.eci_memory_at_max / GIB),
                "from": "eci-use-specs" if self.eci_from_specs else "requests (ECI rounds up: at least)",
            },
        }
        if self.running:
            output["now"] = dict(self.running)
        if self.after_rollout is not None:
            output["afterRollout"] = point(self.after_rollout)
        if self.drift is not None:
            output["eciWhileEcsHasRoom"] = {
                "pods": self.drift.movable,
                "vcpu": float(self.drift.cpu),
                "memoryGiB": float(self.drift.memory / GIB),
                "longestSeconds": self.drift.longest,
            }
        return output


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
            if g.running:
                now = g.running
                counts = f"{sum(now.values()):>8} {now.get('ecs', 0):>5} {now.get('eci', 0):>5} {'':>8}"
                lines.append(f"  {'':32} {'running now':>13} {counts}")
            if g.after_rollout is not None:
                p = g.after_rollout
                counts = f"{p.replicas:>8} {p.ecs:>5} {p.eci:>5} {p.pending:>8}"
                lines.append(f"  {'':32} {'after rollout':>13} {counts}  (a spec change, from the pods now)")
            if not g.exact and self.exact:
                lines.append(f"  {'':32} ECS figures at most: it shares the ECS nodes with another gateway")
            if g.eci_cpu_at_max or g.eci_memory_at_max:
                basis = "eci-use-specs" if g.eci_from_specs else "requests; ECI rounds up to its sizes"
                # With the others' pods first: more than the counts above, which are its own alone.
                bound = "up to " if self.exact and not g.exact else ""
                lines.append(
                    f"  {'':32} ECI at maxReplicas: {bound}{g.eci_cpu_at_max.normalize():f} vCPU,"
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


def _points(
    policy: Policy, nodes: Sequence[NodeRoom], demands: Sequence[Demand], eci: bool
) -> dict[str, list[Placement]]:
    """Every gateway at min, replicaCount and max, placed in declaration order on shared rooms."""
    points: dict[str, list[Placement]] = {d.name: [] for d in demands}
    for attribute in ("min_replicas", "replicas", "max_replicas"):
        rooms = list(nodes)
        for demand in demands:
            placement, rooms = _place(policy, rooms, demand, getattr(demand, attribute), eci)
            points[demand.name].append(placement)
    return points


def surge_rooms(
    policy: Policy, inventory: Inventory, demands: Sequence[Demand], eci: bool
) -> dict[str, int | None]:
    """Per gateway, the pods of it that the ECS nodes hold beyond every gateway at replicaCount
    (placed from scratch): what a rollout may surge without leaving ECS. Shared in declaration
    order, so that gateways rolled out together never count the same room twice. None: the room
    is not known from the cluster (no live reading)."""
    if not inventory.live or inventory.nodes is None:
        return {d.name: None for d in demands}
    rooms = list(inventory.nodes)
    for demand in demands:
        _, rooms = _place(policy, rooms, demand, demand.replicas, eci)
    surge: dict[str, int | None] = {}
    for demand in demands:
        placement, rooms = _place(Policy.ECS_ONLY, rooms, demand, demand.replicas, eci=False)
        surge[demand.name] = placement.ecs
    return surge


def simulate_rollout(
    policy: Policy,
    rooms_now: Sequence[NodeRoom],
    demand: Demand,
    on_nodes: Mapping[str, int],
    on_eci: int,
    *,
    eci: bool,
) -> Placement:
    """Where a rolling update of `demand.replicas` pods ends, from the pods now (`on_nodes`: its
    pods per ECS node, `on_eci`: on ECI), as a Deployment rolls: new pods up to replicas + surge,
    placed ECS-first on the room left beside the old ones, old pods down while replicas -
    unavailable stay Ready (the ReplicaSet removes those on the node with the most first: the
    virtual node's, after a burst or an earlier rollout). Pods are taken as Ready at once, but
    a removed pod holds its room while it terminates (Envoy drains first): the new pod made in
    the same step does not get it, the next one does. The rebalancer moves the difference."""
    assert demand.strategy is not None
    surge, unavailable = demand.strategy
    size, replicas = demand.size, demand.replicas
    rooms = list(rooms_now)
    old = {name: count for name, count in on_nodes.items() if count}
    old_eci = on_eci
    ecs = eci_count = pending = 0
    reason = ""
    terminating: list[str] = []  # nodes of the pods removed in the step before
    while True:
        old_total = sum(old.values()) + old_eci
        made = ecs + eci_count + pending
        if made >= replicas and not old_total and not pending:
            break
        add = min(replicas + surge - old_total - made, replicas - made)
        if pending:  # new pods that waited get the room that has freed since, first
            placed, rooms = _place(policy, rooms, demand, pending, eci)
            ecs, eci_count, pending = ecs + placed.ecs, eci_count + placed.eci, placed.pending
        if add > 0:
            placed, rooms = _place(policy, rooms, demand, add, eci)
            ecs, eci_count, pending = ecs + placed.ecs, eci_count + placed.eci, pending + placed.pending
            reason = placed.reason or reason
        freed = bool(terminating)
        for node in terminating:
            rooms = [room.minus(size, -1) if room.name == node else room for room in rooms]
        terminating = []
        remove = min(old_total, old_total + ecs + eci_count - (replicas - unavailable))
        for _ in range(max(0, remove)):
            if old_eci >= max(old.values(), default=0):
                old_eci -= 1
                continue
            node = max(old, key=lambda name: old[name])
            old[node] -= 1
            terminating.append(node)
        if add <= 0 and remove <= 0 and not freed:
            reason = f"the rollout waits: {reason or 'no room for a new pod'}"
            break
    # A rollout that waits keeps its old pods where they run; only new pods wait Pending.
    ecs, eci_count = ecs + sum(old.values()), eci_count + old_eci
    return Placement(replicas, ecs, eci_count, pending, reason if pending else "")


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
    are installed; `ecs_first`: an ECS-first scheduler (ACK's ResourcePolicy) places the pods.

    Gateways sharing the ECS nodes are placed in declaration order; where a gateway's figures
    depend on that order (its pods may also come first), its ECS figures are the room it has
    alone, an upper bound, and it is marked so. Live, each gateway also gets where a rollout
    under its strategy ends from the pods now, and its pods on ECI that ECS has room for now.
    """
    nodes = list(inventory.nodes or ())
    shared = _points(policy, nodes, demands, eci)
    alone = {d.name: _points(policy, nodes, [d], eci)[d.name] for d in demands}
    chooses = policy in (Policy.PREFER_ECS, Policy.PREFER_ECI)
    exact = inventory.live and (ecs_first or not chooses)
    sizes = {d.name: d.size for d in demands}
    rooms_now = inventory.rooms_now(sizes)
    drift_rooms = list(rooms_now)  # taken by each gateway's movable pods in turn
    gateways = []
    for d in demands:
        # Placed after all the others (their pods may come first, whatever the declared order).
        last = _points(policy, nodes, [*(o for o in demands if o.name != d.name), d], eci)[d.name]
        own_order = shared[d.name] == alone[d.name] == last
        # Where the order matters: ECS at most what it gets alone, ECI billed at most as last.
        points = shared[d.name] if own_order else alone[d.name]
        eci_at_max = last[2].eci
        running = inventory.running.get(d.name, {})
        after_rollout = None
        if inventory.live and d.strategy is not None and running:
            # A rollout replaces the pods the autoscaler runs now, within its bounds.
            now = min(max(sum(running.values()), d.min_replicas), d.max_replicas)
            after_rollout = simulate_rollout(
                policy,
                rooms_now,
                replace(d, replicas=now),
                inventory.own_on_nodes.get(d.name, {}),
                running.get("eci", 0),
                eci=eci,
            )
        drift = None
        if inventory.live and policy is Policy.PREFER_ECS and running.get("eci", 0):
            placed, drift_rooms = _place(Policy.ECS_ONLY, drift_rooms, d, running["eci"], eci=False)
            if placed.ecs:
                ages = [a for a in inventory.eci_ages.get(d.name, ()) if a is not None]
                drift = Drift(
                    placed.ecs,
                    running["eci"],
                    d.eci_billed.cpu * placed.ecs,
                    d.eci_billed.memory * placed.ecs,
                    max(ages) if ages else None,
                )
        gateways.append(
            GatewayForecast(
                d.name,
                d.size,
                sum(n.holds(d.size) for n in nodes) if inventory.nodes is not None else None,
                at_min=points[0],
                at_replicas=points[1],
                at_max=points[2],
                eci_cpu_at_max=d.eci_billed.cpu * eci_at_max,
                eci_memory_at_max=d.eci_billed.memory * eci_at_max,
                eci_from_specs=d.eci_size is not None,
                exact=exact and own_order,
                after_rollout=after_rollout,
                drift=drift,
                running=dict(running),
            )
        )
    warnings = _warnings(policy, inventory, gateways) + tuple(inventory.notes) + tuple(notes)
    return Forecast(policy, inventory, exact, tuple(gateways), warnings)


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
        if g.drift is not None:
            warnings.append(f"{g.gateway}: {g.drift.describe()}")
        rollout = g.after_rollout
        if rollout is not None and policy is Policy.PREFER_ECS and rollout.ecs < g.at_replicas.ecs:
            warnings.append(
                f"{g.gateway}: a rollout now (any change to its spec) leaves {rollout.ecs} on ECS and"
                f" {rollout.eci} on ECI where {g.at_replicas.ecs} fit on ECS; the rebalancer moves them"
                " back, or set its rollout strategy (see rollingMaxSurge in docs/architecture.md)"
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
