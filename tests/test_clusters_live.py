"""One gateway across two clusters of a mesh: the real engine, two real control planes.

Two control planes stand for two ACK clusters, each with its own nodes, sizes
and other teams' marks; the first also serves the mesh's API. The ASM stand-in
deploys the IstioGateway into every cluster its `clusterIds` lists (with that
cluster's `overrides`) and removes it from a cluster the list drops, as ASM
does. One stack declares both clusters. Checked in each cluster on every `up`:
the gateway's pods run only on that cluster's gateway nodes or virtual nodes,
none is evicted, and the marks of other owners stay.
"""

from __future__ import annotations

import contextlib
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
from control_plane import ECS_FIRST_PROFILE, ControlPlane, PodWatch, running_control_plane
from engine_project import EngineProject, beside_the_rebalancer, changed_steps, checkout
from node_inventory import NodeSpec, ack_virtual_node, create_nodes
from pulumi import automation as auto

import placement_check
import preflight
import stack_config
from components.gateway import GATEWAY_POD_LABEL

pytestmark = [pytest.mark.cluster, pytest.mark.engine]
warnings.filterwarnings("ignore", message="Unverified HTTPS request")

NAMESPACE = "istio-system"
GATEWAY = "edge-gateway"
SELECTOR = f"{GATEWAY_POD_LABEL}={GATEWAY}"
ROLE = "edge.example.com/role"
DEDICATED = {"key": "edge.example.com/dedicated", "value": "gateway", "effect": "NoSchedule"}
DRAIN = {"key": "edge.example.com/drain", "value": "true", "effect": "NoExecute"}
OURS = "edge.example.com/"
POD_RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
EAST, WEST = "c-east", "c-west"
REPLICAS = {EAST: 5, WEST: 3}  # the west cluster runs fewer, through the gateway's overrides


@dataclass(frozen=True)
class Cluster:
    cluster_id: str
    gateway_nodes: list[str]
    inventory: list[NodeSpec]


CLUSTERS = {
    EAST: Cluster(
        EAST,
        ["east-a", "east-b"],
        [
            NodeSpec("east-a", cpu="3800m", memory="14Gi", labels={"team.example.com/owner": "platform"}),
            NodeSpec(
                "east-b",
                cpu="1800m",
                memory="6Gi",
                taints=(
                    {"key": "team.example.com/reserved", "value": "batch", "effect": "PreferNoSchedule"},
                ),
            ),
            NodeSpec("east-batch", cpu="31800m", memory="120Gi"),
            ack_virtual_node("virtual-kubelet-cn-hangzhou-h"),
        ],
    ),
    WEST: Cluster(
        WEST,
        ["west-a"],
        [
            NodeSpec(
                "west-a",
                cpu="1800m",
                memory="6Gi",
                labels={"team.example.com/owner": "data"},
                taints=(
                    {"key": "team.example.com/maintenance", "value": "true", "effect": "PreferNoSchedule"},
                ),
            ),
            NodeSpec("west-general", cpu="15800m", memory="60Gi"),
            ack_virtual_node("virtual-kubelet-cn-shanghai-b"),
        ],
    ),
}


def virtual_nodes(cluster: Cluster) -> set[str]:
    return {n.name for n in cluster.inventory if n.name.startswith("virtual-kubelet")}


def foreign_marks(api: kubernetes.client.ApiClient, nodes: list[str]) -> dict[str, Any]:
    """Per node: every label and taint that is not the stack's."""
    core = kubernetes.client.CoreV1Api(api)
    marks = {}
    for name in nodes:
        node = core.read_node(name)
        marks[name] = {
            "labels": {k: v for k, v in (node.metadata.labels or {}).items() if not k.startswith(OURS)},
            "taints": sorted(
                (t.key, t.value, t.effect) for t in node.spec.taints or [] if not t.key.startswith(OURS)
            ),
        }
    return marks


def stack_marks(api: kubernetes.client.ApiClient, nodes: list[str]) -> dict[str, Any]:
    """Per node: the stack's labels and taints."""
    core = kubernetes.client.CoreV1Api(api)
    return {
        name: (
            {k: v for k, v in (core.read_node(name).metadata.labels or {}).items() if k.startswith(OURS)},
            sorted(t.key for t in core.read_node(name).spec.taints or [] if t.key.startswith(OURS)),
        )
        for name in nodes
    }


