"""Day two: `pulumi up` against a live cluster with a serving gateway.

The control plane runs the garbage collector, node lifecycle and taint eviction
controllers; the ASM stand-in runs as a controller that rolls the gateway's pods
on its own time (asm_standin.MeshController). The nodes carry other teams'
labels and taints, one is cordoned, and the inventory, labels and taints differ
from the repo's stacks. Each scenario is one `up` while the gateway serves; no
reset between them. Counted per scenario: pods evicted, pods lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asm_standin
import kubernetes
import pytest
import yaml
from control_plane import ControlPlane, running_control_plane
from engine_project import EngineProject
from node_inventory import NodeSpec, ack_virtual_node, create_nodes
from pulumi import automation as auto

from components.gateway import GATEWAY_POD_LABEL
from components.scheduling import Taint
from node_marks_plugin.cluster import Cluster
from node_marks_plugin.marks import NodeChange

pytestmark = [pytest.mark.cluster, pytest.mark.engine]
warnings.filterwarnings("ignore", message="Unverified HTTPS request")

NAMESPACE = "istio-system"
GATEWAY = "edge-gateway"
SELECTOR = f"{GATEWAY_POD_LABEL}={GATEWAY}"
REPLICAS = 6
EDGE_NODES = ["edge-a", "edge-b"]
ROLE = "edge.example.com/role"
DEDICATED = {"key": "edge.example.com/dedicated", "value": "gateway", "effect": "NoSchedule"}
# Other teams' marks on the gateway's nodes: the stack must never touch them.
MAINTENANCE = {"key": "team.example.com/maintenance", "value": "true", "effect": "NoSchedule"}
RESERVED = {"key": "team.example.com/reserved", "value": "batch", "effect": "PreferNoSchedule"}
TEAM_LABEL = {"team.example.com/owner": "platform"}
INVENTORY = [
    NodeSpec("edge-a", cpu="7800m", memory="30Gi", labels=TEAM_LABEL),
    NodeSpec("edge-b", cpu="15800m", memory="60Gi", labels=TEAM_LABEL, taints=(MAINTENANCE, RESERVED)),
    NodeSpec("batch-0", cpu="31800m", memory="120Gi"),
    ack_virtual_node("virtual-kubelet-cn-shanghai-b"),
]
# What the add-on's profile holds before the stack runs (ACK writes it).
ECI_PROFILE_BEFORE = {
    "vpcId": "vpc-day-two",
    "vSwitchIds": "vsw-old",
    "securityGroupId": "sg-old",
    "selectors": "[]",
    "enableClusterIp": "true",
}
ECI_NETWORK = {"eciVswitchIds": ["vsw-day-two-a", "vsw-day-two-b"], "eciSecurityGroupId": "sg-day-two"}
POD_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def foreign_marks(api: kubernetes.client.ApiClient, declared_label_keys: set[str]) -> dict[str, Any]:
    """Per node: every label and taint the stack did not declare, and the cordon."""
    core = kubernetes.client.CoreV1Api(api)
    marks = {}
    for name in EDGE_NODES:
        node = core.read_node(name)
        marks[name] = {
            "labels": {k: v for k, v in (node.metadata.labels or {}).items() if k not in declared_label_keys},
            "taints": sorted(
                (t.key, t.value, t.effect)
                for t in node.spec.taints or []
                if not t.key.startswith("edge.example.com/")
            ),
            "unschedulable": node.spec.unschedulable,
        }
    return marks


class PodWatch:
    """Watches the gateway's pods and records every eviction (a DisruptionTarget condition)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.api = kubernetes.config.new_client_from_config_dict(plane.kubeconfig)
        self.evicted: dict[str, str] = {}  # pod -> the condition's reason
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        core = kubernetes.client.CoreV1Api(self.api)
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            for event in watch.stream(
                core.list_namespaced_pod, NAMESPACE, label_selector=SELECTOR, timeout_seconds=5
            ):
                pod = event["object"]
                for condition in pod.status.conditions or []:
                    if condition.type == "DisruptionTarget" and condition.status == "True":
                        self.evicted[pod.metadata.name] = condition.reason
                if self._stop.is_set():
                    watch.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class Live:
    plane: ControlPlane
    api: kubernetes.client.ApiClient
    project: EngineProject
    stack: auto.Stack
    mesh: asm_standin.MeshController
    watch: PodWatch

    def declared_label_keys(self) -> set[str]:
        config = yaml.safe_load(self.project.stack_file("local").read_text())["config"]
        return set(config["asm-serverless-gateway:ecsCapacity"]["labels"])

    def serving_pods(self) -> list[Any]:
        core = kubernetes.client.CoreV1Api(self.api)
        return [
            p
            for p in core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
            if p.metadata.deletion_timestamp is None
            and p.spec.node_name
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]

    def wait_serving(self, timeout: float = 120) -> None:
        """Until the mesh has rolled the gateway out: every replica Ready, none old, none leaving."""
        apps = kubernetes.client.AppsV1Api(self.api)
        core = kubernetes.client.CoreV1Api(self.api)
        deadline = time.monotonic() + timeout
        while True:
            gateway = asm_standin.read_gateway(self.api, NAMESPACE, GATEWAY)
            deployments = apps.list_namespaced_deployment(NAMESPACE).items
            deployment = next((d for d in deployments if d.metadata.name == GATEWAY), None)
            pods = core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
            if (
                deployment is not None
                and (deployment.metadata.annotations or {}).get("asm-standin/generation")
                == str(gateway["metadata"]["generation"])
                and deployment.status.observed_generation == deployment.metadata.generation
                and deployment.status.updated_replicas == REPLICAS
                and len(pods) == REPLICAS
                and len(self.serving_pods()) == REPLICAS
            ):
                return
            assert time.monotonic() < deadline, f"gateway not serving {REPLICAS} replicas after {timeout}s"
            time.sleep(0.3)

    def up_while_serving(self, title: str, edit: Callable[[dict[str, Any]], None]) -> None:
        """One `up` with the gateway serving; count evictions and lost pods, check foreign marks."""
        self.wait_serving()
        before = foreign_marks(self.api, self.declared_label_keys())
        self.watch.evicted.clear()
        self.project.edit_config("local", edit)
        self.stack.up()
        self.wait_serving()
        time.sleep(1)  # let the taint eviction controller act on what the up did
        evicted = len(self.watch.evicted)
        lost = REPLICAS - len(self.serving_pods())
        print(f"  {title:28s} evicted {evicted}  lost {lost}")
        assert foreign_marks(self.api, self.declared_label_keys()) == before, title
        assert (evicted, lost) == (0, 0), f"{title}: evicted {self.watch.evicted}"
        assert not self.mesh.errors, self.mesh.errors


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("day-two")
    with running_control_plane(tmp) as (plane, api):
        create_nodes(api, INVENTORY)
        # edge-b is cordoned by its team; node lifecycle adds the unschedulable taint.
        kubernetes.client.CoreV1Api(api).patch_node("edge-b", {"spec": {"unschedulable": True}})
        asm_standin.install(api, NAMESPACE)
        kubernetes.client.CoreV1Api(api).create_namespaced_config_map(
            "kube-system",
            {"metadata": {"name": "eci-profile"}, "data": ECI_PROFILE_BEFORE},
            field_manager="ack-virtual-node",
        )

        def point_at_cluster(config: dict[str, Any]) -> None:
            config.pop("renderYamlTo")
            config["placementPolicy"] = "ecs-only"
            config["rolloutTimeoutSeconds"] = 120
            config["ecsCapacity"] = {
                "mode": "existingNodes",
                "nodes": EDGE_NODES,
                "labels": {ROLE: "gateway"},
                "taints": [DEDICATED],
            }
            config["virtualNodes"] = {"mode": "existing", **ECI_NETWORK}
            config["gateways"] = [
                {
                    "name": GATEWAY,
                    "replicaCount": REPLICAS,
                    "minReplicas": 2,
                    "maxReplicas": 30,
                    "resources": POD_RESOURCES,
                }
            ]

        mesh = asm_standin.MeshController(api, NAMESPACE, delay=2.0).start()
        watch = PodWatch(plane)
        try:
            project = EngineProject(tmp)
            stack = project.stack_on_cluster("local", plane.kubeconfig, point_at_cluster)
            stack.up()
            yield Live(plane, api, project, stack, mesh, watch)
        finally:
            watch.stop()
            mesh.stop()


