"""Day two: `pulumi up` against a live cluster with a serving gateway.

The control plane runs the garbage collector, node lifecycle and taint eviction
controllers; the ASM stand-in runs as a controller that rolls the gateway's pods
on its own time (asm_standin.MeshController). The nodes carry other teams'
labels and taints, one is cordoned, and the inventory, labels and taints differ
from the repo's stacks. Each scenario is one `up` while the gateway serves; no
reset between them. Counted per scenario: pods evicted, pods lost.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asm_standin
import kubernetes
import pytest
import yaml
from control_plane import ControlPlane, PodWatch, grant, node_update_policy, running_control_plane
from engine_project import ROOT, EngineProject
from node_inventory import NodeSpec, ack_virtual_node, create_nodes
from pulumi import automation as auto

import stack_config
from components.gateway import GATEWAY_POD_LABEL
from components.scheduling import Policy, Taint
from go_tools import toolchain
from node_marks_plugin.cluster import Cluster
from node_marks_plugin.marks import ADMIT, RESTRICT, Marks, Owner, owned, show
from preflight.needs import stack_needs
from preflight.permissions import Subject, rbac_documents

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
DEPLOYER = Subject("ServiceAccount", "deployer", "kube-system")
NODE_MARKS_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "node-marks.sh"
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


# The stack's labels and taints here are all under this prefix; everything else
# on the nodes is someone else's.
OURS = "edge.example.com/"


def foreign_marks(api: kubernetes.client.ApiClient) -> dict[str, Any]:
    """Per node: every label and taint that is not the stack's, and the cordon."""
    core = kubernetes.client.CoreV1Api(api)
    marks = {}
    for name in EDGE_NODES:
        node = core.read_node(name)
        marks[name] = {
            "labels": {k: v for k, v in (node.metadata.labels or {}).items() if not k.startswith(OURS)},
            "taints": sorted(
                (t.key, t.value, t.effect) for t in node.spec.taints or [] if not t.key.startswith(OURS)
            ),
            "unschedulable": node.spec.unschedulable,
        }
    return marks


class Credentials:
    """The stack's own identity on the cluster, as a real one is: a service account's token
    bound to a Secret (deleting the Secret revokes it), and a client key in the kubeconfig."""

    def __init__(self, plane: ControlPlane, api: kubernetes.client.ApiClient, workdir: Path) -> None:
        self.plane = plane
        self.core = kubernetes.client.CoreV1Api(api)
        self.core.create_namespaced_service_account("kube-system", {"metadata": {"name": "deployer"}})
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=deployer",
                "-keyout",
                str(workdir / "client.key"),
                "-out",
                str(workdir / "client.crt"),
            ],
            check=True,
            capture_output=True,
        )
        self.key_pem = (workdir / "client.key").read_bytes()
        self.cert_pem = (workdir / "client.crt").read_bytes()
        (workdir / "client.key").unlink()
        self.generation = 0
        self.token = self._issue()

    def _issue(self) -> str:
        self.generation += 1
        name = f"deployer-credential-{self.generation}"
        secret = self.core.create_namespaced_secret("kube-system", {"metadata": {"name": name}})
        request = self.core.create_namespaced_service_account_token(
            "deployer",
            "kube-system",
            {
                "spec": {
                    "expirationSeconds": 7200,
                    "boundObjectRef": {
                        "kind": "Secret",
                        "apiVersion": "v1",
                        "name": name,
                        "uid": secret.metadata.uid,
                    },
                }
            },
        )
        token: str = request.status.token
        return token

    def rotate(self) -> str:
        """A new token; the old one revoked (its Secret deleted). Returns the old one."""
        old = self.token
        self.token = self._issue()
        self.core.delete_namespaced_secret(f"deployer-credential-{self.generation - 1}", "kube-system")
        return old

    def kubeconfig(self) -> dict[str, Any]:
        config = self.plane.kubeconfig
        config["users"] = [
            {
                "name": "deployer",
                "user": {
                    "token": self.token,
                    "client-certificate-data": base64.b64encode(self.cert_pem).decode(),
                    "client-key-data": base64.b64encode(self.key_pem).decode(),
                },
            }
        ]
        config["contexts"] = [{"name": "local", "context": {"cluster": "local", "user": "deployer"}}]
        return config

    def secrets(self) -> list[str]:
        """Recognisable parts: the token, and a line of the private key and of its base64."""
        key_line = self.key_pem.decode().splitlines()[5]
        return [self.token, key_line, base64.b64encode(self.key_pem).decode()[100:160]]

    def assert_not_in(self, text: str) -> None:
        for secret in self.secrets():
            assert secret not in text, "a credential from the kubeconfig reached the output"

    def files_holding_the_key(self, *folders: Path, top: bool = False) -> list[Path]:
        """Files that hold the token or the private key (as PEM, or base64 as a kubeconfig has it)."""
        needles = [secret.encode() for secret in self.secrets()]
        found = []
        for folder in folders:
            for path in (folder.iterdir() if top else folder.rglob("*")) if folder.is_dir() else ():
                try:
                    small = path.is_file() and not path.is_symlink() and path.stat().st_size < 10_000_000
                    if small and any(needle in path.read_bytes() for needle in needles):
                        found.append(path)
                except OSError:
                    continue
        return found


