"""Where the gateway pods land, decided by the real kube-scheduler.

A real control plane on loopback (etcd, kube-apiserver, kube-scheduler,
kube-controller-manager); `pulumi up` of the local stack pointed
at it labels and taints the gateway's ECS nodes and applies the IstioGateway;
the stand-in for ASM's controller (tests/asm_standin.py) turns the IstioGateway
into a Deployment; the scheduler's bindings (`spec.nodeName`) are the verdict.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asm_standin
import kubernetes
import pytest
from control_plane import ECS_FIRST_PROFILE, ControlPlane, running_control_plane
from engine_project import EngineProject
from node_inventory import ack_virtual_node, create_nodes, ecs_g7_2xlarge, ecs_g7_xlarge, pods_that_fit
from pulumi import automation as auto

import placement_check
from components.gateway import GATEWAY_POD_LABEL

pytestmark = [pytest.mark.cluster, pytest.mark.engine]

NAMESPACE = "istio-system"
GATEWAY = "ingressgateway"
SELECTOR = f"{GATEWAY_POD_LABEL}={GATEWAY}"
GATEWAY_NODES = ["gateway-ecs-0", "gateway-ecs-1"]
POD_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
INVENTORY = [
    *(ecs_g7_xlarge(name) for name in GATEWAY_NODES),
    ecs_g7_2xlarge("app-ecs-0"),
    ecs_g7_2xlarge("app-ecs-1"),
    ack_virtual_node("virtual-kubelet-cn-hangzhou-k"),
]
# How many gateway pods the gateway's ECS nodes hold (14 here: seven 500m pods
# on each 3900m node), from the inventory rather than typed in.
ECS_ROOM = pods_that_fit([n for n in INVENTORY if n.name in GATEWAY_NODES], POD_RESOURCES["requests"])

warnings.filterwarnings("ignore", message="Unverified HTTPS request")


@dataclass
class Cluster:
    plane: ControlPlane
    api: kubernetes.client.ApiClient
    project: EngineProject
    stack: auto.Stack

    def set_policy(self, policy: str, **overrides: Any) -> None:
        def edit(config: dict[str, Any]) -> None:
            config["placementPolicy"] = policy
            config.update(overrides)

        self.project.edit_config("local", edit)
        self.stack.up()

    def gateways(self) -> list[dict[str, Any]]:
        return list(self.stack.outputs()["gateways"].value)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    with running_control_plane(tmp) as (plane, api):
        create_nodes(api, INVENTORY)
        asm_standin.install(api, NAMESPACE)

        def point_at_cluster(config: dict[str, Any]) -> None:
            config.pop("renderYamlTo")
            config["ecsCapacity"]["nodes"] = GATEWAY_NODES
            config["gateways"][0]["resources"] = POD_RESOURCES
            config["gateways"][0]["maxReplicas"] = 30

        project = EngineProject(tmp)
        stack = project.stack_on_cluster("local", plane.kubeconfig, point_at_cluster)
        stack.up()
        yield Cluster(plane, api, project, stack)


# -- Driving the gateway -----------------------------------------------------------------


def reset(api: kubernetes.client.ApiClient) -> None:
    """Remove the gateway's pods at once: with no kubelet, bound pods never finish terminating.

    Deletes again until nothing is left: a controller may still be acting on
    the objects of the moment before.
    """
    apps = kubernetes.client.AppsV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    deadline = time.monotonic() + 60
    while True:
        deployments = [d.metadata.name for d in apps.list_namespaced_deployment(NAMESPACE).items]
        for name in deployments:
            apps.delete_namespaced_deployment(name, NAMESPACE)
        apps.delete_collection_namespaced_replica_set(NAMESPACE, label_selector=SELECTOR)
        core.delete_collection_namespaced_pod(NAMESPACE, label_selector=SELECTOR, grace_period_seconds=0)
        left = (
            deployments
            + apps.list_namespaced_replica_set(NAMESPACE, label_selector=SELECTOR).items
            + core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
        )
        if not left:
            return
        assert time.monotonic() < deadline, f"gateway objects did not go away: {len(left)} left"
        time.sleep(0.2)


def settle(api: kubernetes.client.ApiClient, replicas: int, timeout: float = 60) -> list[Any]:
    """Wait until every one of `replicas` pods is bound or marked unschedulable."""
    core = kubernetes.client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        pods = [
            p
            for p in core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
            if p.metadata.deletion_timestamp is None
        ]
        decided = [
            p
            for p in pods
            if p.spec.node_name
            or any(
                c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                for c in (p.status.conditions or [])
            )
        ]
        if len(pods) == replicas and len(decided) == replicas:
            return pods
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(decided)} of {replicas} pods decided after {timeout}s")
        time.sleep(0.1)


def where(cluster: Cluster, pods: list[Any]) -> Counter[str]:
    gateway = next(g for g in cluster.gateways() if g["name"] == GATEWAY)
    labels = placement_check.node_labels(cluster.api)
    return Counter(p.kind or "pending" for p in placement_check.placements(gateway, pods, labels))


def burst(cluster: Cluster, steps: list[int]) -> list[Counter[str]]:
    """Scale the gateway step by step, as its HPA would, and record where pods land."""
    reset(cluster.api)
    seen = []
    for replicas in steps:
        asm_standin.reconcile(cluster.api, NAMESPACE, GATEWAY, replicas=replicas)
        seen.append(where(cluster, settle(cluster.api, replicas)))
    return seen


def time_to_bind(cluster: Cluster, replicas: int) -> float:
    """Seconds from an empty gateway to `replicas` pods all bound or refused."""
    reset(cluster.api)
    start = time.perf_counter()
    asm_standin.reconcile(cluster.api, NAMESPACE, GATEWAY, replicas=replicas)
    settle(cluster.api, replicas)
    return time.perf_counter() - start


def print_steps(title: str, steps: list[int], seen: list[Counter[str]]) -> None:
    print(f"\n{title}")
    for replicas, counts in zip(steps, seen, strict=True):
        print(
            f"  {replicas:2d} replicas: ECS {counts['gateway-ecs']:2d}  ECI {counts['virtual']:2d}"
            f"  other {counts['other']:2d}  pending {counts['pending']:2d}"
        )


def ecs_first_fidelity(steps: list[int], seen: list[Counter[str]]) -> float:
    """Of the pods that could have gone to ECS (ECS had room), the fraction that did."""
    could = sum(min(replicas, ECS_ROOM) for replicas in steps)
    did = sum(min(counts["gateway-ecs"], ECS_ROOM) for counts in seen)
    return did / could


STEPS = [2, 6, 10, 14, 18, 22, 26, 30]

# -- The policies ---------------------------------------------------------------------------


def test_the_kubeconfig_never_reaches_state_in_plain_text(cluster: Cluster) -> None:
    # The state file itself, as the file:// backend stores it (export would decrypt).
    backend = Path(cluster.project.env["PULUMI_BACKEND_URL"].removeprefix("file://"))
    state = (backend / ".pulumi/stacks/asm-serverless-gateway/local.json").read_text()
    assert "ciphertext" in state
    assert cluster.plane.token not in state


def test_stack_labels_and_taints_the_gateway_nodes(cluster: Cluster) -> None:
    core = kubernetes.client.CoreV1Api(cluster.api)
    for name in GATEWAY_NODES:
        node = core.read_node(name)
        assert node.metadata.labels["mykey4pod"] == "asmgateway"
        assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [("mykey", "myvalue", "NoSchedule")]
    assert "mykey4pod" not in (core.read_node("app-ecs-0").metadata.labels or {})


def test_prefer_ecs_fills_ecs_then_overflows_to_eci_and_never_elsewhere(cluster: Cluster) -> None:
    cluster.set_policy("prefer-ecs")
    bind_seconds = time_to_bind(cluster, 30)
    seen = burst(cluster, STEPS)
    print_steps("prefer-ecs, default kube-scheduler scoring:", STEPS, seen)
    fidelity = ecs_first_fidelity(STEPS, seen)
    print(f"  ECS-first fidelity: {fidelity:.0%}; 0 -> 30 replicas bound in {bind_seconds:.2f} s")
    for replicas, counts in zip(STEPS, seen, strict=True):
        assert counts["other"] == 0 and counts["pending"] == 0
        assert counts["gateway-ecs"] + counts["virtual"] == replicas
        assert counts["gateway-ecs"] <= ECS_ROOM
    # The default scores (least-allocated, spreading) can pull pods onto the
    # virtual node's vast free capacity while ECS still has room, so the
    # fidelity is reported, not asserted; the ECS-first ordering test below
    # asserts it at 100%.


def test_ecs_only_never_uses_virtual_nodes_and_leaves_the_rest_pending(cluster: Cluster) -> None:
    cluster.set_policy("ecs-only")
    reset(cluster.api)
    asm_standin.reconcile(cluster.api, NAMESPACE, GATEWAY, replicas=30)
    pods = settle(cluster.api, 30)
    counts = where(cluster, pods)
    print(f"\necs-only, 30 replicas: {dict(counts)}")
    assert counts == Counter({"gateway-ecs": min(30, ECS_ROOM), "pending": max(0, 30 - ECS_ROOM)})
    gateway = next(g for g in cluster.gateways() if g["name"] == GATEWAY)
    labels = placement_check.node_labels(cluster.api)
    reasons = {p.pending_reason for p in placement_check.placements(gateway, pods, labels) if p.node is None}
    assert all(r and r.startswith("Unschedulable") and "Insufficient" in r for r in reasons), reasons


def test_eci_only_uses_virtual_nodes_alone(cluster: Cluster) -> None:
    cluster.set_policy("eci-only")
    reset(cluster.api)
    asm_standin.reconcile(cluster.api, NAMESPACE, GATEWAY, replicas=30)
    assert where(cluster, settle(cluster.api, 30)) == Counter({"virtual": 30})


def test_prefer_eci_mirrors_prefer_ecs(cluster: Cluster) -> None:
    cluster.set_policy("prefer-eci")
    seen = burst(cluster, STEPS)
    print_steps("prefer-eci, default kube-scheduler scoring:", STEPS, seen)
    for replicas, counts in zip(STEPS, seen, strict=True):
        assert counts["other"] == 0 and counts["pending"] == 0
        assert counts["gateway-ecs"] + counts["virtual"] == replicas
        # Preferred, not exclusive: the default scores still let some land on ECS.
        assert counts["virtual"] > counts["gateway-ecs"]


def test_a_missing_toleration_keeps_pods_off_the_pool(cluster: Cluster) -> None:
    cluster.set_policy("prefer-ecs")
    reset(cluster.api)
    gateway = asm_standin.read_gateway(cluster.api, NAMESPACE, GATEWAY)
    # What a hand-written gateway spec that forgot the pool's taint would get.
    gateway["spec"]["tolerations"] = [t for t in gateway["spec"]["tolerations"] if t["key"] != "mykey"]
    kubernetes.client.AppsV1Api(cluster.api).create_namespaced_deployment(
        NAMESPACE, asm_standin.gateway_deployment(gateway)
    )
    counts = where(cluster, settle(cluster.api, gateway["spec"]["replicaCount"]))
    assert counts["gateway-ecs"] == 0 and counts["other"] == 0


def test_a_taint_added_by_hand_keeps_pods_off_that_node(cluster: Cluster) -> None:
    cluster.set_policy("prefer-ecs")
    core = kubernetes.client.CoreV1Api(cluster.api)
    node = core.read_node(GATEWAY_NODES[1])
    before = [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.spec.taints]
    # `kubectl taint` behind the stack's back: its rules do not tolerate this.
    surprise = {"key": "maintenance", "value": "true", "effect": "NoSchedule"}
    core.patch_node(GATEWAY_NODES[1], {"spec": {"taints": [*before, surprise]}})
    try:
        reset(cluster.api)
        asm_standin.reconcile(cluster.api, NAMESPACE, GATEWAY, replicas=10)
        pods = settle(cluster.api, 10)
        assert not [p for p in pods if p.spec.node_name == GATEWAY_NODES[1]]
        assert where(cluster, pods)["other"] == 0
    finally:
        core.patch_node(GATEWAY_NODES[1], {"spec": {"taints": before}})


def test_a_taint_added_through_the_stack_is_tolerated_in_the_same_up(cluster: Cluster) -> None:
    def add_taint(config: dict[str, Any]) -> None:
        config["placementPolicy"] = "ecs-only"
        config["ecsCapacity"]["taints"].append(
            {"key": "dedicated", "value": "gateway", "effect": "NoExecute"}
        )

    cluster.project.edit_config("local", add_taint)
    # No mesh controller runs in this module to roll pods onto the new
    # tolerations, and the stack adds a taint only once every gateway pod
    # tolerates it (tests/test_day_two.py proves that on a serving gateway).
    reset(cluster.api)
    cluster.stack.up()
    core = kubernetes.client.CoreV1Api(cluster.api)
    assert {t.key for t in core.read_node(GATEWAY_NODES[0]).spec.taints} == {"mykey", "dedicated"}
    reset(cluster.api)
    asm_standin.reconcile(cluster.api, NAMESPACE, GATEWAY, replicas=4)
    assert where(cluster, settle(cluster.api, 4)) == Counter({"gateway-ecs": 4})


def test_placement_check_command_flags_a_pod_outside_the_rules(cluster: Cluster, tmp_path: Path) -> None:
    cluster.set_policy("ecs-only")
    reset(cluster.api)
    asm_standin.reconcile(cluster.api, NAMESPACE, GATEWAY, replicas=2)
    settle(cluster.api, 2)
    kubeconfig = str(cluster.plane.kubeconfig_path)
    # As a user runs it: the stack's name; the command reads the outputs itself.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PULUMI_BACKEND_URL", cluster.project.env["PULUMI_BACKEND_URL"])
        env.setenv("PULUMI_CONFIG_PASSPHRASE", cluster.project.env["PULUMI_CONFIG_PASSPHRASE"])
        assert placement_check.main(["--stack", "local", "--kubeconfig", kubeconfig]) == 0
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"gateways": cluster.gateways()}))

    # A pod put on another node by hand (bypassing the scheduler) breaks the rules.
    core = kubernetes.client.CoreV1Api(cluster.api)
    stray = asm_standin.gateway_deployment(asm_standin.read_gateway(cluster.api, NAMESPACE, GATEWAY))["spec"][
        "template"
    ]
    stray["metadata"]["name"] = "stray-gateway-pod"
    stray["spec"]["nodeName"] = "app-ecs-0"
    core.create_namespaced_pod(NAMESPACE, {"apiVersion": "v1", "kind": "Pod", **stray})
    assert placement_check.main(["--kubeconfig", kubeconfig, "--outputs", str(outputs)]) == 1
    core.delete_namespaced_pod("stray-gateway-pod", NAMESPACE, grace_period_seconds=0)


def test_resource_policy_applied_and_decisive_affinity_is_strictly_ecs_first(cluster: Cluster) -> None:
    cluster.set_policy("prefer-ecs", ackResourcePolicy=True)
    policy = kubernetes.client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        "scheduling.alibabacloud.com", "v1alpha1", NAMESPACE, "resourcepolicies", GATEWAY
    )
    assert policy["spec"]["units"] == [
        {"resource": "ecs", "nodeSelector": {"mykey4pod": "asmgateway"}},
        {"resource": "eci"},
    ]
    cluster.plane.start_scheduler(ECS_FIRST_PROFILE)
    try:
        bind_seconds = time_to_bind(cluster, 30)
        seen = burst(cluster, STEPS)
    finally:
        cluster.plane.start_scheduler()
    fidelity = ecs_first_fidelity(STEPS, seen)
    print_steps("prefer-ecs, ECS-first ordering (ResourcePolicy's placement):", STEPS, seen)
    print(f"  ECS-first fidelity: {fidelity:.0%}; 0 -> 30 replicas bound in {bind_seconds:.2f} s")
    assert fidelity == 1.0
    for replicas, counts in zip(STEPS, seen, strict=True):
        assert counts["gateway-ecs"] == min(replicas, ECS_ROOM)
        assert counts["virtual"] == replicas - min(replicas, ECS_ROOM)


def scale_in_after_burst(cluster: Cluster) -> tuple[Counter[str], Counter[str]]:
    """Burst to 30 replicas, then scale in to the ECS room, as the HPA would after a peak.

    Which pods go is the ReplicaSet controller's choice (pending first, then
    pods on nodes that hold more of its replicas, then the newest): the
    scheduler plays no part, so its profile matters only for where the burst
    landed.
    """
    (peak,) = burst(cluster, [30])
    asm_standin.reconcile(cluster.api, NAMESPACE, GATEWAY, replicas=ECS_ROOM)
    return peak, where(cluster, settle(cluster.api, ECS_ROOM))


def test_scale_in_after_a_burst_reports_where_the_pods_stay(cluster: Cluster) -> None:
    cluster.set_policy("prefer-ecs")
    results = {"default scoring": scale_in_after_burst(cluster)}
    cluster.plane.start_scheduler(ECS_FIRST_PROFILE)
    try:
        results["ECS-first ordering"] = scale_in_after_burst(cluster)
    finally:
        cluster.plane.start_scheduler()
    print(f"\nscale-in, prefer-ecs, 30 -> {ECS_ROOM} replicas (the ECS room):")
    for title, (peak, after) in results.items():
        print(
            f"  {title:18s} at 30: ECS {peak['gateway-ecs']:2d} ECI {peak['virtual']:2d}"
            f"  after: ECS {after['gateway-ecs']:2d} ECI {after['virtual']:2d}"
        )
        # The hard guarantees hold through a scale-in too.
        assert after["other"] == 0 and after["pending"] == 0
        assert after["gateway-ecs"] + after["virtual"] == ECS_ROOM


def test_every_field_the_stack_sends_is_a_field_of_the_istio_gateway(cluster: Cluster) -> None:
    """The API server prunes what the CRD (ASM's real field list) lacks: nothing may go missing."""
    cluster.set_policy("prefer-ecs")
    deployment = cluster.stack.export_stack().deployment
    assert deployment is not None
    resources = deployment["resources"]
    (gateway,) = [
        r for r in resources if r["type"] == "kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway"
    ]
    sent, stored = gateway["inputs"]["spec"], gateway["outputs"]["spec"]
    assert set(sent) <= set(stored), f"pruned by the API server: {sorted(set(sent) - set(stored))}"
    for key, value in sent.items():
        if isinstance(value, dict):
            assert set(value) <= set(stored[key]), key