def declared_taints(config: dict[str, Any]) -> list[dict[str, str]]:
    taints: list[dict[str, str]] = config["ecsCapacity"]["taints"]
    return taints


def test_the_first_up_marks_the_nodes_and_leaves_foreign_marks(live: Live) -> None:
    live.wait_serving()
    core = kubernetes.client.CoreV1Api(live.api)
    for name in EDGE_NODES:
        node = core.read_node(name)
        assert node.metadata.labels[ROLE] == "gateway"
        assert node.metadata.labels["team.example.com/owner"] == "platform"
        taints = {(t.key, t.value, t.effect) for t in node.spec.taints}
        assert (DEDICATED["key"], DEDICATED["value"], DEDICATED["effect"]) in taints
    edge_b = core.read_node("edge-b")
    assert edge_b.spec.unschedulable is True
    taints_b = {(t.key, t.value, t.effect) for t in edge_b.spec.taints}
    assert {tuple(MAINTENANCE.values()), tuple(RESERVED.values())} <= taints_b
    assert ("node.kubernetes.io/unschedulable", None, "NoSchedule") in taints_b
    # The gateway serves from the ECS node its rules admit.
    assert {p.spec.node_name for p in live.serving_pods()} == {"edge-a"}


def eci_profile(api: kubernetes.client.ApiClient) -> dict[str, str]:
    data: dict[str, str] = (
        kubernetes.client.CoreV1Api(api).read_namespaced_config_map("eci-profile", "kube-system").data
    )
    return data