@dataclass
class Live:
    plane: ControlPlane
    api: kubernetes.client.ApiClient
    project: EngineProject
    stack: auto.Stack
    mesh: asm_standin.MeshController
    watch: PodWatch
    credentials: Credentials

    def state_dir(self) -> Path:
        return Path(self.project.env["PULUMI_BACKEND_URL"].removeprefix("file://"))

    def key_files(self) -> list[Path]:
        """Files that hold the kubeconfig's private key: in the temporary folder (where the
        Kubernetes client would write it), the project and its state."""
        temp = self.credentials.files_holding_the_key(Path(tempfile.gettempdir()), top=True)
        return temp + self.credentials.files_holding_the_key(self.project.dir, self.state_dir())

    def set_kubeconfig(self) -> None:
        text = yaml.safe_dump(self.credentials.kubeconfig())
        for key in ("clusterKubeconfig", "meshKubeconfig"):
            self.stack.set_config(key, auto.ConfigValue(text, secret=True))

    def gateway_pods(self) -> list[Any]:
        """The gateway's pods that are not finished: a real cluster keeps finished ones a while."""
        core = kubernetes.client.CoreV1Api(self.api)
        return [
            p
            for p in core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
            if p.status.phase not in ("Succeeded", "Failed")
        ]

    def serving_pods(self) -> list[Any]:
        return [
            p
            for p in self.gateway_pods()
            if p.metadata.deletion_timestamp is None
            and p.spec.node_name
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]

    def wait_serving(self, timeout: float = 120) -> None:
        """Until the mesh has rolled the gateway out: every replica Ready, none old, none leaving."""
        apps = kubernetes.client.AppsV1Api(self.api)
        deadline = time.monotonic() + timeout
        while True:
            gateway = asm_standin.read_gateway(self.api, NAMESPACE, GATEWAY)
            deployments = apps.list_namespaced_deployment(NAMESPACE).items
            deployment = next((d for d in deployments if d.metadata.name == GATEWAY), None)
            pods = self.gateway_pods()
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

    def up_while_serving(self, title: str, edit: Callable[[dict[str, Any]], None]) -> float:
        """One `up` with the gateway serving; count evictions and lost pods, check foreign marks.

        Returns how long the `up` took.
        """
        self.wait_serving()
        before = foreign_marks(self.api)
        self.watch.evicted.clear()
        self.project.edit_config("local", edit)
        start = time.monotonic()
        result = self.stack.up()
        took = time.monotonic() - start
        self.wait_serving()
        time.sleep(1)  # let the taint eviction controller act on what the up did
        evicted = len(self.watch.evicted)
        lost = REPLICAS - len(self.serving_pods())
        print(f"  {title:36s} evicted {evicted}  lost {lost}  up {took:5.1f} s")
        assert foreign_marks(self.api) == before, title
        assert (evicted, lost) == (0, 0), f"{title}: evicted {self.watch.evicted}"
        assert not self.mesh.errors, self.mesh.errors
        self.credentials.assert_not_in(result.stdout + result.stderr)
        return took


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("day-two")
    with running_control_plane(tmp) as (plane, api):
        create_nodes(api, INVENTORY)
        # edge-b is cordoned by its team; node lifecycle adds the unschedulable taint.
        kubernetes.client.CoreV1Api(api).patch_node("edge-b", {"spec": {"unschedulable": True}})
        # The guide labels and taints a node by hand: on edge-b that was done before
        # the stack ever ran, and the stack must leave it there (destroy included).
        core = kubernetes.client.CoreV1Api(api)
        core.patch_node("edge-b", {"metadata": {"labels": {ROLE: "gateway"}}}, field_manager="kubectl-label")
        _add_taint_by_hand(api, "edge-b", DEDICATED, field_manager="kubectl-taint")
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
        watch = PodWatch(plane, NAMESPACE, SELECTOR)
        try:
            project = EngineProject(tmp)
            credentials = Credentials(plane, api, tmp)
            stack = project.stack_on_cluster("local", credentials.kubeconfig(), point_at_cluster)
            # The stack's identity may do what the generated RBAC grants, and nothing else: for
            # prefer-ecs, which some tests switch to (it adds the rebalancer's needs to ecs-only's).
            declared = stack_config.from_stack_file("local", project.stack_file("local"))
            for needs in stack_needs(replace(declared.gateway, policy=Policy.PREFER_ECS)):
                grant(api, rbac_documents(needs, "local", DEPLOYER))
            stack.up()
            yield Live(plane, api, project, stack, mesh, watch, credentials)
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
        assert node.metadata.labels["edge.example.com/pool"] == "gateway"
    assert ROLE not in core.read_node("edge-a").metadata.labels
    # edge-b carried the label before the stack first ran: the stack leaves it.
    assert core.read_node("edge-b").metadata.labels[ROLE] == "gateway"


