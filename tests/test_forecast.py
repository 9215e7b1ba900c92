"""The placement forecast against the real kube-scheduler: pod for pod under ECS-first, a bound above.

For each inventory (node sizes, other owners' pods on the gateway's nodes,
requests that run out of CPU or of memory first), the forecast is made as
`preview` makes it (the nodes read from the API server) and the gateway's
pods are then created step by step, as its autoscaler adds them, with the
rules the stack derives. Under the ECS-first profile (preferred affinity made
decisive, the placement ACK's ResourcePolicy gives) the pods on ECS, on ECI
and Pending must be the forecast's at every point; under default scoring,
the pods on ECS must never be more than the forecast's.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest
from control_plane import ECS_FIRST_PROFILE, ControlPlane, running_control_plane
from node_inventory import NodeSpec, ack_virtual_node, create_nodes

import placement_check
from components.forecast import Demand, Forecast, PodSize, forecast, gateway_key
from components.gateway import GATEWAY_POD_LABEL, Gateway
from components.node_pool import EcsCapacity
from components.scheduling import VIRTUAL_NODES, NodeGroup, NodeKind, Policy, Taint, derive_rules
from node_marks_plugin.marks import Marks, Owner
from preflight.inventory import read_inventory
from stack_config import parse_quantity

pytestmark = pytest.mark.cluster

NAMESPACE = "istio-system"
TAINT = Taint("mykey", "myvalue", "NoSchedule")


@dataclass(frozen=True)
class Case:
    """One inventory: the gateway's nodes, what others run there, the gateway's size and bounds."""

    name: str
    nodes: list[tuple[str, str]]  # (cpu, memory) allocatable of each gateway node
    others: list[tuple[int, str, str]]  # (node index, cpu, memory) requested by another owner's pod
    requests: dict[str, str]
    bounds: tuple[int, int, int]  # min, replicas, max
    policy: Policy = Policy.PREFER_ECS
    extra: list[NodeSpec] = field(default_factory=list)  # nodes of the inventory that are not the gateway's


CASES = [
    Case("two 4-core nodes", [("3900m", "14Gi")] * 2, [], {"cpu": "500m", "memory": "512Mi"}, (2, 6, 30)),
    Case(
        "mixed sizes, others' pods",
        [("1900m", "6Gi"), ("3900m", "14Gi"), ("7800m", "29Gi")],
        [(1, "1500m", "1Gi"), (2, "2", "8Gi"), (2, "250m", "20Gi")],
        {"cpu": "1", "memory": "2Gi"},
        (2, 5, 20),
    ),
    Case(
        "memory runs out first",
        [("7800m", "8Gi")] * 2,
        [(0, "100m", "2Gi")],
        {"cpu": "250m", "memory": "3Gi"},
        (1, 3, 12),
    ),
    Case(
        "ecs-only, Pending at the top",
        [("3900m", "14Gi")],
        [(0, "900m", "1Gi")],
        {"cpu": "1", "memory": "1Gi"},
        (1, 2, 8),
        Policy.ECS_ONLY,
    ),
    Case(
        "a cordoned node is no room", [("3900m", "14Gi")] * 2, [], {"cpu": "1", "memory": "1Gi"}, (2, 4, 12)
    ),
]


@dataclass
class Live:
    plane: ControlPlane
    api: kubernetes.client.ApiClient


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_control_plane(tmp_path_factory.mktemp("forecast")) as (plane, api):
        create_nodes(api, [ack_virtual_node("vk-0")])
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        core.create_namespace({"metadata": {"name": "team"}})
        yield Live(plane, api)


def _gateway(case_index: int, case: Case) -> Gateway:
    low, replicas, high = case.bounds
    return Gateway(
        name=f"gw{case_index}", namespace=NAMESPACE, replicas=replicas, autoscale=True, min_replicas=low,
        max_replicas=high, target_cpu_utilization=80, ports=(), service_type="LoadBalancer",
        service_annotations={}, pod_annotations={}, resources={"requests": case.requests},
        pod_size=PodSize(parse_quantity(case.requests["cpu"]), parse_quantity(case.requests["memory"])),
        extra_spec={},
    )  # fmt: skip


def _set_up(live: Live, index: int, case: Case) -> tuple[EcsCapacity, list[str]]:
    """The case's nodes, marked as the stack marks them, and other owners' pods bound to them."""
    labels = {"mykey4pod": f"case{index}"}
    names = [f"case{index}-ecs-{n}" for n in range(len(case.nodes))]
    taint = {"key": TAINT.key, "value": TAINT.value, "effect": TAINT.effect}
    create_nodes(
        live.api,
        [NodeSpec(name, cpu=cpu, memory=mem, labels=labels, taints=(taint,))
         for name, (cpu, mem) in zip(names, case.nodes, strict=True)],
    )  # fmt: skip
    core = kubernetes.client.CoreV1Api(live.api)
    if case.name.startswith("a cordoned"):
        core.patch_node(names[1], {"spec": {"unschedulable": True}})
    for number, (node, cpu, memory) in enumerate(case.others):
        core.create_namespaced_pod(
            "team",
            {
                "metadata": {"name": f"case{index}-team-{number}"},
                "spec": {
                    "nodeName": names[node],
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "app", "image": "team/app",
                                    "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
                },
            },
        )  # fmt: skip
    ecs = EcsCapacity("existingNodes", labels, (TAINT,), nodes=tuple(names))
    return ecs, names


def _predict(live: Live, ecs: EcsCapacity, gateway: Gateway, policy: Policy, ecs_first: bool) -> Forecast:
    inventory = read_inventory(live.api, ecs, [gateway])
    key = gateway_key(gateway.namespace, gateway.name)
    demand = Demand(key, gateway.pod_size, gateway.min_replicas, gateway.replicas, gateway.max_replicas)
    return forecast(policy, inventory, [demand], eci=True, ecs_first=ecs_first)


def _pod(gateway: Gateway, number: int, rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{gateway.name}-{number}", "labels": {GATEWAY_POD_LABEL: gateway.name}},
        "spec": {
            **rules,
            "containers": [
                {"name": "istio-proxy", "image": "asm/proxy", "resources": dict(gateway.resources)}
            ],
        },
    }


def _settle(core: kubernetes.client.CoreV1Api, gateway: Gateway, count: int) -> list[Any]:
    deadline = time.monotonic() + 60
    while True:
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"{GATEWAY_POD_LABEL}={gateway.name}").items
        decided = [
            p for p in pods
            if p.spec.node_name or any(c.reason == "Unschedulable" for c in p.status.conditions or [])
        ]  # fmt: skip
        if len(pods) == count and len(decided) == count:
            return list(pods)
        assert time.monotonic() < deadline, f"{len(decided)} of {count} pods decided"
        time.sleep(0.1)


def _run(live: Live, gateway: Gateway, ecs_nodes: list[str], policy: Policy) -> list[tuple[int, int, int]]:
    """Create the gateway's pods up to min, replicas and max; (ECS, ECI, Pending) at each."""
    groups = {NodeKind.ECS: NodeGroup(NodeKind.ECS, {"mykey4pod": ecs_nodes[0].split("-")[0]}, (TAINT,))}
    groups[NodeKind.ECI] = VIRTUAL_NODES
    rules = derive_rules(policy, groups).as_spec()
    core = kubernetes.client.CoreV1Api(live.api)
    seen, created = [], 0
    try:
        for target in (gateway.min_replicas, gateway.replicas, gateway.max_replicas):
            while created < target:
                core.create_namespaced_pod(NAMESPACE, _pod(gateway, created, rules))
                created += 1
            where = Counter(
                "ecs" if p.spec.node_name in ecs_nodes else "eci" if p.spec.node_name else "pending"
                for p in _settle(core, gateway, target)
            )
            assert set(where) <= {"ecs", "eci", "pending"}
            seen.append((where["ecs"], where["eci"], where["pending"]))
    finally:
        core.delete_collection_namespaced_pod(
            NAMESPACE, label_selector=f"{GATEWAY_POD_LABEL}={gateway.name}", grace_period_seconds=0
        )
        while core.list_namespaced_pod(NAMESPACE, label_selector=f"{GATEWAY_POD_LABEL}={gateway.name}").items:
            time.sleep(0.1)
    return seen