def test_the_eci_network_is_set_in_the_profile_and_its_other_keys_stay(live: Live) -> None:
    profile = eci_profile(live.api)
    print(f"\neci-profile after up: {profile}")
    assert profile == {
        **ECI_PROFILE_BEFORE,
        "vSwitchIds": "vsw-day-two-a,vsw-day-two-b",
        "securityGroupId": "sg-day-two",
    }


def test_no_up_evicts_or_strands_a_serving_gateway(live: Live) -> None:
    drain = {"key": "edge.example.com/drain", "value": "never", "effect": "NoExecute"}
    tier = {"key": "edge.example.com/tier", "value": "edge", "effect": "NoSchedule"}

    def add(taint: dict[str, str]) -> Callable[[dict[str, Any]], None]:
        return lambda config: declared_taints(config).append(taint)

    def rename_label(config: dict[str, Any]) -> None:
        config["ecsCapacity"]["labels"] = {"edge.example.com/pool": "gateway"}

    def remove_drain(config: dict[str, Any]) -> None:
        config["ecsCapacity"]["taints"] = [t for t in declared_taints(config) if t != drain]

    def prefer_ecs(config: dict[str, Any]) -> None:
        config["placementPolicy"] = "prefer-ecs"

    print("\nday-two scenarios, one up each while the gateway serves:")
    live.up_while_serving("NoExecute taint added", add(drain))
    live.up_while_serving("NoSchedule taint added", add(tier))
    live.up_while_serving("label renamed", rename_label)
    live.up_while_serving("taint removed", remove_drain)
    live.up_while_serving("policy changed", prefer_ecs)

    core = kubernetes.client.CoreV1Api(live.api)
    for name in EDGE_NODES:
        node = core.read_node(name)
        ours = sorted(
            (t.key, t.value, t.effect) for t in node.spec.taints if t.key.startswith("edge.example")
        )
        assert ours == sorted([tuple(DEDICATED.values()), tuple(tier.values())])
        assert ROLE not in node.metadata.labels
        assert node.metadata.labels["edge.example.com/pool"] == "gateway"