def _pod(
    namespace: str,
    name: str,
    node: str,
    labels: dict[str, str],
    tolerations: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.example.com/app:1"}],
            "tolerations": tolerations or [],
        },
    }


def _set_phase(
    api: kubernetes.client.ApiClient, namespace: str, name: str, phase: str, reason: str = ""
) -> None:
    kubernetes.client.CoreV1Api(api).patch_namespaced_pod_status(
        name, namespace, {"status": {"phase": phase, **({"reason": reason} if reason else {})}}
    )


def _add(taint: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    return lambda config: declared_taints(config).append(taint)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["ecsCapacity"]["taints"] = [t for t in declared_taints(config) if t["key"] != key]

    return edit


def test_a_finished_gateway_pod_does_not_hold_up_a_taint(live: Live) -> None:
    """An `Evicted` gateway pod that the pod garbage collector has not removed yet."""
    core = kubernetes.client.CoreV1Api(live.api)
    evicted = f"{GATEWAY}-7d9f8-evicted"
    core.create_namespaced_pod(NAMESPACE, _pod(NAMESPACE, evicted, "edge-a", {GATEWAY_POD_LABEL: GATEWAY}))
    _set_phase(live.api, NAMESPACE, evicted, "Failed", "Evicted")
    try:
        print("\nwith a finished gateway pod listed:")
        took = live.up_while_serving(
            "NoSchedule taint added",
            _add({"key": "edge.example.com/finished", "value": "ok", "effect": "NoSchedule"}),
        )
        # The up waited on the rollout alone, not on the finished pod (120 s timeout).
        assert took < 60
        assert core.read_namespaced_pod(evicted, NAMESPACE).status.phase == "Failed"
    finally:
        core.delete_namespaced_pod(evicted, NAMESPACE, grace_period_seconds=0)
    live.up_while_serving("taint removed", _drop("edge.example.com/finished"))


def test_eci_only_adds_the_ecs_taints_and_waits_only_for_pods_to_move_off(live: Live) -> None:
    """Nodes under maintenance: the gateway goes to ECI alone, and a NoExecute taint it
    does not tolerate goes on the ECS nodes once its pods have left them."""

    def eci_only(config: dict[str, Any]) -> None:
        config["placementPolicy"] = "eci-only"
        declared_taints(config).append(
            {"key": "edge.example.com/maintenance", "value": "on", "effect": "NoExecute"}
        )

    def back(config: dict[str, Any]) -> None:
        config["placementPolicy"] = "prefer-ecs"

    print("\neci-only while the ECS nodes are under maintenance:")
    live.up_while_serving("eci-only, NoExecute taint added", eci_only)
    assert {p.spec.node_name for p in live.serving_pods()} == {"virtual-kubelet-cn-shanghai-b"}
    for name in EDGE_NODES:
        taints = kubernetes.client.CoreV1Api(live.api).read_node(name).spec.taints
        assert "edge.example.com/maintenance" in {t.key for t in taints}
    live.up_while_serving("back to prefer-ecs", back)
    live.up_while_serving("maintenance taint removed", _drop("edge.example.com/maintenance"))
    # prefer-ecs: back on the ECS node (default scoring may leave some on ECI).
    landed = {p.spec.node_name for p in live.serving_pods()}
    assert "edge-a" in landed and landed <= {"edge-a", "virtual-kubelet-cn-shanghai-b"}


def _failure(error: auto.errors.CommandError) -> str:
    text = str(error)
    assert "Traceback" not in text and 'File "' not in text, "the user reads a traceback"
    return text


def _node_agent(node: str) -> dict[str, Any]:
    """A DaemonSet like node-exporter's: on one node (by name), tolerating only NoSchedule."""
    labels = {"app": "node-exporter"}
    pinned = {"key": "metadata.name", "operator": "In", "values": [node]}
    return {
        "metadata": {"name": "node-exporter", "namespace": "monitoring"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "exporter", "image": "registry.example.com/node-exporter:1"}],
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchFields": [pinned]}]
                            }
                        }
                    },
                },
            },
        },
    }


def _agent_pods(core: kubernetes.client.CoreV1Api, node: str) -> list[Any]:
    """The node agent's pods on a node that are not on their way out."""
    pods = core.list_namespaced_pod("monitoring", label_selector="app=node-exporter").items
    return [p for p in pods if p.spec.node_name == node and p.metadata.deletion_timestamp is None]


