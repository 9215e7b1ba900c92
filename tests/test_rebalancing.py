"""ECS first, day after day: the real descheduler brings the gateway back to its ECS nodes.

On the project's control plane (the disruption controller on, so that budgets hold), the stack
deploys a gateway of 5 replicas whose ECS nodes hold 4, with its derived rollout strategy, its
PodDisruptionBudget and its rebalancer. The rebalancer's Deployment cannot run here (no
kubelet); the descheduler built from its Go module runs instead, with the policy, interval and
service account the stack deployed. Then, while the gateway serves: spec changes, a drain and
the node's return, a burst and its end, ECS nodes full of another team's pods, and default
scoring. Sampled every 0.25 s: Ready pods, pods on ECS and on ECI.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asm_standin
import kubernetes
import pytest
from control_plane import (
    ECS_FIRST_PROFILE,
    ControlPlane,
    PodWatch,
    grant,
    running_control_plane,
    service_account_kubeconfig,
)
from engine_project import EngineProject
from node_inventory import NodeSpec, ack_virtual_node, create_nodes
from pulumi import automation as auto

import placement_check
import stack_config
from components.gateway import GATEWAY_POD_LABEL
from components.rebalancer import Rebalancer, object_name
from preflight.needs import stack_needs
from preflight.permissions import Subject, rbac_documents

pytestmark = [pytest.mark.cluster, pytest.mark.engine]

NAMESPACE = "istio-system"
GATEWAY = "edge"
SELECTOR = f"{GATEWAY_POD_LABEL}={GATEWAY}"
TEAM = "team-batch"
POOL = {"pool.example.com/gateway": "true"}
DEDICATED = {"key": "pool.example.com/dedicated", "value": "gateway", "effect": "NoSchedule"}
TIER = {"key": "pool.example.com/tier", "value": "edge", "effect": "NoSchedule"}  # a test adds it
ECS_NODES = ["ecs-a", "ecs-b"]
VIRTUAL = "virtual-kubelet-cn-hangzhou-k"
# Room for 2 one-core gateway pods on each ECS node: 4 of the 5 replicas; a general node for
# everything else (the rebalancer's own pod, another team's).
INVENTORY = [
    NodeSpec("ecs-a", cpu="2000m", memory="8Gi"),
    NodeSpec("ecs-b", cpu="2200m", memory="8Gi"),
    NodeSpec("general-0", cpu="8000m", memory="32Gi"),
    ack_virtual_node(VIRTUAL),
]
REPLICAS = 5
POD_CPU = Decimal(1)
INTERVAL_SECONDS = 10  # the rebalancer's interval (its smallest allowed)
MAX_EVICTIONS_PER_RUN = 2
DEPLOYER = Subject("ServiceAccount", "deployer", "kube-system")
READY_FLOOR = REPLICAS - 1  # the budget: maxUnavailable 1 (the default)
# Pods one run moves: its bound, and what the budget lets go at once (the rest wait a run).
MOVED_PER_RUN = min(MAX_EVICTIONS_PER_RUN, 1)
# After a run's evictions: the ReplicaSet's new pod, its binding, Ready, the budget updated.
SETTLE_SECONDS = 15


def back_within(to_move: int) -> float:
    """How long the rebalancer may take to move `to_move` pods: one interval a run."""
    runs = -(-to_move // MOVED_PER_RUN)
    return runs * INTERVAL_SECONDS + SETTLE_SECONDS


@dataclass
class Sample:
    at: float
    ready: int
    ecs: int
    eci: int


@dataclass
class Figures:
    """One scenario's row in docs/tests-and-figures.md."""

    scenario: str
    before: tuple[int, int]
    right_after: tuple[int, int]
    rebalanced: tuple[int, int]
    back_in: float | None  # seconds from the change done to ECS at the forecast's count
    eci_vcpu_seconds: float
    min_ready: int
    evictions: int