def kill_processes_in(folder: Path) -> None:
    """SIGKILL every process whose working directory is `folder` (a killed engine's plugins)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == folder:
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


def _drop_taint_by_hand(api: kubernetes.client.ApiClient, node: str, key: str) -> None:
    core = kubernetes.client.CoreV1Api(api)
    current = core.read_node(node)
    kept = [
        {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
        for t in current.spec.taints
        if t.key != key
    ]
    core.patch_node(
        node,
        {"metadata": {"resourceVersion": current.metadata.resource_version}, "spec": {"taints": kept}},
        _content_type="application/merge-patch+json",
    )


def test_a_taint_removed_by_hand_shows_on_refresh_and_comes_back(live: Live) -> None:
    _drop_taint_by_hand(live.api, "edge-a", DEDICATED["key"])
    changed: list[str] = []

    def on_event(event: auto.events.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is not None and pre.metadata.op == auto.events.OpType.UPDATE:
            changed.append(pre.metadata.urn.rsplit("::", 1)[1])

    live.stack.preview(refresh=True, on_event=on_event)
    assert "asm-gateway-ecs-taints-edge-a" in changed
    live.stack.up()
    taints = kubernetes.client.CoreV1Api(live.api).read_node("edge-a").spec.taints
    assert DEDICATED["key"] in {t.key for t in taints}


def test_an_up_killed_halfway_converges_after_cancel(live: Live) -> None:
    """SIGKILL while the up waits for the rollout; `pulumi cancel` then `up` converges."""
    late = {"key": "edge.example.com/late", "value": "yes", "effect": "NoExecute"}
    live.wait_serving()
    before = foreign_marks(live.api, live.declared_label_keys())
    live.watch.evicted.clear()
    live.mesh.delay = 60.0  # the mesh is slow today: the up waits on the rollout
    live.project.edit_config("local", lambda config: declared_taints(config).append(late))
    env = live.project.env
    up = subprocess.Popen(
        ["pulumi", "up", "--yes", "--skip-preview", "--stack", "local"],
        cwd=live.project.dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while late["key"] not in {
            t.get("key")
            for t in asm_standin.read_gateway(live.api, NAMESPACE, GATEWAY)["spec"]["tolerations"]
        }:
            assert up.poll() is None, "the up ended before it could be killed"
            assert time.monotonic() < deadline, "the up never updated the gateway"
            time.sleep(0.2)
        time.sleep(2)  # now inside the wait for the rollout
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
        # Plugins the engine started run in their own process groups and outlive
        # it, as they would on a user's machine; here they must not linger.
        kill_processes_in(live.project.dir)

    with pytest.raises(auto.errors.CommandError, match="locked"):
        live.stack.up()
    subprocess.run(
        ["pulumi", "cancel", "--yes", "--stack", "local"], cwd=live.project.dir, env=env, check=True
    )
    live.mesh.delay = 2.0
    live.stack.up()
    live.wait_serving()
    time.sleep(1)
    core = kubernetes.client.CoreV1Api(live.api)
    for name in EDGE_NODES:
        assert late["key"] in {t.key for t in core.read_node(name).spec.taints}
    assert foreign_marks(live.api, live.declared_label_keys()) == before
    assert not live.watch.evicted
    assert len(live.serving_pods()) == REPLICAS


def test_a_concurrent_writer_is_not_overwritten(live: Live) -> None:
    """Another writer changes the node between the stack's read and its write: the
    API server refuses the stale write (409), the stack reads again, and both land."""
    core = kubernetes.client.CoreV1Api(live.api)
    theirs = {"key": "team.example.com/racing", "value": "yes", "effect": "PreferNoSchedule"}
    ours = Taint("edge.example.com/racing", "ours", "PreferNoSchedule")
    conflicts: list[int] = []

    class RacedClient(kubernetes.client.CoreV1Api):  # type: ignore[misc]
        def patch_node(self, name: str, body: Any, **kwargs: Any) -> Any:
            if not conflicts:
                # The other writer wins the race, once.
                node = core.read_node(name)
                kept = [
                    {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
                    for t in node.spec.taints or []
                ]
                core.patch_node(name, {"spec": {"taints": [*kept, theirs]}})
            try:
                return super().patch_node(name, body, **kwargs)
            except kubernetes.client.ApiException as error:
                conflicts.append(error.status)
                raise

    try:
        raced = Cluster(live.api)
        raced.core = RacedClient(live.api)
        assert raced.change_node("edge-a", NodeChange(add_taints=[ours]))
        taints = {(t.key, t.value) for t in core.read_node("edge-a").spec.taints}
        assert conflicts == [409]
        assert {(theirs["key"], theirs["value"]), (ours.key, ours.value)} <= taints
    finally:
        Cluster(live.api).change_node("edge-a", NodeChange(drop_taints=[ours]))
        _drop_taint_by_hand(live.api, "edge-a", theirs["key"])


def test_negative_control_a_taint_put_on_by_hand_in_one_step_does_evict(live: Live) -> None:
    """What the stack avoids, done by hand: the eviction counter above does see evictions."""
    live.wait_serving()
    live.watch.evicted.clear()
    core = kubernetes.client.CoreV1Api(live.api)
    node = core.read_node("edge-a")
    surprise = {"key": "team.example.com/evict", "value": "now", "effect": "NoExecute"}
    kept = [
        {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
        for t in node.spec.taints
    ]
    core.patch_node("edge-a", {"spec": {"taints": [*kept, surprise]}})
    try:
        deadline = time.monotonic() + 60
        while not live.watch.evicted:
            assert time.monotonic() < deadline, "the taint eviction controller evicted nothing"
            time.sleep(0.2)
        print(f"\nnegative control: a NoExecute taint by hand evicted {sorted(live.watch.evicted)}")
    finally:
        _drop_taint_by_hand(live.api, "edge-a", surprise["key"])
    live.wait_serving()


def test_destroy_takes_back_only_what_the_stack_added(live: Live) -> None:
    before = foreign_marks(live.api, live.declared_label_keys())
    live.stack.destroy()
    core = kubernetes.client.CoreV1Api(live.api)
    for name in EDGE_NODES:
        node = core.read_node(name)
        assert not [t for t in node.spec.taints or [] if t.key.startswith("edge.example.com/")]
        assert not [k for k in node.metadata.labels if k.startswith("edge.example.com/")]
    assert foreign_marks(live.api, set()) == before
    # The profile keeps its other keys, and the network it was given: other ECI
    # workloads still need one.
    assert eci_profile(live.api) == {
        **ECI_PROFILE_BEFORE,
        "vSwitchIds": "vsw-day-two-a,vsw-day-two-b",
        "securityGroupId": "sg-day-two",
    }
