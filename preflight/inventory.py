"""The gateway's ECS nodes as the cluster has them, for the placement forecast.

Read once per preview, beside the preflight: the nodes in one list (the
preflight's own, when it made one), then the pods on each of the gateway's
nodes, and the gateway's own pods. A node's room is its allocatable CPU,
memory and pods less what the pods running there request, as the scheduler
counts it; the gateway's own pods are left out of that, since they are what
the forecast places.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any

import kubernetes

from components.forecast import Inventory, NodeRoom, amounts, gateway_key
from components.gateway import GATEWAY_POD_LABEL, Gateway
from components.node_pool import EcsCapacity
from components.scheduling import VIRTUAL_NODE_LABELS, Taint
from node_marks_plugin.marks import Owner, owned
from preflight.checks import NodeReads, carries, get
from stack_config.syntax import parse_quantity

Node = Mapping[str, Any]
# The forecast only advises: a slow API server gets a few seconds per read, then
# the preview goes on with the declared nodes.
READ_TIMEOUT = (5, 15)
Pod = Mapping[str, Any]
FINISHED = ("Succeeded", "Failed")


# Resources a pod may also set at pod level (`spec.resources`, PodLevelResources, on by default
# since Kubernetes 1.34): where it does, that amount is the pod's request, not its containers' sum.
POD_LEVEL_RESOURCES = ("cpu", "memory")


def pod_requests(pod: Pod) -> dict[str, Decimal]:
    """Every resource a pod requests, as kube-scheduler's fit check counts it: its containers
    and its sidecars (init containers that keep running), or the largest init container with
    the sidecars started before it if that is more, in place of that a pod-level request where
    one is set, plus the pod's overhead."""
    spec = pod.get("spec") or {}

    def of(container: Mapping[str, Any]) -> dict[str, Decimal]:
        requests = (container.get("resources") or {}).get("requests") or {}
        return {name: parse_quantity(str(amount)) for name, amount in requests.items()}

    inits = [(init.get("restartPolicy") == "Always", of(init)) for init in spec.get("initContainers") or []]
    containers = [of(c) for c in spec.get("containers") or []]
    names = {name for _, r in inits for name in r} | {name for r in containers for name in r}
    pod_level = of(spec)
    overhead = {name: parse_quantity(str(a)) for name, a in (spec.get("overhead") or {}).items()}
    total: dict[str, Decimal] = {}
    for name in names | set(pod_level) | set(overhead):
        sidecars = Decimal(0)
        init_peak = Decimal(0)
        for restarts, requests in inits:
            if restarts:
                sidecars += requests.get(name, Decimal(0))
            else:
                init_peak = max(init_peak, sidecars + requests.get(name, Decimal(0)))
        main = sum((r.get(name, Decimal(0)) for r in containers), Decimal(0)) + sidecars
        amount = max(main, init_peak)
        if name in POD_LEVEL_RESOURCES and name in pod_level:
            amount = pod_level[name]
        total[name] = amount + overhead.get(name, Decimal(0))
    return total


def _gateway_of(pod: Pod) -> str:
    """The gateway (`namespace/name`) a pod would be one of, by its namespace and label."""
    metadata = pod.get("metadata") or {}
    return gateway_key(
        metadata.get("namespace", ""), (metadata.get("labels") or {}).get(GATEWAY_POD_LABEL, "")
    )