class Sampler:
    """Ready gateway pods and where they run, every 0.25 s, in the background."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def placement(self) -> Sample:
        ready = ecs = eci = 0
        for pod in self.core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items:
            serving = (
                pod.metadata.deletion_timestamp is None
                and pod.spec.node_name
                and pod.status.phase == "Running"
                and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            )
            if not serving:
                continue
            ready += 1
            ecs += pod.spec.node_name in ECS_NODES
            eci += pod.spec.node_name == VIRTUAL
        return Sample(time.monotonic(), ready, ecs, eci)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.placement())
            self._stop.wait(0.25)

    def since(self, start: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= start]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Harness:
    plane: ControlPlane
    api: kubernetes.client.ApiClient
    project: EngineProject
    stack: auto.Stack
    mesh: asm_standin.MeshController
    gateway_watch: PodWatch
    team_watch: PodWatch
    sampler: Sampler
    figures: list[Figures] = field(default_factory=list)

    @property
    def apps(self) -> kubernetes.client.AppsV1Api:
        return kubernetes.client.AppsV1Api(self.api)

    def forecast_ecs(self, point: str = "replicaCount") -> int:
        gateway = self.stack.outputs()["placementForecast"].value["gateways"][0]
        ecs: int = gateway[point]["ecs"]
        return ecs

    def rolled_out(self, replicas: int) -> bool:
        deployments = self.apps.list_namespaced_deployment(
            NAMESPACE, field_selector=f"metadata.name={GATEWAY}"
        )
        if not deployments.items:
            return False  # the mesh has not made it yet
        deployment = deployments.items[0]
        status = deployment.status
        gateway = asm_standin.read_gateway(self.api, NAMESPACE, GATEWAY)
        return (
            (deployment.metadata.annotations or {}).get("asm-standin/generation")
            == str(gateway["metadata"]["generation"])
            and status.observed_generation == deployment.metadata.generation
            and status.updated_replicas == replicas
            and (status.replicas or 0) == replicas
            and self.sampler.placement().ready == replicas
        )

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        start = time.monotonic()
        while not condition():
            assert time.monotonic() - start < timeout, f"{what}: not after {timeout} s"
            time.sleep(0.25)
        return time.monotonic() - start

    def scale(self, replicas: int) -> None:
        """As the gateway's HPA does."""
        self.apps.patch_namespaced_deployment_scale(GATEWAY, NAMESPACE, {"spec": {"replicas": replicas}})
        self.wait(lambda: self.rolled_out(replicas), 120, f"scaled to {replicas}")

    def scenario(
        self, title: str, change: Callable[[], None], replicas: int = REPLICAS, serving: int = REPLICAS
    ) -> Figures:
        """Make a change while `serving` pods serve; measure until ECS holds the forecast's count
        of the `replicas` after it."""
        self.wait(lambda: self.rolled_out(serving), 120, f"{title}: serving before")
        before = self.sampler.placement()
        evicted_before = len(self.gateway_watch.evicted)
        start = time.monotonic()
        change()
        self.wait(lambda: self.rolled_out(replicas), 180, f"{title}: rolled out")
        done = time.monotonic()
        right_after = self.sampler.placement()
        want = min(self.forecast_ecs(), replicas)
        back_in: float | None = None
        allowed = back_within(max(0, want - right_after.ecs))
        deadline = done + allowed
        while time.monotonic() < deadline:
            now = self.sampler.placement()
            if now.ecs >= want and now.ready == replicas:
                back_in = time.monotonic() - done
                break
            time.sleep(0.25)
        time.sleep(1)
        after = self.sampler.placement()
        window = self.sampler.since(start)
        vcpu_seconds = sum(float(POD_CPU) * a.eci * (b.at - a.at) for a, b in itertools.pairwise(window))
        figures = Figures(
            title,
            (before.ecs, before.eci),
            (right_after.ecs, right_after.eci),
            (after.ecs, after.eci),
            back_in,
            vcpu_seconds,
            min(s.ready for s in window),
            len(self.gateway_watch.evicted) - evicted_before,
        )
        self.figures.append(figures)
        print(f"  {figures}")
        assert back_in is not None, f"{title}: ECS holds {after.ecs}, not {want}, {allowed} s after"
        assert not self.team_watch.evicted, f"another team's pod was evicted: {self.team_watch.evicted}"
        assert not self.mesh.errors, self.mesh.errors
        return figures

    def edit(self, edit: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        def up() -> None:
            self.project.edit_config("local", edit)
            self.stack.up()

        return up


# The harness's stack is `local`: its rebalancer's objects are named for it.
REBALANCER, REBALANCER_NAMESPACE = object_name(stack_config.PROJECT, "local"), Rebalancer().namespace


def start_rebalancer(plane: ControlPlane, api: kubernetes.client.ApiClient) -> None:
    """The descheduler as the stack deployed it: its policy, its interval, its account."""
    core = kubernetes.client.CoreV1Api(api)
    deployment = kubernetes.client.AppsV1Api(api).read_namespaced_deployment(REBALANCER, REBALANCER_NAMESPACE)
    (volume,) = deployment.spec.template.spec.volumes
    policy = core.read_namespaced_config_map(volume.config_map.name, REBALANCER_NAMESPACE).data["policy.yaml"]
    (interval,) = [
        arg.split("=", 1)[1]
        for arg in deployment.spec.template.spec.containers[0].args
        if arg.startswith("--descheduling-interval=")
    ]
    assert interval == f"{INTERVAL_SECONDS}s"
    identity = service_account_kubeconfig(plane, api, REBALANCER, REBALANCER_NAMESPACE)
    plane.start_descheduler(policy, interval, identity)


def team_workload(
    api: kubernetes.client.ApiClient, name: str, replicas: int, template: dict[str, Any]
) -> None:
    """Another team's ReplicaSet (owned pods, as the descheduler would consider them), with a
    budget that lets one go at a time: only the rebalancer's narrowing keeps them."""
    labels = {"app": name}
    kubernetes.client.AppsV1Api(api).create_namespaced_replica_set(
        TEAM,
        {
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": template},
            },
        },
    )
    kubernetes.client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        TEAM, {"metadata": {"name": name}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}}
    )


