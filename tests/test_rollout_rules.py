"""Day after day, without a cluster: the budget, the derived rollout, where a rollout ends, the
drift to ECI, every resource the fit check counts, and the rebalancer's policy (the live proof
with the real descheduler is test_rebalancing.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal

import pytest
from mock_stack import EVERY_KEY

import stack_config
from components.forecast import (
    GIB,
    Demand,
    Inventory,
    NodeRoom,
    Placement,
    PodSize,
    forecast,
    simulate_rollout,
    surge_rooms,
)
from components.gateway import GATEWAY_POD_LABEL, Gateway
from components.rebalancer import descheduler_policy, object_name
from components.rollout import Availability, budget_of, rolling_strategy
from components.scheduling import Policy
from preflight.inventory import pod_requests
from stack_config.problems import ConfigError

ONE_CORE = PodSize(Decimal(1), Decimal(GIB))


def room(name: str, pods_of_one_core: int) -> NodeRoom:
    return NodeRoom(name, Decimal(pods_of_one_core), Decimal(pods_of_one_core) * GIB, 110)


def gateway(**keys: object) -> Gateway:
    values = {**EVERY_KEY[0], "gateways": [{"name": "gw", **keys}]}
    return stack_config.parse("test", values, list(stack_config.SECRET_KEYS)).gateway.gateways[0]


def test_a_budget_as_pods_rounds_as_the_pdb_and_the_deployment_do() -> None:
    assert Availability(min_available="50%", max_unavailable=None).unavailable(5) == 2  # 3 stay (rounded up)
    assert Availability(min_available=4, max_unavailable=None).unavailable(5) == 1
    assert Availability(max_unavailable="30%").unavailable(5) == 1  # a Deployment rounds down
    assert Availability(min_available="60%", max_unavailable=None).as_rolling_unavailable(5) == "40%"
    assert Availability(min_available=3, max_unavailable=None).as_rolling_unavailable(5) == "2"
    assert budget_of(gateway()).pdb_spec("gw") == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {GATEWAY_POD_LABEL: "gw"}},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


def test_the_rollout_surges_only_into_ecs_room_and_replaces_in_place_otherwise() -> None:
    gw = gateway(replicaCount=5, minReplicas=2, maxReplicas=10)
    assert rolling_strategy(gw, Policy.PREFER_ECS, 1).as_spec() == {
        "rollingMaxSurge": "1",
        "rollingMaxUnavailable": "1",
    }
    assert rolling_strategy(gw, Policy.PREFER_ECS, 0).max_surge == "0"
    assert rolling_strategy(gw, Policy.PREFER_ECS, None).max_surge == "0"  # room not read: no surge
    assert rolling_strategy(gw, Policy.PREFER_ECS, 50).max_surge == "5"  # never more than replicas
    # A budget that allows no pod down: one surges, so that the rollout can move at all.
    strict = gateway(replicaCount=5, minReplicas=2, maxReplicas=10, maxUnavailable="10%")  # 0 of 5
    assert rolling_strategy(strict, Policy.PREFER_ECS, 0).pods(5) == (1, 0)
    # Under ecs-only a surge pod could only wait Pending: the rollout replaces one in place.
    assert rolling_strategy(strict, Policy.ECS_ONLY, 0).pods(5) == (0, 1)
    # Set by the operator: theirs, not derived.
    own = gateway(replicaCount=5, minReplicas=2, maxReplicas=10, extraSpec={"rollingMaxSurge": "25%"})
    assert not rolling_strategy(own, Policy.PREFER_ECS, 3).derived
    assert not rolling_strategy(gw, Policy.PREFER_ECI, 3).derived


def test_a_count_budget_is_worked_out_at_the_fewest_pods_and_a_rollout_never_takes_all_down() -> None:
    # minAvailable 3 of replicaCount 5 would be 2 down; the HPA may run only 4: 1 down.
    gw = gateway(replicaCount=5, minReplicas=4, maxReplicas=10, minAvailable=3)
    assert rolling_strategy(gw, Policy.PREFER_ECS, 0).as_spec()["rollingMaxUnavailable"] == "1"
    # One pod: the PDB lets a drain take it (a budget of none would block every drain), a
    # rollout never does. It surges, to ECI under prefer-ecs, or waits Pending under ecs-only.
    alone = gateway(replicaCount=1, minReplicas=1, maxReplicas=3)
    assert budget_of(alone).pdb_spec("gw")["maxUnavailable"] == 1
    assert rolling_strategy(alone, Policy.PREFER_ECS, 0).pods(1) == (1, 0)
    assert rolling_strategy(alone, Policy.ECS_ONLY, 0).pods(1) == (1, 0)
    assert rolling_strategy(gateway(maxUnavailable="05%"), Policy.PREFER_ECS, 0).max_unavailable == "5%"
    # Read from the clusters: an autoscaler that runs 5 of 1..5 now rolls 1 down at a time.
    scaled_out = gateway(replicaCount=5, minReplicas=1, maxReplicas=5)
    assert rolling_strategy(scaled_out, Policy.ECS_ONLY, 0).pods(5) == (1, 0)
    assert rolling_strategy(scaled_out, Policy.ECS_ONLY, 0, pods_now=5).pods(5) == (0, 1)
    # None down, as extraSpec says, is kept under ecs-only too: one surges and waits Pending.
    kept = gateway(extraSpec={"rollingMaxUnavailable": 0})
    assert rolling_strategy(kept, Policy.ECS_ONLY, 0).pods(5) == (1, 0)


def test_where_a_rollout_ends_with_asms_surge_and_with_the_derived_one() -> None:
    """The issue's inventory: ECS room for 6, 5 replicas all on ECS."""
    demand = Demand("ns/gw", ONE_CORE, 5, 5, 5)

    def rollout(policy: Policy, free: int, strategy: tuple[int, int]) -> Placement:
        """From 5 on node a with room for `free` more, under (surge, unavailable) `strategy`."""
        rooms = [room("a", free)]
        return simulate_rollout(
            policy, rooms, replace(demand, strategy=strategy), {"a": 5}, 0, eci=policy is Policy.PREFER_ECS
        )

    surge_all = rollout(Policy.PREFER_ECS, 1, (5, 1))
    assert (surge_all.ecs, surge_all.eci) == (1, 4)  # what was measured: 1 + 4
    derived = rollout(Policy.PREFER_ECS, 1, (1, 1))
    # Surging into the one free place, two replaced at a time: the pods made while the two old
    # ones terminate find no room (the next ones get it); the rebalancer moves those two back.
    assert (derived.ecs, derived.eci) == (3, 2)
    one_at_a_time = rollout(Policy.PREFER_ECS, 1, (1, 0))
    assert (one_at_a_time.ecs, one_at_a_time.eci) == (4, 1)
    # ecs-only with no room and nothing allowed down: the surge pod waits, so does the rollout.
    stuck = rollout(Policy.ECS_ONLY, 0, (1, 0))
    # The old pods keep serving where they run; the one new pod waits.
    assert (stuck.ecs, stuck.pending) == (5, 1) and "waits" in stuck.reason
    # One down at a time: each new pod waits for the room its old one frees, then gets it.
    in_place = rollout(Policy.ECS_ONLY, 0, (0, 1))
    assert (in_place.ecs, in_place.eci, in_place.pending) == (5, 0, 0)