def _points(result: Forecast) -> list[tuple[int, int, int]]:
    g = result.gateways[0]
    return [(p.ecs, p.eci, p.pending) for p in (g.at_min, g.at_replicas, g.at_max)]


def test_the_forecast_is_the_ecs_first_scheduler_pod_for_pod_and_bounds_default_scoring(live: Live) -> None:
    prepared = []
    for index, case in enumerate(CASES):
        ecs, names = _set_up(live, index, case)
        gateway = _gateway(index, case)
        prepared.append((case, ecs, names, gateway))
    rows = []
    for profile, ecs_first in ((ECS_FIRST_PROFILE, True), (None, False)):
        live.plane.start_scheduler(profile)
        for case, ecs, names, gateway in prepared:
            predicted = _predict(live, ecs, gateway, case.policy, ecs_first=True)
            seen = _run(live, gateway, names, case.policy)
            rows.append((case.name, "ECS-first" if ecs_first else "default", _points(predicted), seen))
            if ecs_first:
                assert seen == _points(predicted), (case.name, seen, _points(predicted))
            else:
                assert all(s[0] <= p[0] for s, p in zip(seen, _points(predicted), strict=True)), case.name
    print(f"\n  {'case':30} {'scheduler':10} forecast (ECS, ECI, Pending) at min, replicas, max -> seen")
    for name, scheduler, points, seen in rows:
        print(f"  {name:30} {scheduler:10} {points} -> {seen}")