def mark_running(api: kubernetes.client.ApiClient, namespace: str) -> None:
    """The kubelet's part for pods outside the gateway's namespace (the stand-in plays it there)."""
    core = kubernetes.client.CoreV1Api(api)
    for pod in core.list_namespaced_pod(namespace).items:
        if pod.spec.node_name and pod.status.phase != "Running":
            core.patch_namespaced_pod_status(
                pod.metadata.name,
                namespace,
                {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
            )


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    tmp = tmp_path_factory.mktemp("rebalancing")
    with running_control_plane(tmp) as (plane, api):
        plane.start_scheduler(ECS_FIRST_PROFILE)
        create_nodes(api, INVENTORY)
        asm_standin.install(api, NAMESPACE)
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": TEAM}})

        def point_at_cluster(config: dict[str, Any]) -> None:
            config.pop("renderYamlTo")
            config["placementPolicy"] = "prefer-ecs"
            config["rolloutTimeoutSeconds"] = 120
            config["ecsCapacity"] = {
                "mode": "existingNodes",
                "nodes": ECS_NODES,
                "labels": POOL,
                "taints": [DEDICATED],
            }
            config["virtualNodes"] = {"mode": "existing"}
            config["rebalancer"] = {
                "intervalSeconds": INTERVAL_SECONDS,
                "maxEvictionsPerRun": MAX_EVICTIONS_PER_RUN,
            }
            config["gateways"] = [
                {
                    "name": GATEWAY,
                    "replicaCount": REPLICAS,
                    "minReplicas": 2,
                    "maxReplicas": 15,
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi"},
                        "limits": {"cpu": "2", "memory": "2Gi"},
                    },
                }
            ]

        mesh = asm_standin.MeshController(api, NAMESPACE, delay=1.0).start()
        gateway_watch = PodWatch(plane, NAMESPACE, SELECTOR)
        team_watch = PodWatch(plane, TEAM, "")
        sampler = Sampler(api)
        try:
            project = EngineProject(tmp)
            # The stack deploys as an identity with the generated RBAC and nothing else: it
            # grants the descheduler's role without `escalate` or `bind`.
            kubernetes.client.CoreV1Api(api).create_namespaced_service_account(
                "kube-system", {"metadata": {"name": "deployer"}}
            )
            deployer = service_account_kubeconfig(plane, api, "deployer", "kube-system")
            stack = project.stack_on_cluster("local", deployer, point_at_cluster)
            declared = stack_config.from_stack_file("local", project.stack_file("local"))
            for needs in stack_needs(declared.gateway):
                grant(api, rbac_documents(needs, "local", DEPLOYER))
            stack.up()
            start_rebalancer(plane, api)
            yield Harness(plane, api, project, stack, mesh, gateway_watch, team_watch, sampler)
        finally:
            sampler.stop()
            team_watch.stop()
            gateway_watch.stop()
            mesh.stop()