def test_the_forecast_shows_the_rollout_and_the_drift_from_the_pods_now() -> None:
    nodes = (room("a", 6),)  # room without the gateway's own pods
    inventory = Inventory(
        nodes,
        "test",
        live=True,
        running={"ns/gw": {"ecs": 1, "eci": 4}},
        own_on_nodes={"ns/gw": {"a": 1}},
        eci_ages={"ns/gw": (30.0, 600.0, None, 5.0)},
    )
    result = forecast(
        Policy.PREFER_ECS,
        inventory,
        [Demand("ns/gw", ONE_CORE, 5, 5, 5, strategy=(1, 1))],
        eci=True,
        ecs_first=True,
    )
    gw = result.gateways[0]
    assert (gw.at_replicas.ecs, gw.at_replicas.eci) == (5, 0)
    assert gw.drift is not None and gw.drift.movable == 4 and gw.drift.cpu == 4
    assert gw.drift.longest == 600.0
    assert any("4 of its 4 pod(s) on ECI could run on ECS now for up to 10 min" in w for w in result.warnings)
    assert gw.after_rollout is not None and gw.after_rollout.ecs == 5
    assert "running now" in result.table() and "after rollout" in result.table()


def test_a_rollout_replaces_the_pods_the_autoscaler_runs_now_not_replica_count() -> None:
    inventory = Inventory(
        (room("a", 6),),
        "test",
        live=True,
        running={"ns/gw": {"ecs": 4, "eci": 4}},  # the HPA runs 8 of 2..10, replicaCount 5
        own_on_nodes={"ns/gw": {"a": 4}},
    )
    demand = Demand("ns/gw", ONE_CORE, 2, 5, 10, strategy=(0, 1))
    gw = forecast(Policy.PREFER_ECS, inventory, [demand], eci=True, ecs_first=True).gateways[0]
    assert gw.after_rollout is not None
    assert (gw.after_rollout.replicas, gw.after_rollout.ecs, gw.after_rollout.eci) == (8, 5, 3)


def test_gateways_sharing_nodes_are_bounded_each_as_if_alone() -> None:
    nodes = (room("a", 4),)
    demands = [Demand("ns/first", ONE_CORE, 3, 3, 3), Demand("ns/second", ONE_CORE, 3, 3, 3)]
    result = forecast(Policy.PREFER_ECS, Inventory(nodes, "t", live=True), demands, eci=True, ecs_first=True)
    first, second = result.gateways
    # Whichever gateway's pods come first takes the room: each gets up to 3 on ECS, and as
    # much as 2 of its 3 on ECI (not the none it would have alone). Neither is exact.
    for gateway in (first, second):
        assert not gateway.exact and gateway.at_replicas.ecs == 3 and gateway.eci_cpu_at_max == 2
    # What a rollout may surge without leaving ECS, shared: none left after both at replicaCount.
    assert surge_rooms(Policy.PREFER_ECS, Inventory((room("a", 8),), "t", live=True), demands, True) == {
        "ns/first": 2,
        "ns/second": 0,
    }