def admits(node: Node, tolerations: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the scheduler may put a gateway pod here: not cordoned, and every taint that
    keeps pods off (a NotReady node's too) is one the gateway's tolerations match."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    return all(
        taint.get("effect") == "PreferNoSchedule"
        or Taint(taint.get("key", ""), taint.get("value", ""), taint.get("effect", "")).tolerated_by(
            tolerations
        )
        for taint in spec.get("taints") or []
    )


def _room(node: Node, pods: Iterable[Pod]) -> NodeRoom:
    allocatable = {
        name: parse_quantity(str(amount))
        for name, amount in ((node.get("status") or {}).get("allocatable") or {}).items()
    }
    left = {"cpu": Decimal(0), "memory": Decimal(0), **allocatable}
    slots = int(left.pop("pods", Decimal(110)))
    for pod in pods:
        for name, amount in pod_requests(pod).items():
            left[name] = left.get(name, Decimal(0)) - amount
        slots -= 1
    cpu, memory = left.pop("cpu"), left.pop("memory")
    return NodeRoom(node["metadata"]["name"], cpu, memory, slots, amounts(left))


def node_rooms(
    client: kubernetes.client.ApiClient, nodes: Sequence[Node], placed: Callable[[Pod], bool]
) -> tuple[NodeRoom, ...]:
    """Each node's room now: allocatable less what its running pods request, leaving out the
    pods `placed` says the forecast places itself. The pods are read per node, in parallel."""

    def pods_on(node: Node) -> list[Pod]:
        # resourceVersion=0: served from the API server's cache, not read from etcd.
        path = f"/api/v1/pods?resourceVersion=0&fieldSelector=spec.nodeName%3D{node['metadata']['name']}"
        return list(get(client, path, READ_TIMEOUT).get("items") or [])

    def occupying(pod: Pod) -> bool:
        return (pod.get("status") or {}).get("phase") not in FINISHED and not placed(pod)

    with ThreadPoolExecutor(max_workers=8) as pool:
        on_nodes = list(pool.map(pods_on, nodes))
    return tuple(
        _room(node, [p for p in pods if occupying(p)]) for node, pods in zip(nodes, on_nodes, strict=True)
    )


def _age(pod: Pod, now: float) -> float | None:
    """Seconds since the pod started (else since it was made), if the API says."""
    status, metadata = pod.get("status") or {}, pod.get("metadata") or {}
    stamp = status.get("startTime") or metadata.get("creationTimestamp")
    if not stamp:
        return None
    try:
        started = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return max(0.0, now - started)


def read_inventory(
    client: kubernetes.client.ApiClient,
    ecs: EcsCapacity,
    gateways: Sequence[Gateway],
    reads: NodeReads | None = None,
    owner: Owner | None = None,
) -> Inventory:
    """The gateway's ECS nodes with their room now, and where its pods run now. `reads`: the
    preflight's node reads, shared; `owner`: the stack whose record of its marks nodes carry."""
    reads = reads or NodeReads(client)
    # The nodes that matter, by selector and by name: those with the gateway's labels (an
    # adopted pool's by its id), the named ones, and the virtual nodes.
    found: dict[str, Node] = {}
    for candidate in [
        *reads.selected(ecs.labels, READ_TIMEOUT),
        *(reads.selected(ecs.pool_nodes, READ_TIMEOUT) if ecs.node_pool_id is not None else []),
        *(reads.named(ecs.nodes, READ_TIMEOUT).values() if ecs.mode == "existingNodes" else []),
        *reads.selected(VIRTUAL_NODE_LABELS, READ_TIMEOUT),
    ]:
        found.setdefault(candidate["metadata"]["name"], candidate)
    listing = list(found.values())
    notes: list[str] = []
    # The rules admit every node that carries the labels; with existingNodes, the named
    # nodes get them in this `up` too.
    group = [n for n in listing if carries(n, ecs.labels)] if ecs.labels else []
    if ecs.node_pool_id is not None:
        # An adopted pool's nodes get the labels in this `up`.
        group += [n for n in listing if carries(n, ecs.pool_nodes) and n not in group]
    if ecs.mode == "existingNodes":
        named = set(ecs.nodes)
        unlisted = [n for n in group if n["metadata"]["name"] not in named]
        # The stack's own labels on a node that left the list: this `up` takes them off.
        leaving = [n for n in unlisted if owner and owned(n, owner).labels == dict(ecs.labels)]
        if leaving:
            notes.append(
                f"node(s) {', '.join(sorted(n['metadata']['name'] for n in leaving))} left"
                " ecsCapacity.nodes: this `up` takes the stack's labels off them, so they are not counted"
            )
            group = [n for n in group if n not in leaving]
        by_hand = sorted(n["metadata"]["name"] for n in unlisted if n not in leaving)
        if by_hand:
            notes.append(
                f"node(s) {', '.join(by_hand)} carry the gateway's labels but are not in"
                " ecsCapacity.nodes: the rules admit them, so they are counted"
            )
        group += [n for n in listing if n["metadata"]["name"] in named and not carries(n, ecs.labels)]
    # The gateway's tolerations for its ECS nodes: one for each of the stack's taints.
    usable = [n for n in group if admits(n, [t.as_toleration() for t in ecs.taints])]

    def gateway_pods(gateway: Gateway) -> list[Pod]:
        path = (
            f"/api/v1/namespaces/{gateway.namespace}/pods?resourceVersion=0"
            f"&labelSelector={GATEWAY_POD_LABEL}%3D{gateway.name}"
        )
        return list(get(client, path, READ_TIMEOUT).get("items") or [])

    ours = {gateway_key(g.namespace, g.name) for g in gateways}
    rooms = node_rooms(client, usable, lambda pod: _gateway_of(pod) in ours)
    with ThreadPoolExecutor(max_workers=8) as pool:
        own = list(pool.map(gateway_pods, gateways))
    kinds = {n["metadata"]["name"]: "ecs" for n in group}
    for n in listing:
        if carries(n, VIRTUAL_NODE_LABELS):
            kinds[n["metadata"]["name"]] = "eci"
    usable_names = {n["metadata"]["name"] for n in usable}
    running: dict[str, dict[str, int]] = {}
    own_on_nodes: dict[str, dict[str, int]] = {}
    eci_ages: dict[str, list[float | None]] = {}
    now = time.time()
    for gateway, pods in zip(gateways, own, strict=True):
        key = gateway_key(gateway.namespace, gateway.name)
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if not node or (pod.get("status") or {}).get("phase") in FINISHED:
                continue
            kind = kinds.get(node, "other")
            running.setdefault(key, {}).setdefault(kind, 0)
            running[key][kind] += 1
            if node in usable_names:
                own_on_nodes.setdefault(key, {}).setdefault(node, 0)
                own_on_nodes[key][node] += 1
            if kind == "eci":
                eci_ages.setdefault(key, []).append(_age(pod, now))
    left_out = len(group) - len(usable)
    source = f"{len(rooms)} read from the cluster (allocatable less what runs there)" + (
        f"; {left_out} cordoned or tainted against the gateway left out" if left_out else ""
    )
    return Inventory(
        rooms,
        source,
        live=True,
        running=running,
        own_on_nodes=own_on_nodes,
        eci_ages={key: tuple(ages) for key, ages in eci_ages.items()},
        notes=tuple(notes),
    )