@dataclass
class Live:
    planes: dict[str, ControlPlane]
    apis: dict[str, kubernetes.client.ApiClient]
    watches: dict[str, PodWatch]
    mesh: asm_standin.MeshController
    project: EngineProject
    stack: auto.Stack

    def pods(self, cluster_id: str) -> list[Any]:
        core = kubernetes.client.CoreV1Api(self.apis[cluster_id])
        return [
            p
            for p in core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
            if p.status.phase not in ("Succeeded", "Failed") and p.metadata.deletion_timestamp is None
        ]

    def serving(self, cluster_id: str) -> list[Any]:
        return [
            p
            for p in self.pods(cluster_id)
            if p.spec.node_name
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]

    def wait_serving(self, expected: dict[str, int], timeout: float = 120) -> None:
        """Until each cluster runs the number of ready gateway pods expected there (0: none at all)."""
        deadline = time.monotonic() + timeout
        while True:
            counts = {c: (len(self.pods(c)), len(self.serving(c))) for c in CLUSTERS}
            if all(counts[c] == (expected.get(c, 0),) * 2 for c in CLUSTERS):
                return
            assert time.monotonic() < deadline, f"gateway pods per cluster {counts}, expected {expected}"
            time.sleep(0.3)

    def placement(self) -> dict[str, dict[str, int]]:
        """Per cluster, the gateway's pods per node; every one on a gateway node or a virtual node."""
        found: dict[str, dict[str, int]] = {}
        for cluster_id, cluster in CLUSTERS.items():
            allowed = set(cluster.gateway_nodes) | virtual_nodes(cluster)
            nodes = [p.spec.node_name for p in self.serving(cluster_id)]
            assert set(nodes) <= allowed, f"{cluster_id}: pods on {sorted(set(nodes) - allowed)}"
            found[cluster_id] = {n: nodes.count(n) for n in sorted(set(nodes))}
        return found

    def up(self, title: str, edit: Callable[[dict[str, Any]], None], expected: dict[str, int]) -> list[str]:
        """One `up` while the gateway serves: no eviction and no foreign mark touched in any cluster.

        Returns the steps the engine finished, in order (`op name`).
        """
        before = {c: foreign_marks(self.apis[c], CLUSTERS[c].gateway_nodes) for c in CLUSTERS}
        for watch in self.watches.values():
            watch.evicted.clear()
        self.project.edit_config("local", edit)
        finished: list[str] = []

        def on_event(event: auto.events.EngineEvent) -> None:
            done = event.res_outputs_event
            if done is not None and done.metadata.op != auto.events.OpType.SAME:
                finished.append(f"{done.metadata.op.value} {done.metadata.urn.rsplit('::', 1)[1]}")

        self.stack.up(on_event=on_event)
        self.wait_serving(expected)
        time.sleep(1)  # let the taint eviction controller act on what the up did
        evicted = {c: dict(w.evicted) for c, w in self.watches.items()}
        print(f"  {title:40s} evicted {sum(map(len, evicted.values()))}  placement {self.placement()}")
        assert evicted == {c: {} for c in CLUSTERS}, title
        assert {c: foreign_marks(self.apis[c], CLUSTERS[c].gateway_nodes) for c in CLUSTERS} == before
        assert not self.mesh.errors, self.mesh.errors
        return finished

    def set_west_kubeconfig(self) -> None:
        text = yaml.safe_dump(self.planes[WEST].kubeconfig)
        self.stack.set_config("clusters[0].clusterKubeconfig", auto.ConfigValue(text, secret=True), path=True)


def west_cluster() -> dict[str, Any]:
    # Its marks are left out: the first cluster's, so one set of rules is right in both.
    return {
        "clusterId": WEST,
        "ecsCapacity": {"mode": "existingNodes", "nodes": CLUSTERS[WEST].gateway_nodes},
    }