def test_the_fit_check_counts_every_requested_resource_and_pod_level_requests() -> None:
    pod = {
        "spec": {
            "resources": {"requests": {"cpu": "2", "memory": "1Gi"}},  # pod-level: wins for cpu, memory
            "containers": [{"resources": {"requests": {"cpu": "500m", "ephemeral-storage": "10Gi"}}}],
            "overhead": {"memory": "128Mi"},
        }
    }
    assert pod_requests(pod) == {
        "cpu": Decimal(2),
        "memory": Decimal(GIB) + 128 * 2**20,
        "ephemeral-storage": 10 * GIB,
    }
    disk_bound = NodeRoom("a", Decimal(8), 32 * GIB, 110, (("ephemeral-storage", 25 * GIB),))
    size = PodSize(Decimal(1), GIB, (("ephemeral-storage", 10 * GIB),))
    assert disk_bound.holds(size) == 2
    assert disk_bound.minus(size, 3).short_of(size) == "Insufficient ephemeral-storage"
    assert gateway(resources={"requests": {"cpu": "1", "ephemeral-storage": "2Gi"}}).pod_size.other == (
        ("ephemeral-storage", 2 * GIB),
    )


def test_the_rebalancer_evicts_only_a_gateways_pods_that_fit_an_ecs_node() -> None:
    gateways = [gateway(), gateway(name="other")]
    policy = descheduler_policy(gateways, {"mykey4pod": "asmgateway", "b": "c"}, 3)
    assert policy["maxNoOfPodsToEvictTotal"] == 3
    profiles = {p["name"]: p for p in policy["profiles"]}
    assert set(profiles) == {"istio-system-gw", "istio-system-other"}
    evictor, plugin = profiles["istio-system-other"]["pluginConfig"]
    assert evictor["args"]["labelSelector"] == {"matchLabels": {GATEWAY_POD_LABEL: "other"}}
    assert evictor["args"]["nodeFit"] and evictor["args"]["nodeSelector"] == "b=c,mykey4pod=asmgateway"
    # A gateway without a budget is never a profile's.
    unbudgeted = gateway(name="loose", podDisruptionBudget=False)
    assert [p["name"] for p in descheduler_policy([unbudgeted], {"a": "b"}, 1)["profiles"]] == []
    assert plugin["args"]["namespaces"] == {"include": ["istio-system"]}
    assert plugin["args"]["nodeAffinityType"] == ["preferredDuringSchedulingIgnoredDuringExecution"]


def test_each_stack_names_its_own_rebalancer_with_a_valid_name() -> None:
    names = {
        stack: object_name("asm-serverless-gateway", stack)
        for stack in ("prod", "prod_a", "prod.a", "Prod-", "org/asm-serverless-gateway/staging", "_" * 40)
    }
    assert len(set(names.values())) == len(names), names
    for name in names.values():
        assert len(name) <= 52 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert names["prod"].startswith("asm-gateway-rebalancer-prod-")
    # The same stack of another project is another rebalancer.
    assert object_name("another-project", "prod") != names["prod"]


@pytest.mark.parametrize(
    ("keys", "key", "words"),
    [
        ({"minReplicas": 2, "minAvailable": 2}, "minAvailable", "keeps all 2 pods"),
        ({"minReplicas": 1, "minAvailable": "50%"}, "minAvailable", "keeps all 1 pods"),
        ({"maxUnavailable": 0}, "maxUnavailable", "is 0"),
        ({"maxUnavailable": "00%"}, "maxUnavailable", "is 0%"),  # as Kubernetes reads it
        ({"minAvailable": 0}, "minAvailable", "lets all 2 pods"),
        ({"maxUnavailable": "100%"}, "maxUnavailable", "lets all 2 pods"),
        (
            {"minReplicas": 1, "maxUnavailable": "60%"},
            "maxUnavailable",
            "lets all 2 pods (minReplicas scaled to 2)",
        ),
        ({"autoscaleEnabled": False, "replicaCount": 3, "maxUnavailable": 3}, "maxUnavailable", "lets all 3"),
        (
            {
                "replicaCount": 3,
                "minReplicas": 3,
                "maxReplicas": 6,
                "minAvailable": 2,
                "clusterOverrides": {"c-second": {"minReplicas": 2}},
            },
            "minAvailable",
            "keeps all 2 pods (minReplicas in clusterOverrides.c-second)",
        ),
        ({"maxUnavailable": "ten"}, "maxUnavailable", "a percentage such as 50%"),
        ({"minAvailable": 1, "maxUnavailable": 1}, "maxUnavailable", "cannot be set with minAvailable"),
    ],
)
def test_a_budget_that_blocks_every_eviction_is_refused(
    keys: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as error:
        gateway(**keys)
    assert f"gateways[0].{key}" in str(error.value) and words in str(error.value)
