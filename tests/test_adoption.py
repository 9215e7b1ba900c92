"""Adopting a gateway made before the stack, on the local control plane under the real engine.

The IstioGateway is made first by another field manager (as ASM's console
does), with replicas, ports, Service annotations, pod labels, resources and an
affinity of its own; the ASM stand-in deploys it and keeps its Service, with a
load balancer address. Without `adopt` the stack refuses before anything
changes; with it, `up` keeps the object, its Service and every field it does
not declare, evicts no pod, and `destroy` leaves the gateway serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asm_standin
import kubernetes
import pytest
from control_plane import ECS_FIRST_PROFILE, ControlPlane, PodWatch, running_control_plane
from engine_project import EngineProject
from node_inventory import NodeSpec, ack_virtual_node, create_nodes
from pulumi import automation as auto

from components.gateway import GATEWAY_POD_LABEL

pytestmark = [pytest.mark.cluster, pytest.mark.engine]

NAMESPACE = "istio-system"
GATEWAY = "console-gateway"
CONSOLE = "asm-console"  # the field manager that made it
POOL = {"pool.example.com/gateway": "true"}
DEDICATED = {"key": "pool.example.com/dedicated", "value": "gateway", "effect": "NoSchedule"}
ECS_NODES = ["ecs-a", "ecs-b"]
INVENTORY = [
    NodeSpec("ecs-a", cpu="4", memory="16Gi"),
    NodeSpec("ecs-b", cpu="4", memory="16Gi"),
    NodeSpec("general-0", cpu="8", memory="32Gi"),
    ack_virtual_node("virtual-kubelet-cn-hangzhou-k"),
]
CONSOLE_SPEC: dict[str, Any] = {
    "clusterIds": ["c-local"],
    "gatewayType": "ingress",
    "replicaCount": 3,
    "autoscaleEnabled": False,
    "ports": [
        {"name": "http", "port": 80, "targetPort": 80, "protocol": "HTTP"},
        {"name": "https", "port": 443, "targetPort": 443, "protocol": "HTTPS"},
        {"name": "mysql", "port": 3306, "targetPort": 3306, "protocol": "TCP"},
    ],
    "serviceType": "LoadBalancer",
    "serviceAnnotations": {"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec": "slb.s2.small"},
    "podLabels": {"team.example.com/owner": "edge"},
    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    "affinity": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "preference": {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["general-0"]}
                        ]
                    },
                }
            ]
        }
    },
}


@dataclass
class Live:
    plane: ControlPlane
    api: kubernetes.client.ApiClient
    project: EngineProject
    stack: auto.Stack
    watch: PodWatch

    def gateway(self) -> dict[str, Any]:
        return asm_standin.read_gateway(self.api, NAMESPACE, GATEWAY)

    def service(self) -> Any:
        return kubernetes.client.CoreV1Api(self.api).read_namespaced_service(GATEWAY, NAMESPACE)

    def serving(self) -> list[Any]:
        pods = kubernetes.client.CoreV1Api(self.api).list_namespaced_pod(
            NAMESPACE, label_selector=f"app={GATEWAY}"
        )
        return [
            p
            for p in pods.items
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]

    def wait(self, check: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.25)


def adopting(adopt: bool, name: str = GATEWAY) -> Callable[[dict[str, Any]], None]:
    def point_at_cluster(config: dict[str, Any]) -> None:
        config.pop("renderYamlTo", None)
        config["placementPolicy"] = "prefer-ecs"
        config["rolloutTimeoutSeconds"] = 120
        config["ecsCapacity"] = {
            "mode": "existingNodes",
            "nodes": ECS_NODES,
            "labels": POOL,
            "taints": [DEDICATED],
        }
        config["virtualNodes"] = {"mode": "existing"}
        config["rebalancer"] = {"enabled": False}
        config["gateways"] = [{"name": name, **({"adopt": True} if adopt else {})}]

    return point_at_cluster


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("adoption")
    with running_control_plane(tmp) as (plane, api):
        plane.start_scheduler(ECS_FIRST_PROFILE)
        create_nodes(api, INVENTORY)
        asm_standin.install(api, NAMESPACE)
        kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
            asm_standin.GROUP,
            asm_standin.VERSION,
            NAMESPACE,
            asm_standin.PLURAL,
            {
                "apiVersion": f"{asm_standin.GROUP}/{asm_standin.VERSION}",
                "kind": "IstioGateway",
                "metadata": {"name": GATEWAY},
                "spec": CONSOLE_SPEC,
            },
            field_manager=CONSOLE,
        )
        mesh = asm_standin.MeshController(api, NAMESPACE, delay=0.5).start()
        watch = PodWatch(plane, NAMESPACE, f"app={GATEWAY}")
        try:
            project = EngineProject(tmp)
            stack = project.stack_on_cluster("local", plane.kubeconfig, adopting(adopt=False))
            state = Live(plane, api, project, stack, watch)
            state.wait(lambda: len(state.serving()) == 3, 60, "the console's gateway serving")
            state.wait(lambda: bool(state.service().status.load_balancer.ingress), 30, "its address")
            yield state
        finally:
            watch.stop()
            mesh.stop()


def test_an_existing_gateway_is_refused_without_adopt_before_anything_changes(live: Live) -> None:
    before = live.gateway()
    with pytest.raises(auto.errors.CommandError) as refused:
        live.stack.preview()
    message = str(refused.value)
    print("\n" + message[-800:])
    assert f"IstioGateway {NAMESPACE}/{GATEWAY} exists already (written by {CONSOLE})" in message
    assert "gateways[0].adopt: true" in message
    with pytest.raises(auto.errors.CommandError):
        live.stack.up()
    assert live.gateway()["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    node = kubernetes.client.CoreV1Api(live.api).read_node("ecs-a")
    assert not set(POOL) & set(node.metadata.labels or {})


def test_up_adopts_it_keeping_the_object_its_service_and_every_field_it_does_not_declare(live: Live) -> None:
    before, service = live.gateway(), live.service()
    live.project.edit_config("local", adopting(adopt=True))
    preview = live.stack.preview()
    print("\n" + preview.stdout[-1500:])
    assert f"takes over spec.affinity.nodeAffinity from {CONSOLE}" in preview.stdout
    live.stack.up()
    after = live.gateway()
    spec = after["spec"]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    for field in (
        "replicaCount",
        "autoscaleEnabled",
        "ports",
        "serviceAnnotations",
        "resources",
        "clusterIds",
    ):
        assert spec[field] == CONSOLE_SPEC[field], field
    assert spec["podLabels"] == {**CONSOLE_SPEC["podLabels"], GATEWAY_POD_LABEL: GATEWAY}
    preferred = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        e["key"] == next(iter(POOL)) for term in preferred for e in term["preference"]["matchExpressions"]
    ), preferred
    assert {t["key"] for t in spec["tolerations"]} >= {DEDICATED["key"]}
    # The Service ASM keeps for it: the same object, ports and annotations, address.
    now = live.service()
    assert now.metadata.uid == service.metadata.uid
    assert [(p.name, p.port) for p in now.spec.ports] == [
        (p["name"], p["port"]) for p in CONSOLE_SPEC["ports"]
    ]
    assert now.metadata.annotations == CONSOLE_SPEC["serviceAnnotations"]
    assert now.status.load_balancer.ingress[0].ip == asm_standin.LOAD_BALANCER_IP
    # Rolled onto the pool, one at a time, no pod evicted; a second `up` changes nothing.
    live.wait(
        lambda: {p.spec.node_name for p in live.serving()} <= set(ECS_NODES) and len(live.serving()) == 3,
        90,
        "the gateway on its ECS nodes",
    )
    assert live.watch.evicted == {}
    again = live.stack.preview(expect_no_changes=True)
    assert "error" not in again.stderr.lower()


def test_destroy_releases_the_stacks_fields_and_leaves_the_gateway_serving(live: Live) -> None:
    uid, service_uid = live.gateway()["metadata"]["uid"], live.service().metadata.uid
    live.stack.destroy()
    after = live.gateway()
    spec = after["spec"]
    assert after["metadata"]["uid"] == uid and live.service().metadata.uid == service_uid
    for field in ("replicaCount", "ports", "serviceAnnotations", "resources"):
        assert spec[field] == CONSOLE_SPEC[field], field
    # What the stack set is released: its pod label and the placement it took over.
    assert spec.get("podLabels") == CONSOLE_SPEC["podLabels"]
    # (server-side apply may leave the emptied `affinity` object behind: nothing in it)
    assert not (spec.get("affinity") or {}).get("nodeAffinity") and not spec.get("tolerations"), spec
    live.wait(lambda: len(live.serving()) == 3, 60, "the gateway serving after destroy")
    assert live.watch.evicted == {}


def test_a_gateway_the_stack_made_is_never_adopted_which_would_delete_it(live: Live) -> None:
    """Its IstioGateway resource would give way to the patch, and deleting it deletes the gateway."""
    live.project.edit_config("local", adopting(adopt=False, name="stack-gateway"))
    live.stack.up()
    made = asm_standin.read_gateway(live.api, NAMESPACE, "stack-gateway")
    live.project.edit_config("local", adopting(adopt=True, name="stack-gateway"))
    with pytest.raises(auto.errors.CommandError) as refused:
        live.stack.preview()
    assert "a Pulumi stack made IstioGateway istio-system/stack-gateway" in str(refused.value)
    with pytest.raises(auto.errors.CommandError):
        live.stack.up()
    still = asm_standin.read_gateway(live.api, NAMESPACE, "stack-gateway")
    assert still["metadata"]["uid"] == made["metadata"]["uid"]
    live.project.edit_config("local", adopting(adopt=False, name="stack-gateway"))
    live.stack.destroy()