def two_clusters(config: dict[str, Any]) -> None:
    config.pop("renderYamlTo", None)
    config["clusterId"] = EAST
    config["placementPolicy"] = "prefer-ecs"
    config["rolloutTimeoutSeconds"] = 120
    config["ecsCapacity"] = {
        "mode": "existingNodes",
        "nodes": CLUSTERS[EAST].gateway_nodes,
        "labels": {ROLE: "gateway"},
        "taints": [DEDICATED],
    }
    config["virtualNodes"] = {"mode": "existing"}
    config["clusters"] = [west_cluster()]
    config["gateways"] = [
        {
            "name": GATEWAY,
            "replicaCount": REPLICAS[EAST],
            "minReplicas": 2,
            "maxReplicas": 30,
            "resources": POD_RESOURCES,
            "clusterOverrides": {WEST: {"replicaCount": REPLICAS[WEST], "minReplicas": 1}},
        }
    ]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("two-clusters")
    with contextlib.ExitStack() as stack_of:
        planes, apis = {}, {}
        for cluster_id, cluster in CLUSTERS.items():
            # Each cluster's admin token its own, so the state can be searched for either.
            planes[cluster_id], apis[cluster_id] = stack_of.enter_context(
                running_control_plane(tmp / cluster_id, token=f"{cluster_id}-admin-token")
            )
            create_nodes(apis[cluster_id], cluster.inventory)
            asm_standin.install(apis[cluster_id], NAMESPACE)
            # ECS first, as ACK's ResourcePolicy places: the forecast is then exact, pod for pod.
            planes[cluster_id].start_scheduler(ECS_FIRST_PROFILE)
        mesh = asm_standin.MeshController(apis[EAST], NAMESPACE, delay=1.0, clusters=apis).start()
        stack_of.callback(mesh.stop)
        watches = {c: PodWatch(planes[c], NAMESPACE, SELECTOR) for c in CLUSTERS}
        for watch in watches.values():
            stack_of.callback(watch.stop)
        project = EngineProject(tmp)
        # The first cluster's API also serves the mesh's.
        stack = project.stack_on_cluster("local", planes[EAST].kubeconfig, two_clusters)
        live = Live(planes, apis, watches, mesh, project, stack)
        live.set_west_kubeconfig()
        yield live


def test_the_gateway_runs_in_both_clusters_on_their_own_gateway_nodes_with_their_own_marks(
    live: Live,
) -> None:
    live.stack.up()
    live.wait_serving(REPLICAS)
    placement = live.placement()
    print(f"\n  first up: placement {placement}")
    for cluster_id, cluster in CLUSTERS.items():
        marks = stack_marks(live.apis[cluster_id], cluster.gateway_nodes)
        assert all(m == ({ROLE: "gateway"}, [DEDICATED["key"]]) for m in marks.values()), marks
    # The same IstioGateway, deployed in each cluster with that cluster's replicas.
    gateway = asm_standin.read_gateway(live.apis[EAST], NAMESPACE, GATEWAY)
    assert gateway["spec"]["clusterIds"] == [EAST, WEST]
    assert gateway["spec"]["overrides"] == {WEST: {"replicaCount": REPLICAS[WEST], "minReplicas": 1}}
    # What each cluster's forecast said at replicaCount, pod for pod: 1-CPU pods, so east-a
    # holds 3 and east-b 1 (the fifth goes to ECI); west-a holds 1 (two go to ECI).
    forecasts = live.stack.outputs()["placementForecast"].value["clusters"]
    for cluster_id, cluster in CLUSTERS.items():
        at_replicas = forecasts[cluster_id]["gateways"][0]["replicaCount"]
        on_ecs = sum(n for node, n in placement[cluster_id].items() if node in cluster.gateway_nodes)
        assert (on_ecs, REPLICAS[cluster_id] - on_ecs) == (at_replicas["ecs"], at_replicas["eci"]), cluster_id
    assert (
        forecasts[EAST]["gateways"][0]["replicaCount"]["ecs"],
        forecasts[WEST]["gateways"][0]["replicaCount"]["ecs"],
    ) == (4, 1)


def test_the_placement_check_reports_each_cluster_against_its_own_forecast(live: Live) -> None:
    outputs = {k: v.value for k, v in live.stack.outputs().items()}
    assert set(outputs["placementForecast"]["clusters"]) == {EAST, WEST}
    for cluster_id in CLUSTERS:
        found = placement_check.check(live.apis[cluster_id], outputs["gateways"])
        assert len(found) == REPLICAS[cluster_id] and all(p.allowed for p in found)
        lines = placement_check.compare_with_forecast(live.apis[cluster_id], outputs, found, cluster_id)
        print("\n".join(lines))
        assert lines[0].startswith(f"against the forecast for cluster {cluster_id}")
        assert f"{REPLICAS[cluster_id]} pods" in lines[-1 if cluster_id == EAST else 1]
    unnamed = placement_check.compare_with_forecast(live.apis[EAST], outputs, [], None)
    assert unnamed == [f"the stack spans several clusters: name the one checked (--cluster): {EAST}, {WEST}"]