def test_the_placement_check_says_where_what_runs_differs_from_the_forecast_and_why(live: Live) -> None:
    size = {"cpu": "500m", "memory": "512Mi"}
    case = Case("others arrive after the forecast", [("3900m", "14Gi")] * 2, [], size, (2, 14, 14))
    index = len(CASES) + 1
    ecs, names = _set_up(live, index, case)
    gateway = _gateway(index, case)
    live.plane.start_scheduler(ECS_FIRST_PROFILE)
    predicted = _predict(live, ecs, gateway, Policy.PREFER_ECS, ecs_first=True)
    assert predicted.gateways[0].ecs_room == 14
    groups = {
        NodeKind.ECS: NodeGroup(NodeKind.ECS, {"mykey4pod": f"case{index}"}, (TAINT,)),
        NodeKind.ECI: VIRTUAL_NODES,
    }
    rules = derive_rules(Policy.PREFER_ECS, groups)
    stack_gateway = {
        "name": gateway.name,
        "namespace": NAMESPACE,
        "podLabels": {GATEWAY_POD_LABEL: gateway.name},
        "affinity": rules.affinity,
        "tolerations": rules.tolerations,
    }
    outputs: dict[str, Any] = {"gateways": [stack_gateway], "placementForecast": predicted.as_output()}
    # Another team's pod lands on an ECS node after the forecast, before the burst.
    kubernetes.client.CoreV1Api(live.api).create_namespaced_pod(
        "team",
        {"metadata": {"name": "arrived-later"}, "spec": {"nodeName": names[0], "containers": [
            {"name": "app", "image": "team/app", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]}},
    )  # fmt: skip
    core = kubernetes.client.CoreV1Api(live.api)
    try:
        for number in range(case.bounds[2]):
            core.create_namespaced_pod(NAMESPACE, _pod(gateway, number, rules.as_spec()))
        _settle(core, gateway, case.bounds[2])
        found = placement_check.check(live.api, [stack_gateway])
        lines = placement_check.compare_with_forecast(live.api, outputs, found)
    finally:
        core.delete_collection_namespaced_pod(
            NAMESPACE, label_selector=f"{GATEWAY_POD_LABEL}={gateway.name}", grace_period_seconds=0
        )
    print("\n" + "\n".join(lines))
    assert f"{NAMESPACE}/{gateway.name}: 14 pods, 10 on ECS, 4 on ECI, 0 Pending" in lines[1], lines
    assert "the ECS nodes hold 10 now, not 14" in lines[1] and "pods of other owners" in lines[1], lines


def test_labelled_nodes_off_the_list_count_unless_the_stack_is_taking_its_labels_off(live: Live) -> None:
    """A node labelled by hand admits the gateway and is counted; a node that left
    `ecsCapacity.nodes` and carries only the stack's own labels loses them in this `up`."""
    labels = {"mykey4pod": "offlist"}
    taint = {"key": TAINT.key, "value": TAINT.value, "effect": TAINT.effect}
    names = ["offlist-listed", "offlist-by-hand", "offlist-leaving"]
    create_nodes(
        live.api, [NodeSpec(n, cpu="4", memory="8Gi", labels=labels, taints=(taint,)) for n in names]
    )
    owner = Owner("asm-serverless-gateway", "local")
    record = json.dumps(Marks(labels, (TAINT,)).as_props(), sort_keys=True)
    kubernetes.client.CoreV1Api(live.api).patch_node(
        "offlist-leaving", {"metadata": {"annotations": {owner.key: record}}}
    )
    ecs = EcsCapacity("existingNodes", labels, (TAINT,), nodes=("offlist-listed",))
    gateway = _gateway(0, CASES[0])
    inventory = read_inventory(live.api, ecs, [gateway], owner=owner)
    assert sorted(n.name for n in inventory.nodes or ()) == ["offlist-by-hand", "offlist-listed"]
    notes = " ".join(inventory.notes)
    assert "offlist-leaving left ecsCapacity.nodes" in notes and "offlist-by-hand carry" in notes
    # Another stack's record is not this one's: its node is counted.
    other = read_inventory(live.api, ecs, [gateway], owner=Owner("asm-serverless-gateway", "prod"))
    assert len(other.nodes or ()) == 3
