"""The gateway's ECS nodes as the cluster has them, for the placement forecast.

Read once per preview, beside the preflight: the nodes in one list (the
preflight's own, when it made one), then the pods on each of the gateway's
nodes, and the gateway's own pods. A node's room is its allocatable CPU,
memory and pods less what the pods running there request, as the scheduler
counts it; the gateway's own pods are left out of that, since they are what
the forecast places.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import kubernetes

from components.forecast import Inventory, NodeRoom, gateway_key
from components.gateway import GATEWAY_POD_LABEL, Gateway
from components.node_pool import EcsCapacity
from components.scheduling import VIRTUAL_NODE_LABELS, Taint
from preflight.checks import carries, get
from stack_config.syntax import parse_quantity

Node = Mapping[str, Any]
# The forecast only advises: a slow API server gets a few seconds per read, then
# the preview goes on with the declared nodes.
READ_TIMEOUT = (5, 15)
Pod = Mapping[str, Any]
FINISHED = ("Succeeded", "Failed")


def _requests(pod: Pod) -> tuple[Decimal, Decimal]:
    """CPU and memory a pod requests, as the scheduler counts them: its containers and its
    sidecars (init containers that keep running), or the largest init container with the
    sidecars started before it if that is more, plus the pod's overhead."""

    def amount(container: Mapping[str, Any], resource: str) -> Decimal:
        requests = (container.get("resources") or {}).get("requests") or {}
        return parse_quantity(str(requests.get(resource, "0")))

    spec = pod.get("spec") or {}
    result = []
    for resource in ("cpu", "memory"):
        sidecars = Decimal(0)
        init_peak = Decimal(0)
        for init in spec.get("initContainers") or []:
            if init.get("restartPolicy") == "Always":
                sidecars += amount(init, resource)
            else:
                init_peak = max(init_peak, sidecars + amount(init, resource))
        main = sum((amount(c, resource) for c in spec.get("containers") or []), Decimal(0)) + sidecars
        overhead = parse_quantity(str((spec.get("overhead") or {}).get(resource, "0")))
        result.append(max(main, init_peak) + overhead)
    return result[0], result[1]


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
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    cpu = parse_quantity(str(allocatable.get("cpu", "0")))
    memory = parse_quantity(str(allocatable.get("memory", "0")))
    slots = int(parse_quantity(str(allocatable.get("pods", "110"))))
    for pod in pods:
        pod_cpu, pod_memory = _requests(pod)
        cpu, memory, slots = cpu - pod_cpu, memory - pod_memory, slots - 1
    return NodeRoom(node["metadata"]["name"], cpu, memory, slots)


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


def read_inventory(
    client: kubernetes.client.ApiClient,
    ecs: EcsCapacity,
    gateways: Sequence[Gateway],
    nodes: Sequence[Node] | None = None,
) -> Inventory:
    """The gateway's ECS nodes with their room now, and where its pods run now."""
    listing = (
        list(nodes)
        if nodes is not None
        else get(client, "/api/v1/nodes?resourceVersion=0", READ_TIMEOUT).get("items") or []
    )
    if ecs.mode == "existingNodes":
        named = set(ecs.nodes)
        group = [n for n in listing if n["metadata"]["name"] in named]
    else:
        group = [n for n in listing if carries(n, ecs.labels)]
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
    running: dict[str, dict[str, int]] = {}
    for gateway, pods in zip(gateways, own, strict=True):
        key = gateway_key(gateway.namespace, gateway.name)
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node and (pod.get("status") or {}).get("phase") not in FINISHED:
                kind = kinds.get(node, "other")
                running.setdefault(key, {}).setdefault(kind, 0)
                running[key][kind] += 1
    left_out = len(group) - len(usable)
    source = f"{len(rooms)} read from the cluster (allocatable less what runs there)" + (
        f"; {left_out} cordoned or tainted against the gateway left out" if left_out else ""
    )
    return Inventory(rooms, source, live=True, running=running)