def test_a_no_execute_taint_in_both_clusters_evicts_no_gateway_pod(live: Live) -> None:
    def add_drain(config: dict[str, Any]) -> None:
        config["ecsCapacity"]["taints"].append(DRAIN)

    live.up("NoExecute taint in both clusters", add_drain, REPLICAS)
    for cluster_id, cluster in CLUSTERS.items():
        for _labels, taints in stack_marks(live.apis[cluster_id], cluster.gateway_nodes).values():
            assert DRAIN["key"] in taints, cluster_id


GATEWAY_STEP = f"update asm-gateway-{NAMESPACE}-{GATEWAY}-istiogateway"
WEST_ADMIT, WEST_RESTRICT = f"asm-gateway-{WEST}-ecs-marks", f"asm-gateway-{WEST}-ecs-taints-marks"


def serving_clusters(live: Live) -> frozenset[str] | None:
    """What the preflight reads of the mesh: the clusters the stack's gateway lists now."""
    values = {
        "clusterId": EAST,
        "ecsCapacity": {
            "mode": "nodePool",
            "labels": {ROLE: "gateway"},
            "nodePool": {"instanceTypes": ["t"], "vswitchIds": ["v"]},
        },
        "meshKubeconfig": yaml.safe_dump(live.planes[EAST].kubeconfig),
        "gateways": [{"name": GATEWAY}],
        "region": "r",
        "virtualNodes": {"mode": "existing"},
    }
    return preflight.require(stack_config.parse("local", values, ["meshKubeconfig"])).serving_clusters


def test_a_cluster_is_retired_then_removed_and_its_marks_go_only_after_the_gateway_left_it(
    live: Live,
) -> None:
    assert serving_clusters(live) == frozenset({EAST, WEST})

    def retire_west(config: dict[str, Any]) -> None:
        config["clusters"][0]["retiring"] = True

    steps = live.up("west retiring", retire_west, {EAST: REPLICAS[EAST]})
    assert asm_standin.read_gateway(live.apis[EAST], NAMESPACE, GATEWAY)["spec"]["clusterIds"] == [EAST]
    # Its capacity and marks stay until the entry is deleted; only the gateway changed.
    assert steps == [GATEWAY_STEP], steps
    assert stack_marks(live.apis[WEST], CLUSTERS[WEST].gateway_nodes) == {
        "west-a": ({ROLE: "gateway"}, sorted([DEDICATED["key"], DRAIN["key"]]))
    }
    assert serving_clusters(live) == frozenset({EAST})

    def remove_west(config: dict[str, Any]) -> None:
        config.pop("clusters")
        config["gateways"][0].pop("clusterOverrides")

    steps = live.up("west removed from the stack", remove_west, {EAST: REPLICAS[EAST]})
    # The gateway had left it already: this `up` only deletes what the stack had there.
    assert {f"delete {WEST_ADMIT}", f"delete {WEST_RESTRICT}"} <= set(steps), steps
    assert all(step.startswith("delete ") for step in steps), steps
    assert stack_marks(live.apis[WEST], CLUSTERS[WEST].gateway_nodes) == {"west-a": ({}, [])}


def test_a_cluster_added_gets_its_marks_before_the_gateway_lists_it_and_its_pods_land_as_forecast(
    live: Live,
) -> None:
    def add_west(config: dict[str, Any]) -> None:
        config["clusters"] = [west_cluster()]
        config["gateways"][0]["clusterOverrides"] = {WEST: {"replicaCount": REPLICAS[WEST], "minReplicas": 1}}

    live.project.edit_config("local", add_west)
    live.set_west_kubeconfig()
    steps = live.up("west added back", lambda config: None, REPLICAS)
    assert (
        steps.index(f"create {WEST_ADMIT}")
        < steps.index(GATEWAY_STEP)
        < steps.index(f"create {WEST_RESTRICT}")
    )
    marks = stack_marks(live.apis[WEST], CLUSTERS[WEST].gateway_nodes)
    assert marks == {"west-a": ({ROLE: "gateway"}, sorted([DEDICATED["key"], DRAIN["key"]]))}
    # The new cluster's pods found its labelled nodes: west-a holds 1, the rest on ECI, as forecast.
    forecast = live.stack.outputs()["placementForecast"].value["clusters"][WEST]["gateways"][0][
        "replicaCount"
    ]
    on_ecs = live.placement()[WEST].get("west-a", 0)
    assert (on_ecs, REPLICAS[WEST] - on_ecs) == (forecast["ecs"], forecast["eci"]) == (1, 2)


