"""Several clusters in one stack, under Pulumi mocks at the provider boundary (no cloud, no cluster).

What the stack declares for a mesh of two ACK clusters: one IstioGateway per
gateway listing both, per-cluster resources named by cluster id on their own
providers, the config refused (naming the cluster) where the clusters cannot
run one gateway, and the preflight and forecast per cluster.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pulumi
import pytest
import yaml
from mock_stack import ROOT, TEST_KUBECONFIG, config_values_of, run_stack

import stack_config
from components.node_marks import NODE_MARKS, TOLERATION_ROLLOUT
from components.stack import Observed, ServerlessGateway
from preflight.needs import stack_needs
from stack_config import reference

MARKS = {"labels": {"mykey4pod": "asmgateway"}, "taints": [{"key": "mykey", "effect": "NoSchedule"}]}
SECRETS = ["clusterKubeconfig", "meshKubeconfig", "clusters"]


def two_clusters() -> dict[str, Any]:
    return {
        "clusterId": "c-east",
        "clusterKubeconfig": TEST_KUBECONFIG,
        "meshKubeconfig": TEST_KUBECONFIG,
        "ecsCapacity": {"mode": "existingNodes", "nodes": ["east-0", "east-1"], **copy.deepcopy(MARKS)},
        "virtualNodes": {"mode": "existing", "eciVswitchIds": ["vsw-east"]},
        "clusters": [
            {
                "clusterId": "c-west",
                "clusterKubeconfig": TEST_KUBECONFIG,
                # Marks left out: the first cluster's.
                "ecsCapacity": {"mode": "existingNodes", "nodes": ["west-0"]},
                "virtualNodes": {"mode": "existing", "eciVswitchIds": ["vsw-west"]},
            }
        ],
        "gateways": [
            {
                "name": "ingressgateway",
                "maxReplicas": 10,
                "clusterOverrides": {"c-west": {"minReplicas": 1, "replicaCount": 1, "maxReplicas": 4}},
            }
        ],
    }


def assert_refused(change: Any, expected: str) -> None:
    """The two-cluster config, changed, is refused with a problem that starts with `expected`."""
    values = two_clusters()
    change(values)
    errors = errors_of(values)
    assert any(e.startswith(expected) for e in errors), errors


def errors_of(values: dict[str, Any], secrets: list[str] = SECRETS) -> list[str]:
    with pytest.raises(stack_config.ConfigError) as raised:
        stack_config.parse("prod", values, secrets)
    return [f"{p.path}: {p.message}" for p in raised.value.problems]


def test_one_istio_gateway_lists_every_cluster_with_the_overrides_of_the_one_that_differs() -> None:
    deployment = run_stack("prod", two_clusters(), SECRETS)
    (gateway,) = deployment.of_type("kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway")
    spec = gateway.inputs["spec"]
    assert spec["clusterIds"] == ["c-east", "c-west"]
    assert spec["overrides"] == {"c-west": {"replicaCount": 1, "minReplicas": 1, "maxReplicas": 4}}
    assert spec["maxReplicas"] == 10


def test_each_cluster_gets_its_own_marks_on_its_own_provider_and_the_first_keeps_its_names() -> None:
    deployment = run_stack("prod", two_clusters(), SECRETS)
    marks = {r.name: r for r in deployment.of_type(NODE_MARKS)}
    assert set(marks) == {
        "asm-gateway-ecs-marks",
        "asm-gateway-ecs-taints-marks",
        "asm-gateway-c-west-ecs-marks",
        "asm-gateway-c-west-ecs-taints-marks",
    }
    assert marks["asm-gateway-c-west-ecs-marks"].inputs["nodes"] == ["west-0"]
    assert marks["asm-gateway-ecs-marks"].inputs["nodes"] == ["east-0", "east-1"]
    # The same marks everywhere: one set of rules is right in both clusters.
    assert {r.inputs["labels"]["mykey4pod"] for r in marks.values()} == {"asmgateway"}
    east, west = marks["asm-gateway-ecs-marks"].provider, marks["asm-gateway-c-west-ecs-marks"].provider
    assert "asm-gateway-node-marks" in east and "asm-gateway-c-west-node-marks" in west
    profiles = {
        r.name: r.inputs["data"]["vSwitchIds"]
        for r in deployment.of_type("kubernetes:core/v1:ConfigMapPatch")
    }
    assert profiles == {
        "asm-gateway-virtual-nodes-eci-profile": "vsw-east",
        "asm-gateway-c-west-virtual-nodes-eci-profile": "vsw-west",
    }


def test_the_gateway_waits_for_the_labels_in_every_cluster_and_the_taints_wait_for_the_gateway() -> None:
    deployment = run_stack("prod", two_clusters(), SECRETS)
    gateway = deployment.one("kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway")
    marks = {r.name: r for r in deployment.of_type(NODE_MARKS)}
    admit = {marks[n].urn for n in ("asm-gateway-ecs-marks", "asm-gateway-c-west-ecs-marks")}
    assert admit <= set(gateway.dependencies)
    for name in ("asm-gateway-ecs-taints-marks", "asm-gateway-c-west-ecs-taints-marks"):
        assert gateway.urn in marks[name].dependencies


def test_a_new_mesh_takes_every_cluster() -> None:
    values = two_clusters()
    values.pop("meshKubeconfig")
    values.update(region="cn-hangzhou", mesh={"mode": "create", "vpcId": "vpc-1", "vswitchId": "vsw-1"})
    mesh = run_stack("prod", values, SECRETS).one("alicloud:servicemesh/serviceMesh:ServiceMesh")
    assert mesh.inputs["clusterIds"] == ["c-east", "c-west"]


def test_errors_name_the_cluster_by_position_and_id() -> None:
    values = two_clusters()
    values["clusters"][0]["ecsCapacity"]["nodes"] = ["Bad_Node"]
    (error,) = errors_of(values)
    assert error.startswith("clusters[0].ecsCapacity.nodes[0] (cluster c-west): ")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda v: v["clusters"].append(copy.deepcopy(v["clusters"][0])),
            "clusters[1].clusterId (cluster c-west): 'c-west' is already listed at clusters[0].clusterId",
        ),
        (
            lambda v: v["clusters"][0].update(clusterId="c-east"),
            "clusters[0].clusterId (cluster c-east): 'c-east' is already listed at clusterId",
        ),
        (
            lambda v: v["clusters"][0]["ecsCapacity"].update(labels={"other": "label"}),
            "clusters[0].ecsCapacity.labels (cluster c-west): differ from ecsCapacity.labels",
        ),
        (
            lambda v: v["clusters"][0]["ecsCapacity"].update(taints=[]),
            "clusters[0].ecsCapacity.taints (cluster c-west): differ from ecsCapacity.taints",
        ),
        (
            lambda v: v["clusters"][0].update(ecsCapacity={"mode": "none"}),
            "clusters[0].ecsCapacity.mode (cluster c-west): is none, but prefer-ecs needs ECS nodes",
        ),
        (
            lambda v: v["clusters"][0].update(virtualNodes={"mode": "none"}),
            "clusters[0].virtualNodes.mode (cluster c-west): is none, but prefer-ecs needs virtual nodes",
        ),
        (
            lambda v: v["clusters"][0].pop("clusterKubeconfig"),
            "clusters[0].clusterKubeconfig (cluster c-west): is required to label and taint existing nodes"
            " (or set renderYamlTo)",
        ),
        (
            lambda v: v["gateways"][0]["clusterOverrides"].update({"c-wset": {"replicaCount": 2}}),
            "gateways[0].clusterOverrides.c-wset: is not a cluster of this stack (clusterId,"
            " clusters[].clusterId); did you mean 'c-west'",
        ),
        (
            lambda v: v["gateways"][0]["clusterOverrides"]["c-west"].update(maxReplicas=1, minReplicas=2),
            "gateways[0].clusterOverrides.c-west.minReplicas: is 2, above maxReplicas 1",
        ),
    ],
)
def test_clusters_that_cannot_run_one_gateway_are_refused_before_anything_changes(
    change: Any, expected: str
) -> None:
    assert_refused(change, expected)


def test_a_listed_kubeconfig_in_plain_text_is_refused_with_the_path_to_set_it_by() -> None:
    errors = errors_of(two_clusters(), ["clusterKubeconfig", "meshKubeconfig"])
    assert errors == [
        "clusters[0].clusterKubeconfig (cluster c-west): holds a credential and must be set as a secret:"
        " pulumi config set --secret --path 'clusters[0].clusterKubeconfig'"
    ]


def test_the_preflight_asks_each_cluster_for_its_own_nodes_under_its_own_key() -> None:
    config = stack_config.parse("prod", two_clusters(), SECRETS)
    needs = {n.api: n for n in stack_needs(config.gateway)}
    assert set(needs) == {"cluster", "cluster-c-west", "mesh"}
    assert needs["cluster-c-west"].config_key == "clusters[0].clusterKubeconfig"
    assert needs["cluster-c-west"].nodes == ("west-0",)
    assert needs["cluster"].nodes == ("east-0", "east-1")
    assert set(config.kubeconfigs) == {"clusterKubeconfig", "meshKubeconfig", "clusters[0].clusterKubeconfig"}


def test_the_forecast_is_per_cluster_with_that_clusters_overrides() -> None:
    values = two_clusters()
    values["ecsCapacity"]["instanceType"] = "ecs.g7.xlarge"
    values["clusters"][0]["ecsCapacity"]["instanceType"] = "ecs.g7.2xlarge"
    forecasts = stack_config.parse("prod", values, SECRETS).gateway.forecasts()
    assert list(forecasts) == ["c-east", "c-west"]
    east, west = (forecasts[c].gateways[0] for c in ("c-east", "c-west"))
    assert (east.at_max.replicas, west.at_max.replicas) == (10, 4)
    # 2 x 4 vCPU / 16 GiB against 1 x 8 vCPU / 32 GiB, 2-CPU pods (the default requests).
    assert (east.at_max.ecs, west.at_max.ecs) == (4, 4)
    assert (east.at_max.eci, west.at_max.eci) == (6, 0)


EXAMPLE = ROOT / "stacks" / "examples" / "Pulumi.two-clusters.yaml"


def test_the_two_cluster_example_declares_both_clusters_and_renders_each_to_its_own_folder() -> None:
    values, secrets = config_values_of(EXAMPLE)
    deployment = run_stack("local", values, secrets)
    (gateway,) = deployment.of_type("kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway")
    assert gateway.inputs["spec"]["clusterIds"] == ["c-local", "c-local-west"]
    patched = {r.inputs["metadata"]["name"] for r in deployment.of_type("kubernetes:core/v1:NodePatch")}
    assert patched == {"gateway-ecs-0", "gateway-ecs-1", "gateway-west-0"}
    folders = {
        r.inputs.get("renderYamlToDirectory") for r in deployment.of_type("pulumi:providers:kubernetes")
    }
    assert folders == {"rendered/cluster", "rendered/cluster-c-local-west", "rendered/mesh"}


def test_the_two_cluster_example_passes_the_stack_files_schema() -> None:
    schema = jsonschema.Draft202012Validator(reference.stack_file_schema())
    assert [e.message for e in schema.iter_errors(yaml.safe_load(EXAMPLE.read_text()))] == []


def pools_of_two_clusters() -> dict[str, Any]:
    pool = {"mode": "nodePool", "nodePool": {"instanceTypes": ["ecs.g7.xlarge"], "vswitchIds": ["vsw-1"]}}
    values = two_clusters()
    values["region"] = "cn-hangzhou"
    values["ecsCapacity"] = {**copy.deepcopy(MARKS), **pool}
    values["clusters"][0]["ecsCapacity"] = copy.deepcopy(pool)
    return values


@pytest.mark.parametrize(
    ("serving", "pool_first"),
    [
        # The mesh says the gateway runs in c-east only: c-west joins, its pool comes first.
        (frozenset({"c-east"}), {"c-east": False, "c-west": True}),
        # Both serve: each pool waits for the gateway (tolerate before taint).
        (frozenset({"c-east", "c-west"}), {"c-east": False, "c-west": False}),
        # The mesh was not read: the safe order everywhere.
        (None, {"c-east": False, "c-west": False}),
    ],
)
def test_a_joining_clusters_pool_is_made_before_the_gateway_lists_it(
    serving: frozenset[str] | None, pool_first: dict[str, bool]
) -> None:
    def program() -> ServerlessGateway:
        config = stack_config.load()
        options = stack_config.provider_options(config, "asm-gateway")
        return ServerlessGateway("asm-gateway", config.gateway, options, Observed(serving_clusters=serving))

    deployment = run_stack("prod", pools_of_two_clusters(), SECRETS, program=program)
    gateway = deployment.one("kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway")
    pools = {r.inputs["clusterId"]: r for r in deployment.of_type("alicloud:cs/nodePool:NodePool")}
    gates = {r.name: r for r in deployment.of_type(TOLERATION_ROLLOUT)}
    for cluster_id, first in pool_first.items():
        prefix = "asm-gateway" if cluster_id == "c-east" else f"asm-gateway-{cluster_id}"
        gate = gates[f"{prefix}-ecs-rollout"]
        assert (pools[cluster_id].urn in gateway.dependencies) is first, cluster_id
        # A joining cluster's pool still waits for no gateway pod to be in its taints' way.
        assert gate.urn in pools[cluster_id].dependencies
        assert (gateway.urn in gate.dependencies) is not first, cluster_id


def test_a_listed_kubeconfig_in_plain_text_beside_a_secret_one_is_found_in_the_stack_file(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine holds `clusters` as one secret once any entry is: only the file tells them apart.
    listed: list[dict[str, Any]] = [
        {"clusterId": "c-a", "clusterKubeconfig": {"secure": "v1:abc"}},
        {"clusterId": "c-b", "clusterKubeconfig": "apiVersion: v1"},
    ]
    (tmp_path / "Pulumi.prod.yaml").write_text(
        yaml.safe_dump({"config": {stack_config.LISTED_CLUSTERS: listed}})
    )
    monkeypatch.setattr(stack_config, "STACK_CONFIG_DIR", tmp_path)
    flat = {stack_config.LISTED_CLUSTERS: json.dumps([{**c, "clusterKubeconfig": "k"} for c in listed])}
    with pytest.raises(stack_config.ConfigError) as raised:
        stack_config.from_config_json("prod", {k: {"value": v, "secret": True} for k, v in flat.items()})
    assert [(p.path, p.message.split(";")[0]) for p in raised.value.problems] == [
        ("clusters[1].clusterKubeconfig (cluster c-b)", "holds a credential in plain text in the stack file")
    ]


def test_extra_spec_overrides_still_pass_through_and_cluster_overrides_join_them() -> None:
    values = two_clusters()
    annotations = {"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec": "slb.s2.small"}
    values["gateways"][0]["extraSpec"] = {"overrides": {"c-west": {"serviceAnnotations": annotations}}}
    (gateway,) = run_stack("prod", values, SECRETS).of_type(
        "kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway"
    )
    assert gateway.inputs["spec"]["overrides"] == {
        "c-west": {"serviceAnnotations": annotations, "replicaCount": 1, "minReplicas": 1, "maxReplicas": 4}
    }
    # A one-cluster stack file of the version before, with its overrides in extraSpec, is unchanged.
    one = two_clusters()
    one.pop("clusters")
    one["gateways"][0] = {
        "name": "ingressgateway",
        "extraSpec": {"overrides": {"c-east": {"replicaCount": 3}}},
    }
    (gateway,) = run_stack("prod", one, SECRETS).of_type(
        "kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway"
    )
    assert gateway.inputs["spec"]["overrides"] == {"c-east": {"replicaCount": 3}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda v: v["gateways"][0].update(extraSpec={"overrides": {"c-west": {"maxReplicas": 6}}}),
            "gateways[0].clusterOverrides.c-west.maxReplicas: is also set in extraSpec.overrides.c-west",
        ),
        # The gateway's own replicaCount (2) is the cluster's where the override leaves it out.
        (
            lambda v: v["gateways"][0].update(
                replicaCount=2, clusterOverrides={"c-west": {"minReplicas": 5}}
            ),
            "gateways[0].clusterOverrides.c-west.replicaCount: is 2, outside minReplicas..maxReplicas"
            " (5..10)",
        ),
        (
            lambda v: v["clusters"][0].update(clusterId="C West"),
            "clusters[0].clusterId: 'C West' must be a DNS label",
        ),
    ],
)
def test_overrides_and_listed_ids_that_cannot_work_are_refused(change: Any, expected: str) -> None:
    assert_refused(change, expected)


def test_a_problem_in_the_first_clusters_marks_is_reported_once_not_again_where_they_are_taken() -> None:
    values = two_clusters()
    values["ecsCapacity"]["taints"][0]["key"] = "bad key"
    assert [e.split(":")[0] for e in errors_of(values)] == ["ecsCapacity.taints[0].key"]


def test_a_kubeconfig_of_the_wrong_shape_is_refused_without_repeating_it() -> None:
    values = two_clusters()
    values["clusters"][0]["clusterKubeconfig"] = {"token": "SECRET-TOKEN-123"}
    errors = errors_of(values)
    assert errors and not any("SECRET-TOKEN-123" in e for e in errors), errors


def test_a_retiring_cluster_leaves_the_gateway_and_keeps_its_marks_and_its_place_in_a_new_mesh() -> None:
    values = two_clusters()
    values["clusters"][0]["retiring"] = True
    values.pop("meshKubeconfig")
    values.update(region="cn-hangzhou", mesh={"mode": "create", "vpcId": "vpc-1", "vswitchId": "vsw-1"})
    deployment = run_stack("prod", values, SECRETS)
    (gateway,) = deployment.of_type("kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway")
    assert gateway.inputs["spec"]["clusterIds"] == ["c-east"]
    assert "overrides" not in gateway.inputs["spec"]
    mesh = deployment.one("alicloud:servicemesh/serviceMesh:ServiceMesh")
    assert mesh.inputs["clusterIds"] == ["c-east", "c-west"]
    assert "asm-gateway-c-west-ecs-marks" in {r.name for r in deployment.of_type(NODE_MARKS)}
    forecasts = stack_config.parse("prod", values, SECRETS).gateway.forecasts()
    assert list(forecasts) == ["c-east"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # A key of the listed cluster's own, next to the marks it takes from the first.
        (lambda v: v["clusters"][0]["ecsCapacity"].update(labelsX={}), "clusters[0].ecsCapacity.labelsX"),
        # The first cluster has no ECS nodes (eci-only): a listed one with nodes must name its labels.
        (
            lambda v: v.update(placementPolicy="eci-only", ecsCapacity={"mode": "none"}),
            "clusters[0].ecsCapacity.labels (cluster c-west): must name at least one label",
        ),
        (
            lambda v: v["gateways"][0].update(extraSpec={"overrides": {"c-west": "x"}}),
            "gateways[0].extraSpec.overrides: must map cluster ids to objects",
        ),
    ],
)
def test_a_problem_of_a_listed_cluster_is_never_lost(change: Any, expected: str) -> None:
    assert_refused(change, expected)


@pytest.mark.parametrize(
    "change",
    [
        lambda v: v["clusters"].append([{"clusterKubeconfig": "tok-SECRET123"}]),
        lambda v: v.update(clusters="apiVersion: v1 tok-SECRET123 kind: Config"),
        lambda v: v["clusters"][0].update(clusterKubeconfig={"token": "tok-SECRET123"}),
    ],
)
def test_what_holds_a_kubeconfig_is_never_repeated_in_an_error(change: Any) -> None:
    values = two_clusters()
    change(values)
    errors = errors_of(values)
    assert errors and not any("SECRET123" in e for e in errors), errors


def test_a_retiring_cluster_holds_up_no_gateway_change_in_the_others() -> None:
    values = pools_of_two_clusters()
    values["clusters"][0]["retiring"] = True

    def program() -> ServerlessGateway:
        config = stack_config.load()
        options = stack_config.provider_options(config, "asm-gateway")
        # The mesh says no gateway runs in c-west (it retires): still no pool before the gateways.
        observed = Observed(serving_clusters=frozenset({"c-east"}))
        return ServerlessGateway("asm-gateway", config.gateway, options, observed)

    deployment = run_stack("prod", values, SECRETS, program=program)
    gateway = deployment.one("kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway")
    west = {r.urn for r in deployment.resources if "asm-gateway-c-west" in r.name}
    assert west and not west & set(gateway.dependencies)


def test_a_listed_clusters_node_marks_provider_names_its_kubeconfig_by_id_not_position() -> None:
    values = two_clusters()
    providers = {
        r.name: r for r in run_stack("prod", values, SECRETS).of_type("pulumi:providers:asm-node-marks")
    }
    assert providers["asm-gateway-c-west-node-marks"].inputs["kubeconfigSource"] == (
        "the clusterKubeconfig of cluster c-west"
    )
    assert providers["asm-gateway-node-marks"].inputs["kubeconfigSource"] == "clusterKubeconfig"


def test_a_pools_no_execute_taint_without_the_clusters_kubeconfig_is_warned_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    values = pools_of_two_clusters()
    values["ecsCapacity"]["taints"].append({"key": "drain", "effect": "NoExecute"})
    values["clusters"][0].pop("clusterKubeconfig")
    values["clusters"][0]["virtualNodes"] = {"mode": "existing"}  # nothing to write there
    run_stack("prod", values, SECRETS)
    about = [w for w in warned if "NoExecute" in w and "without" in w]
    assert len(about) == 1 and about[0].startswith("cluster c-west: without clusters[0].clusterKubeconfig")


def test_a_listed_clusters_marks_left_empty_in_yaml_are_the_first_clusters() -> None:
    values = two_clusters()
    values["clusters"][0]["ecsCapacity"].update(labels=None, taints=None)
    west = stack_config.parse("prod", values, SECRETS).gateway.clusters[1]
    assert dict(west.ecs.labels) == {"mykey4pod": "asmgateway"} and len(west.ecs.taints) == 1