def _wait_for(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_a_no_execute_taint_stops_before_evicting_another_owners_pod_unless_allowed(live: Live) -> None:
    """A Deployment's pod and a DaemonSet's pod (its real controller running) are each let go
    by their own key; the DaemonSet's stays off the tainted node and comes back without the taint."""
    core = kubernetes.client.CoreV1Api(live.api)
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_pod("team", _pod("team", "team-cache", "edge-a", {"app": "cache"}))
    _set_phase(live.api, "team", "team-cache", "Running")
    core.create_namespace({"metadata": {"name": "monitoring"}})
    kubernetes.client.AppsV1Api(live.api).create_namespaced_daemon_set("monitoring", _node_agent("edge-a"))
    _wait_for("the DaemonSet never placed its pod on edge-a", lambda: bool(_agent_pods(core, "edge-a")))
    agent = _agent_pods(core, "edge-a")[0].metadata.name
    _set_phase(live.api, "monitoring", agent, "Running")
    drain = {"key": "edge.example.com/drain", "value": "now", "effect": "NoExecute"}
    live.wait_serving()
    live.watch.evicted.clear()
    live.project.edit_config("local", _add(drain))

    preview = live.stack.preview()
    assert "team/team-cache (on edge-a) would be evicted by" in preview.stdout, preview.stdout
    assert f"monitoring/{agent} (on edge-a, of DaemonSet monitoring/node-exporter)" in preview.stdout
    with pytest.raises(auto.errors.CommandError) as stopped:
        live.stack.up()
    message = _failure(stopped.value)
    print(f"\nup stopped: {message[message.find('Nothing was tainted') :][:500]}")
    assert "team/team-cache (on edge-a)" in message and "evictOtherPods" in message
    assert "Add the toleration to monitoring/node-exporter" in message and "evictDaemonSetPods" in message
    assert drain["key"] not in {t.key for t in core.read_node("edge-a").spec.taints}
    assert core.read_namespaced_pod("team-cache", "team").metadata.deletion_timestamp is None
    live.credentials.assert_not_in(message)

    # Other pods allowed, DaemonSets' not: still nothing tainted, nothing evicted.
    live.project.edit_config("local", lambda config: config["ecsCapacity"].update(evictOtherPods=True))
    with pytest.raises(auto.errors.CommandError) as still:
        live.stack.up()
    message = _failure(still.value)
    assert "node-exporter" in message and "team-cache" not in message
    assert drain["key"] not in {t.key for t in core.read_node("edge-a").spec.taints}
    assert _agent_pods(core, "edge-a")
    assert core.read_namespaced_pod("team-cache", "team").metadata.deletion_timestamp is None

    def allow(config: dict[str, Any]) -> None:
        config["ecsCapacity"]["evictDaemonSetPods"] = True

    print("allowed by config:")
    live.up_while_serving("NoExecute taint, evictOtherPods and evictDaemonSetPods", allow)
    _wait_for(
        "the taint never evicted the other owner's pod",
        lambda: core.read_namespaced_pod("team-cache", "team").metadata.deletion_timestamp is not None,
    )
    _wait_for("the taint never evicted the DaemonSet's pod", lambda: not _agent_pods(core, "edge-a"))
    core.delete_namespaced_pod("team-cache", "team", grace_period_seconds=0)
    core.delete_namespaced_pod(agent, "monitoring", grace_period_seconds=0)
    time.sleep(5)  # the DaemonSet controller syncs within a second: it must not put the pod back
    assert _agent_pods(core, "edge-a") == [], "the DaemonSet's pod came back onto the tainted node"

    def restore(config: dict[str, Any]) -> None:
        _drop(drain["key"])(config)
        config["ecsCapacity"].pop("evictOtherPods")
        config["ecsCapacity"].pop("evictDaemonSetPods")

    live.up_while_serving("NoExecute taint removed", restore)
    _wait_for("the DaemonSet's pod never came back to edge-a", lambda: bool(_agent_pods(core, "edge-a")))
    kubernetes.client.AppsV1Api(live.api).delete_namespaced_daemon_set("node-exporter", "monitoring")
    for pod in core.list_namespaced_pod("monitoring").items:
        core.delete_namespaced_pod(pod.metadata.name, "monitoring", grace_period_seconds=0)


def test_a_taint_another_writer_holds_with_another_value_is_refused_before_anything_changes(
    live: Live,
) -> None:
    core = kubernetes.client.CoreV1Api(live.api)
    theirs = {"key": "edge.example.com/zone", "value": "theirs", "effect": "NoSchedule"}
    _add_taint_by_hand(live.api, "edge-a", theirs, field_manager="zone-operator")
    gateway_before = asm_standin.read_gateway(live.api, NAMESPACE, GATEWAY)["metadata"]["generation"]
    live.project.edit_config("local", _add({**theirs, "value": "ours"}))
    try:
        with pytest.raises(auto.errors.CommandError) as refused:
            live.stack.up()
        message = _failure(refused.value)
        print(f"\nrefused: {message[message.find('node edge-a') :][:240]}")
        held = "the taint edge.example.com/zone:NoSchedule is already on the node with the value 'theirs'"
        assert f"node edge-a: {held}" in message
        assert "declares 'ours'" in message
        values = {t.value for t in core.read_node("edge-a").spec.taints if t.key == theirs["key"]}
        assert values == {"theirs"}
        # Refused in the preview: not even the gateway changed.
        assert (
            asm_standin.read_gateway(live.api, NAMESPACE, GATEWAY)["metadata"]["generation"] == gateway_before
        )
    finally:
        live.project.edit_config("local", _drop(theirs["key"]))
        _drop_taint_by_hand(live.api, "edge-a", theirs["key"])
    live.stack.up()


def test_a_mark_another_stack_records_is_never_changed_and_a_dead_stacks_record_is_released(
    live: Live,
) -> None:
    """A second stack of this project records the same label and taint on edge-a (written by the
    plugin's own code, as that stack's `up` would). Changing the taint's value here is refused
    before anything changes, naming that stack and the node; `scripts/node-marks.sh release`
    then drops its record (the stack is gone), leaving the marks."""
    core = kubernetes.client.CoreV1Api(live.api)
    other = Owner(stack_config.PROJECT, "other-team")
    dedicated = Taint(DEDICATED["key"], DEDICATED["value"], DEDICATED["effect"])
    # Exactly what this stack records on edge-a now (earlier tests may have renamed its label).
    ours = owned(Cluster(live.api).nodes(["edge-a"])["edge-a"], Owner(stack_config.PROJECT, "local"))
    assert dedicated in ours.taints
    shared = ours
    for stage in (ADMIT, RESTRICT):
        Cluster(live.api).mark_node("edge-a", stage, shared, other)
    gateway_before = asm_standin.read_gateway(live.api, NAMESPACE, GATEWAY)["metadata"]["generation"]

    def retaint(value: str) -> Callable[[dict[str, Any]], None]:
        def edit(config: dict[str, Any]) -> None:
            config["ecsCapacity"]["taints"] = [
                {**t, "value": value} if t["key"] == DEDICATED["key"] else t for t in declared_taints(config)
            ]

        return edit

    live.project.edit_config("local", retaint("gateway-2"))
    try:
        with pytest.raises(auto.errors.CommandError) as refused:
            live.stack.up()
        message = _failure(refused.value)
        print(f"\nrefused: {message[message.find('node edge-a') :][:300]}")
        assert f"node edge-a: the taint {show(dedicated)} is recorded by stack {other.name}" in message
        values = {t.value for t in core.read_node("edge-a").spec.taints if t.key == DEDICATED["key"]}
        assert values == {DEDICATED["value"]}
        assert (
            asm_standin.read_gateway(live.api, NAMESPACE, GATEWAY)["metadata"]["generation"] == gateway_before
        )
        release = [
            str(NODE_MARKS_SCRIPT),
            *("release", "--kubeconfig", str(live.plane.kubeconfig_path), "--stack", other.name),
        ]
        dry = subprocess.run(release, capture_output=True, text=True, check=True)
        assert "would release on node edge-a: the record" in dry.stdout
        assert other.key in (core.read_node("edge-a").metadata.annotations or {})
        subprocess.run([*release, "--yes"], capture_output=True, text=True, check=True)
        node = core.read_node("edge-a")
        assert other.key not in (node.metadata.annotations or {})
        # The marks stay: this stack records them too.
        assert all(node.metadata.labels.get(k) == v for k, v in shared.labels.items())
    finally:
        live.project.edit_config("local", retaint(DEDICATED["value"]))
        subprocess.run(
            [
                str(NODE_MARKS_SCRIPT),
                *("release", "--kubeconfig", str(live.plane.kubeconfig_path), "--stack", other.name),
                *("--take-marks-off", "--yes"),
            ],
            capture_output=True,
            check=False,
        )
    live.stack.up()


def test_a_wait_that_cannot_end_fails_once_with_a_message_that_helps(live: Live) -> None:
    stuck = {"key": "edge.example.com/stuck", "value": "yes", "effect": "NoSchedule"}

    def stuck_taint(config: dict[str, Any]) -> None:
        config["rolloutTimeoutSeconds"] = 15
        declared_taints(config).append(stuck)

    def unstuck(config: dict[str, Any]) -> None:
        config["rolloutTimeoutSeconds"] = 120
        _drop(stuck["key"])(config)

    live.wait_serving()
    live.mesh.delay = 3600.0  # the mesh never rolls the gateway out
    live.project.edit_config("local", stuck_taint)
    start = time.monotonic()
    try:
        with pytest.raises(auto.errors.CommandError) as timed_out:
            live.stack.up()
        took = time.monotonic() - start
    finally:
        live.mesh.delay = 2.0
    message = _failure(timed_out.value)
    print(f"\nthe up gave up after {took:.1f} s: {message[message.find('after 15s') :][:400]}")
    assert "after 15s (rolloutTimeoutSeconds)" in message and "Nothing was tainted" in message
    assert f"kubectl -n {NAMESPACE} get pods -l {SELECTOR}" in message
    assert took < 15 + 30  # one wait, not one per node
    taints = kubernetes.client.CoreV1Api(live.api).read_node("edge-a").spec.taints
    assert stuck["key"] not in {t.key for t in taints}
    live.stack.up()
    live.up_while_serving("stuck taint removed", unstuck)


def plugins_running(folder: Path, command: str) -> list[int]:
    """Processes whose working directory is `folder` and whose command line names `command`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and Path(os.readlink(proc / "cwd")) == folder
                and command.encode() in (proc / "cmdline").read_bytes()
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


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


def _taints_of(node: Any) -> list[dict[str, str]]:
    """A node's taints as the API takes them back in a patch."""
    return [
        {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
        for t in node.spec.taints or []
    ]


def _add_taint_by_hand(
    api: kubernetes.client.ApiClient, node: str, taint: dict[str, str], field_manager: str | None = None
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    taints = [*_taints_of(core.read_node(node)), taint]
    core.patch_node(
        node, {"spec": {"taints": taints}}, **({"field_manager": field_manager} if field_manager else {})
    )


def _drop_taint_by_hand(api: kubernetes.client.ApiClient, node: str, key: str) -> None:
    core = kubernetes.client.CoreV1Api(api)
    current = core.read_node(node)
    kept = [t for t in _taints_of(current) if t["key"] != key]
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

    # `refresh` sees it too, and records it.
    with pytest.raises(auto.errors.CommandError):
        live.stack.refresh(expect_no_changes=True)
    live.stack.refresh()
    preview = live.stack.preview(on_event=on_event)
    # The derived rollout strategy follows the live ECS room and may update the IstioGateway in
    # place beside it (a known diff noise, see issue 20's note); the marks are what is checked.
    assert [c for c in changed if not c.endswith("-istiogateway")] == ["asm-gateway-ecs-taints-marks"]
    shown = f"edge-a lacks {DEDICATED['key']}={DEDICATED['value']}:{DEDICATED['effect']}"
    assert shown in preview.stdout, preview.stdout
    live.stack.up()
    taints = kubernetes.client.CoreV1Api(live.api).read_node("edge-a").spec.taints
    assert DEDICATED["key"] in {t.key for t in taints}


def test_an_up_killed_halfway_converges_after_cancel(live: Live) -> None:
    """SIGKILL while the up waits for the rollout; `pulumi cancel` then `up` converges."""
    late = {"key": "edge.example.com/late", "value": "yes", "effect": "NoExecute"}
    live.wait_serving()
    before = foreign_marks(live.api)
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
        assert live.key_files() == [], "the provider wrote the kubeconfig's key to disk"
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
        # The node-marks plugin notices that the engine is gone and exits: it
        # cannot go on to taint the nodes after its wait.
        deadline = time.monotonic() + 10
        while plugins_running(live.project.dir, "node_marks_plugin.server"):
            assert time.monotonic() < deadline, "the node-marks plugin outlived the killed engine"
            time.sleep(0.2)
        # Plugins the engine started run in their own process groups and outlive
        # it, as they would on a user's machine; here they must not linger.
        kill_processes_in(live.project.dir)
    assert live.key_files() == [], "a killed provider left the kubeconfig's key on disk"

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
    assert foreign_marks(live.api) == before
    assert not live.watch.evicted
    assert len(live.serving_pods()) == REPLICAS


RACE_RECORD = Owner("asm-serverless-gateway", "race")


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
                _add_taint_by_hand(live.api, name, theirs)
            try:
                return super().patch_node(name, body, **kwargs)
            except kubernetes.client.ApiException as error:
                conflicts.append(error.status)
                raise

    try:
        raced = Cluster(live.api)
        raced.core = RacedClient(live.api)
        assert raced.mark_node("edge-a", RESTRICT, Marks({}, (ours,)), RACE_RECORD)
        taints = {(t.key, t.value) for t in core.read_node("edge-a").spec.taints}
        assert conflicts == [409]
        assert {(theirs["key"], theirs["value"]), (ours.key, ours.value)} <= taints
    finally:
        Cluster(live.api).mark_node("edge-a", RESTRICT, None, RACE_RECORD)
        _drop_taint_by_hand(live.api, "edge-a", theirs["key"])


def test_negative_control_a_taint_put_on_by_hand_in_one_step_does_evict(live: Live) -> None:
    """What the stack avoids, done by hand: the eviction counter above does see evictions."""
    live.wait_serving()
    live.watch.evicted.clear()
    surprise = {"key": "team.example.com/evict", "value": "now", "effect": "NoExecute"}
    _add_taint_by_hand(live.api, "edge-a", surprise)
    try:
        deadline = time.monotonic() + 60
        while not live.watch.evicted:
            assert time.monotonic() < deadline, "the taint eviction controller evicted nothing"
            time.sleep(0.2)
        print(f"\nnegative control: a NoExecute taint by hand evicted {sorted(live.watch.evicted)}")
    finally:
        _drop_taint_by_hand(live.api, "edge-a", surprise["key"])
    live.wait_serving()


def test_no_run_through_the_wrapper_leaves_the_kubeconfig_on_disk(live: Live, tmp_path: Path) -> None:
    """`preview`, `up`, `refresh`, a Ctrl-C and a `kill -9` through scripts/pulumi.sh: the Kubernetes
    provider's copies of the kubeconfig live in the run's private folder and go with it."""
    scripts = live.project.dir / "scripts"
    if not scripts.exists():
        shutil.copytree(ROOT / "scripts", scripts)
    wrapper = [str(scripts / "pulumi.sh")]
    env = {**live.project.env, "HOME": str(tmp_path)}
    runs = toolchain.runs_folder()

    def key_files() -> list[Path]:
        system_temp = Path(tempfile.gettempdir())
        return live.credentials.files_holding_the_key(system_temp, top=True) + (
            live.credentials.files_holding_the_key(runs)
        )

    assert key_files() == []
    for args in (["preview"], ["up", "--yes"], ["refresh", "--yes"]):
        done = subprocess.run(
            [*wrapper, *args, "--stack", "local", "--non-interactive"],
            cwd=live.project.dir, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert key_files() == [], f"`{args[0]}` left the kubeconfig on disk"
    for signum in (signal.SIGINT, signal.SIGKILL):
        running = subprocess.Popen(
            [*wrapper, "preview", "--stack", "local", "--non-interactive"],
            cwd=live.project.dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        # Until the provider has written its copy into the run's folder.
        deadline = time.monotonic() + 60
        while not live.credentials.files_holding_the_key(runs):
            assert running.poll() is None and time.monotonic() < deadline, "the provider wrote nothing"
            time.sleep(0.1)
        os.killpg(running.pid, signum)  # a terminal's Ctrl-C, or a kill, reaches the whole group
        running.wait(timeout=120)
        if signum == signal.SIGKILL:
            kill_processes_in(live.project.dir)
            # Nothing can clean up after a kill -9: the next run sweeps the folder.
            assert live.credentials.files_holding_the_key(runs) != []
            deadline = time.monotonic() + 10  # until the killed engine has been reaped
            while not toolchain.sweep_runs(runs):
                assert time.monotonic() < deadline, "the next run's sweep left the killed run's folder"
                time.sleep(0.2)
        assert key_files() == [], f"a run ended by {signum.name} left the kubeconfig on disk"


def test_a_broken_or_unreachable_kubeconfig_stops_the_preview_without_showing_its_contents(
    live: Live,
) -> None:
    token, key = live.credentials.secrets()[:2]
    good = yaml.safe_dump(live.credentials.kubeconfig())
    unreachable = live.credentials.kubeconfig()
    unreachable["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    broken = {
        "not valid YAML at line 2": f"users:\n- token: {token}: : [\n  key: {key}\n",
        "not a kubeconfig": f"{token}\n{key}\n",
        "cannot be reached": yaml.safe_dump(unreachable),
    }
    try:
        for says, text in broken.items():
            live.stack.set_config("clusterKubeconfig", auto.ConfigValue(text, secret=True))
            with pytest.raises(auto.errors.CommandError) as stopped:
                live.stack.preview()
            message = _failure(stopped.value)
            assert says in message, message
            live.credentials.assert_not_in(message)
    finally:
        live.stack.set_config("clusterKubeconfig", auto.ConfigValue(good, secret=True))


def _stack_marks(
    api: kubernetes.client.ApiClient, name: str
) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    node = kubernetes.client.CoreV1Api(api).read_node(name)
    labels = {k: v for k, v in node.metadata.labels.items() if k.startswith(OURS)}
    taints = {(t.key, t.value, t.effect) for t in node.spec.taints or [] if t.key.startswith(OURS)}
    return labels, taints


def test_a_rotated_kubeconfig_serves_an_up_that_drops_a_node_and_then_destroy(live: Live) -> None:
    old_token = live.credentials.rotate()
    revoked = live.credentials.kubeconfig()
    revoked["users"][0]["user"]["token"] = old_token
    probe = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config_dict(revoked))
    # The API server caches a token's success for 10 s.
    deadline = time.monotonic() + 60
    while True:
        try:
            probe.list_node()
        except kubernetes.client.ApiException as refused:
            assert refused.status == 401
            break
        assert time.monotonic() < deadline, "the old credential still works: nothing was rotated"
        time.sleep(1)
    live.set_kubeconfig()

    def drop_edge_b(config: dict[str, Any]) -> None:
        config["ecsCapacity"]["nodes"] = ["edge-a"]

    # An admission policy freezes edge-b for the deployer: the preflight's dry run of what the `up`
    # that drops edge-b would write there stops it before anything changes.
    admission = kubernetes.client.AdmissionregistrationV1Api(live.api)
    policy, binding = node_update_policy(
        "freeze-edge-b",
        f"system:serviceaccount:{DEPLOYER.namespace}:{DEPLOYER.name}",
        "object.metadata.name != 'edge-b'",
        "edge-b is frozen for maintenance",
    )
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)
    deployer = kubernetes.client.CoreV1Api(
        kubernetes.config.new_client_from_config_dict(live.credentials.kubeconfig())
    )

    def dry_run_refused() -> bool:
        try:
            deployer.patch_node("edge-b", {"metadata": {"labels": {"probe": "x"}}}, dry_run="All")
        except kubernetes.client.ApiException:
            return True
        return False

    _wait_for("the policy was never enforced", dry_run_refused, seconds=20)
    live.project.edit_config("local", drop_edge_b)
    marked = _stack_marks(live.api, "edge-b")
    with pytest.raises(auto.errors.CommandError) as stopped:
        live.stack.up()
    message = _failure(stopped.value)
    assert "the preflight failed, so nothing was changed" in message and "edge-b is frozen" in message
    assert _stack_marks(live.api, "edge-b") == marked

    # A rule that judges only real writes (as a webhook that looks at the world when the write
    # comes): the `up` fails on edge-b after edge-a. `refresh` must keep edge-b in the state,
    # so that the next `up` still takes the stack's marks off it.
    blind = {
        "expression": "request.dryRun || object.metadata.name != 'edge-b'",
        "message": "edge-b is frozen",
    }
    admission.patch_validating_admission_policy(
        policy["metadata"]["name"], {"spec": {"validations": [blind]}}
    )
    _wait_for("the policy still judged dry runs", lambda: not dry_run_refused(), seconds=20)
    with pytest.raises(auto.errors.CommandError) as failed:
        live.stack.up()
    message = _failure(failed.value)
    print(f"\na partial failure: {message[message.find('edge-b is frozen') :][:400]}")
    assert "edge-b is frozen" in message and "not RBAC" in message
    assert "before the failure: edge-a" in message
    live.stack.refresh()
    state = live.stack.export_stack().deployment or {}
    marks = [r for r in state["resources"] if r["type"] == "asm-node-marks:index:NodeMarks"]
    assert any("edge-b" in (r.get("outputs") or {}).get("nodes", []) for r in marks), marks
    admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
    admission.delete_validating_admission_policy(policy["metadata"]["name"])

    print("the cluster's credentials rotated, the policy lifted:")
    live.up_while_serving("kubeconfig rotated, edge-b dropped", drop_edge_b)
    # edge-b keeps only what it carried before the stack first ran.
    assert _stack_marks(live.api, "edge-b") == ({ROLE: "gateway"}, {tuple(DEDICATED.values())})


def test_destroy_takes_back_only_what_the_stack_added(live: Live) -> None:
    before = foreign_marks(live.api)
    edge_b = _stack_marks(live.api, "edge-b")
    result = live.stack.destroy()
    live.credentials.assert_not_in(result.stdout + result.stderr)
    assert _stack_marks(live.api, "edge-a") == ({}, set())
    # What was on edge-b before the stack stays: the label and taint put on by hand.
    assert _stack_marks(live.api, "edge-b") == edge_b == ({ROLE: "gateway"}, {tuple(DEDICATED.values())})
    assert foreign_marks(live.api) == before
    # No credential in state or anywhere in the project, in plain text.
    for path in [*live.project.dir.rglob("*"), *live.state_dir().rglob("*")]:
        if path.is_file() and not path.is_symlink():
            live.credentials.assert_not_in(path.read_bytes().decode(errors="replace"))
    # The profile keeps its other keys, and the network it was given: other ECI
    # workloads still need one.
    assert eci_profile(live.api) == {
        **ECI_PROFILE_BEFORE,
        "vSwitchIds": "vsw-day-two-a,vsw-day-two-b",
        "securityGroupId": "sg-day-two",
    }
