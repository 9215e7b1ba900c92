"""The placement forecast's arithmetic, without a cluster (the scheduler proof is test_forecast.py)."""

from __future__ import annotations

from decimal import Decimal

from mock_stack import EVERY_KEY

import stack_config
from components.forecast import (
    GIB,
    Demand,
    Inventory,
    NodeRoom,
    PodSize,
    declared_inventory,
    eci_spec_size,
    forecast,
    instance_type_size,
)
from components.scheduling import Policy, Taint
from preflight.inventory import admits, pod_requests

SMALL = PodSize(Decimal("0.5"), Decimal(512 * 2**20))


def node(name: str, cpu: str, gib: int, pods: int = 110) -> NodeRoom:
    return NodeRoom(name, Decimal(cpu), Decimal(gib) * GIB, pods)


def live(*nodes: NodeRoom, running: dict[str, dict[str, int]] | None = None) -> Inventory:
    return Inventory(tuple(nodes), "test", live=True, running=running or {})


def points(result: object, index: int = 0) -> list[tuple[int, int, int]]:
    g = result.gateways[index]  # type: ignore[attr-defined]
    return [(p.ecs, p.eci, p.pending) for p in (g.at_min, g.at_replicas, g.at_max)]


def test_a_node_holds_what_its_scarcest_resource_allows() -> None:
    assert node("a", "3.9", 14).holds(SMALL) == 7
    assert node("a", "3.9", 1).holds(SMALL) == 2
    assert node("a", "3.9", 14, pods=3).holds(SMALL) == 3
    assert node("a", "0.4", 14).holds(SMALL) == 0


def test_prefer_ecs_fills_ecs_then_sends_the_rest_to_eci_and_warns_when_most_goes_there() -> None:
    result = forecast(Policy.PREFER_ECS, live(node("a", "3.9", 14)), [Demand("gw", SMALL, 2, 5, 30)],
                      eci=True, ecs_first=True)  # fmt: skip
    assert points(result) == [(2, 0, 0), (5, 0, 0), (7, 23, 0)]
    assert result.exact
    assert result.gateways[0].eci_cpu_at_max == Decimal("11.5")
    assert any("prefer-ecs sends 23 of 30 pods to ECI" in w for w in result.warnings)


def test_ecs_only_leaves_the_rest_pending_with_the_schedulers_reason() -> None:
    result = forecast(Policy.ECS_ONLY, live(node("a", "3.9", 14), node("b", "0.2", 14)),
                      [Demand("gw", SMALL, 1, 2, 10)], eci=True, ecs_first=False)  # fmt: skip
    top = result.gateways[0].at_max
    assert (top.ecs, top.eci, top.pending) == (7, 0, 3)
    assert top.reason == "0/2 ECS nodes available: Insufficient cpu"
    assert result.exact  # ecs-only leaves the scheduler no choice
    assert any("ecs-only leaves 3 of 10 pods Pending" in w for w in result.warnings)


def test_gateways_sharing_the_ecs_nodes_get_at_most_what_each_would_alone() -> None:
    demands = [Demand("first", SMALL, 4, 4, 6), Demand("second", SMALL, 4, 4, 6)]
    result = forecast(Policy.PREFER_ECS, live(node("a", "3.9", 14)), demands, eci=True, ecs_first=True)
    assert points(result, 0) == [(4, 0, 0), (4, 0, 0), (6, 0, 0)]
    # Neither is exact: whichever gateway's pods come first takes the room.
    assert not result.gateways[0].exact
    # In declaration order it would get (3, 1), (3, 1), (1, 5); its pods may come first, or the
    # first gateway's may spill to ECI: up to what it gets alone, and it says so.
    assert points(result, 1) == [(4, 0, 0), (4, 0, 0), (6, 0, 0)]
    assert not result.gateways[1].exact
    assert "ECS figures at most: it shares the ECS nodes" in result.table()


def test_default_scoring_makes_the_ecs_figures_an_upper_bound_and_capacity_too() -> None:
    demand = [Demand("gw", SMALL, 1, 1, 1)]
    assert not forecast(Policy.PREFER_ECS, live(node("a", "1", 1)), demand, eci=True, ecs_first=False).exact
    declared = Inventory((node("a", "1", 1),), "capacity", live=False)
    assert not forecast(Policy.ECS_ONLY, declared, demand, eci=True, ecs_first=True).exact


def test_no_node_that_admits_the_gateway_is_said_and_its_pods_pend() -> None:
    result = forecast(Policy.ECS_ONLY, live(), [Demand("gw", SMALL, 2, 2, 4)], eci=False, ecs_first=False)
    assert result.gateways[0].at_min.reason == "no ECS node admits the gateway"
    assert any("no ECS node admits the gateway" in w for w in result.warnings)