def test_the_stack_deploys_a_budget_a_derived_rollout_and_the_rebalancer(harness: Harness) -> None:
    harness.wait(lambda: harness.rolled_out(REPLICAS), 120, "first rollout")
    now = harness.sampler.placement()
    assert (now.ecs, now.eci) == (4, 1) == (harness.forecast_ecs(), REPLICAS - harness.forecast_ecs())
    spec = asm_standin.read_gateway(harness.api, NAMESPACE, GATEWAY)["spec"]
    # No ECS room beyond the 5 replicas: replace in place, one at a time (the budget).
    assert (spec["rollingMaxSurge"], spec["rollingMaxUnavailable"]) == ("0", "1")
    budget = kubernetes.client.PolicyV1Api(harness.api).read_namespaced_pod_disruption_budget(
        f"asm-serverless-gateway-{GATEWAY}", NAMESPACE
    )
    assert budget.spec.max_unavailable == 1
    # Another team's pod on ECI that would rather run elsewhere and could: a descheduler that
    # is not narrowed to the gateway would evict it.
    core = kubernetes.client.CoreV1Api(harness.api)
    core.patch_node("general-0", {"spec": {"unschedulable": True}})
    team_workload(
        harness.api,
        "prefers-general",
        1,
        {
            "containers": [{"name": "app", "image": "team:1", "resources": {"requests": {"cpu": "500m"}}}],
            "tolerations": [
                {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "preference": {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": ["general-0"],
                                    }
                                ]
                            },
                        }
                    ]
                }
            },
        },
    )
    harness.wait(
        lambda: any(p.spec.node_name == VIRTUAL for p in core.list_namespaced_pod(TEAM).items),
        60,
        "team pod on ECI",
    )
    mark_running(harness.api, TEAM)
    core.patch_node("general-0", {"spec": {"unschedulable": False}})


def test_a_spec_change_rolls_the_gateway_out_on_ecs(harness: Harness) -> None:
    def fewer_cpus(config: dict[str, Any]) -> None:
        config["gateways"][0]["resources"]["requests"]["cpu"] = "950m"

    figures = harness.scenario("resources changed (requests.cpu 1 -> 950m)", harness.edit(fewer_cpus))
    assert figures.min_ready >= READY_FLOOR


def test_a_taint_added_rolls_the_gateway_out_on_ecs(harness: Harness) -> None:
    figures = harness.scenario(
        "NoSchedule taint added", harness.edit(lambda c: c["ecsCapacity"]["taints"].append(TIER))
    )
    assert figures.min_ready >= READY_FLOOR


def test_a_drained_node_gets_its_pods_back_when_it_returns(harness: Harness) -> None:
    core = kubernetes.client.CoreV1Api(harness.api)

    def drain_and_return() -> None:
        # As `kubectl drain`: cordon, then evict through the Eviction API (the budget holds).
        core.patch_node("ecs-b", {"spec": {"unschedulable": True}})
        while on_b := [
            p
            for p in core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
            if p.spec.node_name == "ecs-b" and p.metadata.deletion_timestamp is None
        ]:
            for pod in on_b:
                try:
                    core.create_namespaced_pod_eviction(
                        pod.metadata.name,
                        NAMESPACE,
                        {"metadata": {"name": pod.metadata.name, "namespace": NAMESPACE}},
                    )
                except kubernetes.client.ApiException as refused:
                    assert refused.status == 429, refused  # the budget: try again
            time.sleep(0.5)
        harness.wait(lambda: harness.rolled_out(REPLICAS), 60, "drained")
        drained = harness.sampler.placement()
        assert (drained.ecs, drained.eci) == (2, 3)
        core.patch_node("ecs-b", {"spec": {"unschedulable": False}})

    figures = harness.scenario("ecs-b drained and back", drain_and_return)
    assert figures.min_ready >= READY_FLOOR
    assert figures.rebalanced == (4, 1)


def test_a_burst_ends_with_none_on_eci_while_ecs_has_room(harness: Harness) -> None:
    harness.scale(12)  # 3x the ECS room
    burst = harness.sampler.placement()
    assert (burst.ecs, burst.eci) == (4, 8)
    figures = harness.scenario(
        "burst to 12, back to minReplicas 2", lambda: harness.scale(2), replicas=2, serving=12
    )
    assert figures.rebalanced == (2, 0)
    harness.scale(REPLICAS)


