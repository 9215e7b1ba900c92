"""Adopting an ACK node pool that exists, under Pulumi mocks at the provider boundary.

Nothing reaches Alibaba Cloud: the mocks answer the provider's read and import
of the pool with the state a hand-made pool has (`POOL`). What is checked is
what the stack declares: an import by id through the stack's own provider, the
marks added to the pool's own (ACK puts them on its nodes in place), every
other input left to the pool, `retainOnDelete` so that `destroy` leaves it,
and the refusals that come before anything changes.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import pulumi
import pulumi_alicloud as alicloud
import pytest
from mock_stack import NODE_POOL_TYPE, TEST_KUBECONFIG, Registered, run_stack

import stack_config
from components.node_marks import TOLERATION_ROLLOUT
from components.node_pool import (
    NODE_POOL_ID_LABEL,
    PoolMarks,
    node_pool_inputs_but_marks,
    plan_adoption,
)
from components.scheduling import Taint
from node_marks_plugin.marks import Owner
from preflight import pool_nodes_marked_by_the_stack
from preflight.permissions import ram_policy

POOL_ID = "np-0a1b2c3d"
IMPORT_ID = f"c-prod:{POOL_ID}"
# A pool made in the console: a label of its own, three nodes, its own disk and types.
POOL = {
    "clusterId": "c-prod",
    "nodePoolName": "made-by-hand",
    "instanceTypes": ["ecs.g7.xlarge"],
    "vswitchIds": ["vsw-a"],
    "desiredSize": "3",
    "systemDiskCategory": "cloud_auto",
    "systemDiskSize": 200,
    "labels": [{"key": "team", "value": "edge"}],
    "taints": [],
}
SECRETS = ["clusterKubeconfig", "meshKubeconfig"]
TYPES = "asm-serverless-gateway:index"
PROJECT_TYPE = f"pulumi:pulumi:Stack${TYPES}:ServerlessGateway"


def adopting(**ecs: Any) -> dict[str, Any]:
    return {
        "clusterId": "c-prod",
        "region": "cn-hangzhou",
        "clusterKubeconfig": TEST_KUBECONFIG,
        "meshKubeconfig": TEST_KUBECONFIG,
        "ecsCapacity": {
            "mode": "existingNodePool",
            "nodePoolId": POOL_ID,
            "labels": {"mykey4pod": "asmgateway"},
            "taints": [{"key": "mykey", "value": "myvalue", "effect": "NoSchedule"}],
            **ecs,
        },
        "virtualNodes": {"mode": "existing"},
        "gateways": [{"name": "ingressgateway"}],
    }


def the_pool(resources: list[Registered]) -> Registered:
    (pool,) = [r for r in resources if r.type == NODE_POOL_TYPE and not r.read]
    return pool


def test_an_existing_pool_is_imported_by_id_and_given_only_the_gateways_marks_under_mocks() -> None:
    deployment = run_stack("prod", adopting(), SECRETS, cloud={IMPORT_ID: POOL})
    pool = the_pool(deployment.resources)
    assert pool.import_id == IMPORT_ID
    # The pool's own label stays; the guide's label and taint are added; ACK puts them on its nodes.
    assert pool.inputs == {
        "clusterId": "c-prod",
        "labels": [{"key": "mykey4pod", "value": "asmgateway"}, {"key": "team", "value": "edge"}],
        "taints": [{"key": "mykey", "value": "myvalue", "effect": "NoSchedule"}],
        "updateNodes": True,
    }
    # Every other setting is the pool's: no size, type, disk or network of the stack's, ever.
    for kept in ("instanceTypes", "vswitchIds", "desiredSize", "scalingConfig", "systemDiskCategory"):
        assert kept in pool.ignore_changes
    assert not {"labels", "taints", "updateNodes", "clusterId"} & set(pool.ignore_changes)
    # `destroy`, or the pool leaving the config, releases it.
    assert pool.retain_on_delete
    # Named by its id: another id adopts that pool and releases this one, never replaces it.
    assert pool.name.endswith(POOL_ID)
    # A pool this stack made (`mode: nodePool`) and now adopts by its id is the same resource.
    made = f"urn:pulumi:prod::{stack_config.PROJECT}::{PROJECT_TYPE}${TYPES}:GatewayNodePool::asm-gateway-ecs"
    assert pool.alias_parents == [made]
    # Read and imported through the stack's own Alibaba Cloud provider, never a default one.
    (read,) = [r for r in deployment.resources if r.read]
    assert read.import_id == IMPORT_ID
    for used in (pool, read):
        assert "$pulumi:providers:alicloud::asm-gateway-alicloud::" in used.provider


def test_the_adopted_pool_changes_after_its_nodes_gateway_pods_tolerate_the_taints_under_mocks() -> None:
    deployment = run_stack("prod", adopting(), SECRETS, cloud={IMPORT_ID: POOL})
    gate = deployment.one(TOLERATION_ROLLOUT)
    # The pool's nodes carry its id before they carry the stack's labels.
    assert gate.inputs["nodeLabels"] == {NODE_POOL_ID_LABEL: POOL_ID}
    assert gate.urn in the_pool(deployment.resources).dependencies


def test_the_marks_the_pool_had_are_recorded_once_and_exported_for_undoing_under_mocks() -> None:
    deployment = run_stack("prod", adopting(), SECRETS, cloud={IMPORT_ID: POOL})
    (stash,) = deployment.of_type("pulumi:index:Stash")
    assert POOL_ID in stash.name
    assert stash.inputs["input"] == {"labels": {"team": "edge"}, "taints": []}
    assert stash.ignore_changes == ["input"]  # only the first value counts: no change on later runs
    assert deployment.outputs["pool_marks_before"] == {"labels": {"team": "edge"}, "taints": []}


def test_a_pool_label_of_its_own_that_the_stack_would_change_is_refused_under_mocks() -> None:
    pool = {**POOL, "labels": [{"key": "mykey4pod", "value": "batch"}]}
    registered: list[Registered] = []
    with pytest.raises(Exception, match=r"ecsCapacity\.labels sets mykey4pod=asmgateway.*mykey4pod=batch"):
        run_stack("prod", adopting(), SECRETS, cloud={IMPORT_ID: pool}, registered=registered)
    assert [r for r in registered if r.type == NODE_POOL_TYPE and not r.read] == []


def test_a_pool_that_does_not_exist_fails_on_its_read_before_any_change_under_mocks() -> None:
    registered: list[Registered] = []
    with pytest.raises(Exception, match="does not exist"):
        run_stack("prod", adopting(), SECRETS, cloud={}, registered=registered)
    assert [r for r in registered if r.type == NODE_POOL_TYPE and not r.read] == []


def test_a_stack_made_pool_is_not_imported_nor_retained_under_mocks() -> None:
    values = adopting()
    values["ecsCapacity"] = {
        **{k: v for k, v in values["ecsCapacity"].items() if k not in ("mode", "nodePoolId")},
        "mode": "nodePool",
        "nodePool": {"instanceTypes": ["ecs.g7.xlarge"], "vswitchIds": ["vsw-a"]},
    }
    pool = the_pool(run_stack("prod", values, SECRETS).resources)
    assert pool.import_id == ""
    assert not pool.retain_on_delete


# -- pure: what the stack sets on the pool ------------------------------------------------

TAINT = Taint("mykey", "myvalue", "NoSchedule")
DECLARED = PoolMarks({"mykey4pod": "asmgateway"}, (TAINT,))


def test_plan_keeps_the_pools_own_marks_and_names_the_taints_the_gateway_does_not_tolerate() -> None:
    own = PoolMarks({"team": "edge"}, (Taint("gpu", "", "NoSchedule"),))
    plan = plan_adoption(own, own, DECLARED, "ecsCapacity")
    assert plan.marks == PoolMarks(
        {"team": "edge", "mykey4pod": "asmgateway"}, (Taint("gpu", "", "NoSchedule"), TAINT)
    )
    assert plan.untolerated == (Taint("gpu", "", "NoSchedule"),)
    assert plan.labels_left == {} and plan.taints_removed == ()


def test_plan_takes_off_a_stale_taint_and_leaves_a_stale_label() -> None:
    """An earlier config's taint (another value, another effect) would keep the gateway off the
    pool or evict it; an earlier label keeps no pod away."""
    before = PoolMarks({}, ())
    stale = (Taint("mykey", "v0", "NoSchedule"), Taint("mykey", "myvalue", "NoExecute"))
    live = PoolMarks({"old": "x", "mykey4pod": "asmgateway"}, stale)
    plan = plan_adoption(before, live, DECLARED, "ecsCapacity")
    assert plan.marks.taints == (TAINT,)
    assert plan.taints_removed == tuple(sorted(stale))
    assert plan.marks.labels == {"old": "x", "mykey4pod": "asmgateway"}
    assert plan.labels_left == {"old": "x"}


def test_a_pool_mark_changed_in_the_console_since_adoption_is_no_longer_refused() -> None:
    """The refusal's own advice: change the pool's mark first. The record keeps the old value."""
    before = PoolMarks({"mykey4pod": "batch"}, ())
    with pytest.raises(ValueError, match="mykey4pod=batch"):
        plan_adoption(before, before, DECLARED, "ecsCapacity")
    changed = PoolMarks({"mykey4pod": "asmgateway"}, ())
    assert plan_adoption(before, changed, DECLARED, "ecsCapacity").marks.labels == {"mykey4pod": "asmgateway"}


def test_a_taint_without_an_effect_is_kept_as_the_pool_has_it() -> None:
    own = PoolMarks.of_live_pool([], [{"key": "legacy", "value": "x"}])
    plan = plan_adoption(own, own, DECLARED, "ecsCapacity")
    assert Taint("legacy", "x", "") in plan.marks.taints


def test_plan_refuses_to_change_a_taint_the_pool_had_naming_the_key() -> None:
    before = PoolMarks({}, (Taint("mykey", "theirs", "NoSchedule"),))
    with pytest.raises(ValueError, match=r"clusters\[0\]\.ecsCapacity\.taints sets mykey=myvalue:NoSchedule"):
        plan_adoption(before, before, DECLARED, "clusters[0].ecsCapacity")


def test_the_inputs_left_to_the_pool_are_every_input_of_the_sdk_but_the_marks() -> None:
    names = pulumi._types.input_type_py_to_pulumi_names(alicloud.cs.NodePoolArgs)
    every = set(names.values())
    assert len(inspect.signature(alicloud.cs.NodePoolArgs.__init__).parameters) - 1 == len(every)
    read_back_twice = {"name", "nodeCount", "platform", "securityGroupId"}
    assert set(node_pool_inputs_but_marks()) == every - {"clusterId", "labels", "taints", "updateNodes"} - (
        read_back_twice
    )


# The provider's own rules (terraform-provider-alicloud's node pool schema) on inputs that
# its read fills: kept together from an import, each pair fails its Check.
EXACTLY_ONE_OR_CONFLICTING = [
    ("nodePoolName", "name"),
    ("desiredSize", "nodeCount"),
    ("scalingConfig", "nodeCount"),
]


@pytest.mark.parametrize(("current", "deprecated"), EXACTLY_ONE_OR_CONFLICTING)
def test_no_pair_of_inputs_the_provider_refuses_together_is_kept_from_the_import(
    current: str, deprecated: str
) -> None:
    kept = set(node_pool_inputs_but_marks())
    assert current in kept and deprecated not in kept


# -- config and permissions ---------------------------------------------------------------


def errors_of(values: dict[str, Any]) -> list[str]:
    with pytest.raises(stack_config.ConfigError) as raised:
        stack_config.parse("prod", values, SECRETS)
    return [f"{p.path}: {p.message}" for p in raised.value.problems]


def test_a_pool_id_that_is_not_one_is_refused_naming_the_key() -> None:
    errors = errors_of(adopting(nodePoolId="my-pool"))
    assert any(e.startswith("ecsCapacity.nodePoolId: 'my-pool'") for e in errors), errors


def test_adopting_a_pool_needs_the_clusters_kubeconfig() -> None:
    values = adopting()
    del values["clusterKubeconfig"]
    errors = errors_of(values)
    assert any(
        e.startswith(f"clusterKubeconfig: is required to adopt node pool {POOL_ID}") for e in errors
    ), errors


def test_the_ram_policy_for_an_adopted_pool_can_neither_create_nor_delete_a_pool() -> None:
    config = stack_config.parse("prod", copy.deepcopy(adopting()), SECRETS)
    policy = ram_policy(config.gateway)
    assert policy is not None
    actions = set(policy["Statement"][0]["Action"])
    assert "cs:ModifyClusterNodePool" in actions
    assert not {"cs:CreateClusterNodePool", "cs:DeleteClusterNodepool", "cs:RemoveClusterNodes"} & actions


def test_adopting_a_pool_whose_nodes_the_stack_marked_itself_is_refused_until_handed_over() -> None:
    """`existingNodes` before, on the pool's nodes: the end of the adopting `up` would delete the
    node marks and take off what ACK had just put on."""
    config = stack_config.parse("prod", copy.deepcopy(adopting()), SECRETS)
    owner = Owner(stack_config.PROJECT, "prod")

    def pool_node(name: str, annotations: dict[str, str]) -> dict[str, Any]:
        labels = {NODE_POOL_ID_LABEL: POOL_ID}
        return {"metadata": {"name": name, "labels": labels, "annotations": annotations}}

    class PoolNodes:
        """Stands in for the preflight's node reads: the nodes a label selector finds."""

        def __init__(self, nodes: list[dict[str, Any]]) -> None:
            self.nodes = nodes

        def selected(self, labels: dict[str, str]) -> list[dict[str, Any]]:
            assert labels == {NODE_POOL_ID_LABEL: POOL_ID}, "read by the pool's label only"
            return self.nodes

    nodes = [pool_node("a", {owner.key: "{}"}), pool_node("b", {}), pool_node("c", {owner.legacy_key: "{}"})]
    (problem,) = pool_nodes_marked_by_the_stack(
        config, config.gateway.clusters[0], {"client": object(), "node_reads": PoolNodes(nodes)}, owner
    )
    assert problem.startswith(f"ecsCapacity: node(s) a, c of node pool {POOL_ID}")
    release = (
        f"scripts/node-marks.sh release --kubeconfig <admin kubeconfig> --stack {owner.name}"
        f" --selector {NODE_POOL_ID_LABEL}={POOL_ID} --yes"
    )
    assert release in problem
    unmarked = [pool_node("a", {}), pool_node("b", {})]
    seen = {"client": object(), "node_reads": PoolNodes(unmarked)}
    assert pool_nodes_marked_by_the_stack(config, config.gateway.clusters[0], seen, owner) == []