def test_eci_only_puts_everything_on_eci_and_says_which_serving_pods_move() -> None:
    inventory = live(node("a", "3.9", 14), running={"gw": {"ecs": 2}})
    result = forecast(Policy.ECI_ONLY, inventory, [Demand("gw", SMALL, 2, 2, 4)], eci=True, ecs_first=False)
    assert points(result) == [(0, 2, 0), (0, 2, 0), (0, 4, 0)]
    assert any("2 serving pod(s) run where eci-only does not put them" in w for w in result.warnings)


def test_instance_types_come_from_the_family_table_and_an_unknown_one_is_named() -> None:
    assert instance_type_size("ecs.g7.xlarge") == (4, 16)
    assert instance_type_size("ecs.c7.2xlarge") == (8, 16)
    assert instance_type_size("ecs.r7.large") == (2, 16)
    assert instance_type_size("ecs.gn7i.xlarge") is None
    unknown = declared_inventory("ecs.gn7i.xlarge", ["a"])
    assert unknown.nodes is None and "ecs.gn7i.xlarge is not in the instance type table" in unknown.source
    result = forecast(Policy.PREFER_ECS, unknown, [Demand("gw", SMALL, 1, 1, 2)], eci=True, ecs_first=False)
    assert "ECS room unknown" in result.table()
    assert result.gateways[0].ecs_room is None


def test_a_gateway_with_limits_only_requests_its_limits_as_kubernetes_defaults_them() -> None:
    values = {
        "clusterId": "c-1",
        "renderYamlTo": "r",
        "ecsCapacity": {"mode": "existingNodes", "nodes": ["n"], "labels": {"a": "b"}},
        "gateways": [{"name": "gw", "resources": {"limits": {"cpu": "3", "memory": "6Gi"}}}],
    }
    gateway = stack_config.parse("test", values).gateway.gateways[0]
    assert gateway.pod_size == PodSize(Decimal(3), Decimal(6) * GIB)


def test_eci_is_billed_at_the_first_eci_use_specs_size() -> None:
    assert eci_spec_size("2-4Gi") == PodSize(Decimal(2), Decimal(4) * GIB)
    assert eci_spec_size("ecs.gn6i.xlarge,8-16Gi") is None  # a GPU type the table does not hold
    assert eci_spec_size("ecs.c7.2xlarge, 8-16Gi") == PodSize(Decimal(8), Decimal(16) * GIB)
    assert eci_spec_size(None) is None
    demand = Demand("ns/gw", SMALL, 1, 1, 3, eci_size=eci_spec_size("2-4Gi"))
    result = forecast(Policy.PREFER_ECS, live(), [demand], eci=True, ecs_first=True)
    assert result.gateways[0].eci_cpu_at_max == Decimal(6)
    assert result.gateways[0].eci_memory_at_max == 12 * GIB


def test_a_pod_counts_its_sidecars_and_its_largest_init_step() -> None:
    def container(cpu: str, **extra: str) -> dict[str, object]:
        return {"resources": {"requests": {"cpu": cpu, "memory": "0"}}, **extra}

    pod = {
        "spec": {
            "containers": [container("1")],
            "initContainers": [container("500m", restartPolicy="Always"), container("3")],
            "overhead": {"cpu": "100m"},
        }
    }
    # max(app 1 + sidecar 0.5, sidecar 0.5 + init 3) + overhead 0.1
    assert pod_requests(pod)["cpu"] == Decimal("3.6")


def test_a_not_ready_or_cordoned_node_is_no_room() -> None:
    ours = [Taint("mykey", "myvalue", "NoSchedule").as_toleration()]
    ready = {"spec": {"taints": [{"key": "mykey", "value": "myvalue", "effect": "NoSchedule"}]}}
    not_ready = {"spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}}
    assert admits(ready, ours)
    assert not admits(not_ready, ours)
    assert not admits({"spec": {"unschedulable": True}}, ours)
    assert admits({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}, ours)


def test_two_gateways_of_one_name_in_two_namespaces_are_two() -> None:
    demands = [Demand("a/gw", SMALL, 1, 1, 1), Demand("b/gw", SMALL, 2, 2, 2)]
    result = forecast(Policy.PREFER_ECS, live(node("n", "3.9", 14)), demands, eci=True, ecs_first=True)
    assert [g.gateway for g in result.gateways] == ["a/gw", "b/gw"]
    assert points(result, 1) == [(2, 0, 0)] * 3


def test_a_pool_whose_nodes_are_not_all_there_is_counted_as_declared() -> None:
    args = stack_config.parse("test", EVERY_KEY[0], list(stack_config.SECRET_KEYS)).gateway
    none_yet = Inventory((), "0 read from the cluster", live=True)
    assert not args.forecast(none_yet).inventory.live  # the pool is being created: 1 x ecs.g7.xlarge
    assert (
        "1 x ecs.g7.xlarge (minSize; the autoscaler may add up to 3)"
        in args.forecast(none_yet).inventory.source
    )
    there = Inventory((node("p-0", "3.9", 14),), "1 read from the cluster", live=True)
    assert args.forecast(there).inventory is there
