"""Node objects as a kubelet-less cluster needs them: capacity, allocatable, Ready.

Sizes are real ECS sizes (allocatable after ACK's system reservations, roughly);
the virtual node advertises what ACK's virtual-kubelet advertises: a label and
taint it cannot change, and a very large capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import kubernetes

from components.forecast import NodeRoom, PodSize
from components.scheduling import VIRTUAL_NODE_LABELS, VIRTUAL_NODE_TAINT
from stack_config import parse_quantity


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str
    memory: str
    pods: str = "110"
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **self.labels},
            },
            "spec": {"taints": list(self.taints)},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }


def ecs_g7_xlarge(name: str, **extra: Any) -> NodeSpec:
    """ecs.g7.xlarge: 4 vCPU, 16 GiB; allocatable after reservations."""
    return NodeSpec(name, cpu="3900m", memory="14Gi", **extra)


def ecs_g7_2xlarge(name: str, **extra: Any) -> NodeSpec:
    """ecs.g7.2xlarge: 8 vCPU, 32 GiB."""
    return NodeSpec(name, cpu="7800m", memory="29Gi", **extra)


def ack_virtual_node(name: str) -> NodeSpec:
    taint = {
        "key": VIRTUAL_NODE_TAINT.key,
        "value": VIRTUAL_NODE_TAINT.value,
        "effect": VIRTUAL_NODE_TAINT.effect,
    }
    return NodeSpec(
        name,
        cpu="20000",
        memory="80Ti",
        pods="20000",
        labels={**VIRTUAL_NODE_LABELS, "kubernetes.io/role": "agent"},
        taints=(taint,),
    )


def create_nodes(api: kubernetes.client.ApiClient, nodes: list[NodeSpec]) -> None:
    core = kubernetes.client.CoreV1Api(api)
    for node in nodes:
        body = node.body()
        core.create_node(body)
        # Status is a subresource: set it the way a kubelet reports it.
        core.patch_node_status(node.name, {"status": body["status"]})
        # Admission taints every new node not-ready; the node lifecycle
        # controller lifts that once the node is Ready. It does not run here.
        core.patch_node(node.name, {"spec": {"taints": body["spec"]["taints"] or None}})


def pods_that_fit(nodes: list[NodeSpec], requests: dict[str, str]) -> int:
    """How many pods with `requests` the nodes hold, counted as the forecast (and the scheduler's
    fit check) counts them."""
    size = PodSize(parse_quantity(requests.get("cpu", "0")), parse_quantity(requests.get("memory", "0")))
    rooms = [NodeRoom(n.name, parse_quantity(n.cpu), parse_quantity(n.memory), int(n.pods)) for n in nodes]
    return sum(room.holds(size) for room in rooms)