def test_ecs_full_of_other_owners_pods_is_left_alone(harness: Harness) -> None:
    """No room on ECS for the gateway: the rebalancer evicts nothing, run after run."""
    harness.scale(1)
    tolerations = [{"operator": "Equal", **taint} for taint in (DEDICATED, TIER)]
    required = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": k, "operator": "In", "values": [v]} for k, v in POOL.items()
                        ]
                    }
                ]
            }
        }
    }
    team_workload(
        harness.api,
        "on-the-gateway-nodes",
        3,
        {
            "containers": [{"name": "app", "image": "team:1", "resources": {"requests": {"cpu": "1"}}}],
            "tolerations": tolerations,
            "affinity": required,
        },
    )
    core = kubernetes.client.CoreV1Api(harness.api)
    harness.wait(
        lambda: (
            sum(
                bool(p.spec.node_name)
                for p in core.list_namespaced_pod(TEAM, label_selector="app=on-the-gateway-nodes").items
            )
            == 3
        ),
        60,
        "the team's pods on ECS",
    )
    mark_running(harness.api, TEAM)
    harness.scale(REPLICAS)
    full = harness.sampler.placement()
    assert (full.ecs, full.eci) == (1, 4)
    evicted = len(harness.gateway_watch.evicted)
    time.sleep(3 * INTERVAL_SECONDS + 2)  # three runs
    assert len(harness.gateway_watch.evicted) == evicted, "an eviction with no ECS room"
    assert not harness.team_watch.evicted
    print(f"  ECS full of another team's pods: 1 + 4 for {3 * INTERVAL_SECONDS} s, 0 evictions")


def test_default_scoring_evicts_within_the_configured_bound(harness: Harness) -> None:
    """Default scoring may send an evicted pod back to ECI: count the evictions an hour."""
    harness.plane.start_scheduler()
    harness.plane.wait_ready()
    harness.plane.processes.pop("descheduler").terminate()  # held while the check looks
    # The team leaves the gateway's nodes: room for 3 gateway pods again.
    kubernetes.client.AppsV1Api(harness.api).delete_namespaced_replica_set("on-the-gateway-nodes", TEAM)
    core = kubernetes.client.CoreV1Api(harness.api)
    for pod in core.list_namespaced_pod(TEAM, label_selector="app=on-the-gateway-nodes").items:
        core.delete_namespaced_pod(pod.metadata.name, TEAM, grace_period_seconds=0)
    harness.wait(
        lambda: not core.list_namespaced_pod(TEAM, label_selector="app=on-the-gateway-nodes").items,
        30,
        "gone",
    )
    # The placement check says what that costs while it lasts.
    outputs = {key: value.value for key, value in harness.stack.outputs().items()}
    lines = placement_check.compare_with_forecast(
        harness.api, outputs, placement_check.check(harness.api, outputs["gateways"])
    )
    print("\n".join(lines))
    assert any(
        "3 of its 4 pod(s) on ECI could run on ECS now" in line and "2.85 vCPU" in line for line in lines
    )
    start_rebalancer(harness.plane, harness.api)
    evicted = len(harness.gateway_watch.evicted)
    window = 6 * INTERVAL_SECONDS
    time.sleep(window)
    count = len(harness.gateway_watch.evicted) - evicted
    runs = window // INTERVAL_SECONDS + 1
    now = harness.sampler.placement()
    per_hour = count * 3600 / window
    bound = MAX_EVICTIONS_PER_RUN * 3600 / INTERVAL_SECONDS
    print(f"  default scoring: {count} evictions in {window} s ({per_hour:.0f}/h, bound {bound:.0f}/h)")
    print(f"  then: {now.ecs} on ECS, {now.eci} on ECI")
    assert count <= MAX_EVICTIONS_PER_RUN * runs
    assert not harness.team_watch.evicted


def test_print_the_figures(harness: Harness) -> None:
    columns = (
        "ECS + ECI before | right after | after rebalancing | back on ECS in | ECI vCPU-s | fewest Ready"
    )
    print(f"\n| scenario | {columns} | evictions |")
    for f in harness.figures:
        back = f"{f.back_in:.1f} s" if f.back_in is not None else "not back"
        print(
            f"| {f.scenario} | {f.before[0]} + {f.before[1]} | {f.right_after[0]} + {f.right_after[1]}"
            f" | {f.rebalanced[0]} + {f.rebalanced[1]} | {back} | {f.eci_vcpu_seconds:.0f} | {f.min_ready}"
            f" | {f.evictions} |"
        )
    assert len(harness.figures) == 4