def test_a_cluster_removed_in_one_up_is_taken_off_the_gateway_before_its_marks_go(live: Live) -> None:
    def remove_west(config: dict[str, Any]) -> None:
        config.pop("clusters")
        config["gateways"][0].pop("clusterOverrides")

    steps = live.up("west removed in one up", remove_west, {EAST: REPLICAS[EAST]})
    # The gateway's update finished before either of west's marks was deleted (the two in any order).
    gateway_done = steps.index(GATEWAY_STEP)
    assert gateway_done < min(steps.index(f"delete {WEST_RESTRICT}"), steps.index(f"delete {WEST_ADMIT}")), (
        steps
    )
    assert stack_marks(live.apis[WEST], CLUSTERS[WEST].gateway_nodes) == {"west-a": ({}, [])}

    def add_west(config: dict[str, Any]) -> None:
        config["clusters"] = [west_cluster()]
        config["gateways"][0]["clusterOverrides"] = {WEST: {"replicaCount": REPLICAS[WEST], "minReplicas": 1}}

    live.project.edit_config("local", add_west)
    live.set_west_kubeconfig()
    live.up("west added again", lambda config: None, REPLICAS)


def test_every_kubeconfig_is_encrypted_in_the_state(live: Live) -> None:
    # The backend's own file: `export_stack` shows secrets decrypted.
    backend = Path(live.project.env["PULUMI_BACKEND_URL"].removeprefix("file://"))
    state = (backend / ".pulumi" / "stacks" / "asm-serverless-gateway" / "local.json").read_text()
    # The west cluster's provider is in the state, with its kubeconfig as ciphertext only.
    assert f"asm-gateway-{WEST}-node-marks" in state
    assert live.planes[WEST].token not in state and live.planes[EAST].token not in state


def test_destroy_takes_the_gateway_and_the_marks_out_of_both_clusters_and_leaves_the_rest(live: Live) -> None:
    before = {c: foreign_marks(live.apis[c], CLUSTERS[c].gateway_nodes) for c in CLUSTERS}
    live.stack.destroy()
    live.wait_serving({})
    for cluster_id, cluster in CLUSTERS.items():
        assert all(m == ({}, []) for m in stack_marks(live.apis[cluster_id], cluster.gateway_nodes).values())
    assert {c: foreign_marks(live.apis[c], CLUSTERS[c].gateway_nodes) for c in CLUSTERS} == before


# The last version of the stack with one cluster only.
ONE_CLUSTER_VERSION = "e525d69"


def test_a_one_cluster_stack_of_the_version_before_clusters_previews_no_change(tmp_path: Path) -> None:
    old_source = checkout(ONE_CLUSTER_VERSION, tmp_path / "source")
    with running_control_plane(tmp_path) as (plane, api):
        cluster = CLUSTERS[EAST]
        create_nodes(api, cluster.inventory)
        asm_standin.install(api, NAMESPACE)
        kubernetes.client.CoreV1Api(api).create_namespaced_config_map(
            "kube-system", {"metadata": {"name": "eci-profile"}, "data": {"vSwitchIds": "vsw-old"}}
        )

        def one_cluster(config: dict[str, Any]) -> None:
            two_clusters(config)
            config.pop("clusters")
            config["gateways"][0].pop("clusterOverrides")
            config["virtualNodes"] = {"mode": "existing", "eciVswitchIds": ["vsw-east"]}
            config["ackResourcePolicy"] = True

        old = EngineProject(tmp_path, source=old_source, folder="old")
        old.stack_on_cluster("local", plane.kubeconfig, one_cluster).up()
        new = EngineProject(tmp_path, folder="new")
        steps = changed_steps(new.stack_on_cluster("local", plane.kubeconfig, one_cluster))
        # What this version adds (the budget, the rebalancer, the derived rollout) and nothing else.
        assert beside_the_rebalancer(steps) == [], steps
