"""Every stack file under stacks/, run through the real program with Pulumi mocks."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from mock_stack import (
    ROOT,
    STACK_NAMES,
    TEST_KUBECONFIG,
    Deployment,
    config_values_of,
    operator_secrets,
    run_stack,
    run_stack_file,
)
from pulumi.runtime.rpc import is_rpc_secret

from components.providers import KubeconfigError, require_kubeconfig
from components.scheduling import VIRTUAL_NODE_TAINT

NODE_POOL = "alicloud:cs/nodePool:NodePool"
ADDON = "alicloud:cs/kubernetesAddon:KubernetesAddon"
MESH = "alicloud:servicemesh/serviceMesh:ServiceMesh"
ISTIO_GATEWAY = "kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway"
NODE_PATCH = "kubernetes:core/v1:NodePatch"
CONFIG_MAP_PATCH = "kubernetes:core/v1:ConfigMapPatch"
K8S_PROVIDER = "pulumi:providers:kubernetes"
ALICLOUD_PROVIDER = "pulumi:providers:alicloud"
TOP = "asm-serverless-gateway:index:ServerlessGateway"


def stack_file(stack: str) -> dict[str, Any]:
    return config_values_of(ROOT / "stacks" / f"Pulumi.{stack}.yaml")[0]


@pytest.fixture(scope="module", params=STACK_NAMES)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """Each stack of `stacks/` under mocks: a failure names the stack."""
    stack: str = request.param
    return run_stack_file(stack)


def test_every_child_is_parented_inside_the_component(deployment: Deployment) -> None:
    top = deployment.one(TOP)
    assert top.parent.endswith("::pulumi:pulumi:Stack::asm-serverless-gateway-" + deployment.stack)
    for resource in deployment.resources:
        if resource is top or resource.type == ALICLOUD_PROVIDER:
            # The cloud provider is made beside the credentials, outside
            # the component, and handed to it (see the alias test).
            continue
        # Walk up: every resource reaches the top component through its parents.
        chain = resource
        while chain is not top:
            assert chain.parent, f"{resource.name} has no parent"
            chain = deployment.by_urn(chain.parent)


def test_every_cloud_and_kubernetes_resource_names_an_explicit_provider(
    deployment: Deployment,
) -> None:
    provider_urns = {r.urn for r in deployment.resources if r.type.startswith("pulumi:providers:")}
    for resource in deployment.resources:
        if resource.custom and not resource.type.startswith("pulumi:providers:"):
            urn = resource.provider.split("::")[0:4]
            assert "::".join(urn) in provider_urns, (
                f"{resource.name} uses {resource.provider or 'a default provider'}"
            )


def test_each_stack_gets_the_rules_its_policy_and_pool_call_for(deployment: Deployment) -> None:
    stack = deployment.stack
    values = stack_file(stack)
    labels = values["ecsCapacity"]["labels"]
    pool_term = {
        "matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(labels.items())]
    }
    gateways = deployment.of_type(ISTIO_GATEWAY)
    assert len(gateways) == len(values["gateways"])
    for resource in gateways:
        spec = resource.inputs["spec"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0] == pool_term
        preferred = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert preferred[0]["weight"] == values.get("preferredWeight", 80)
        assert preferred[1]["weight"] == values.get("overflowWeight", 20)
        expected = {(t["key"], t["value"], t["effect"]) for t in values["ecsCapacity"]["taints"]}
        expected.add((VIRTUAL_NODE_TAINT.key, VIRTUAL_NODE_TAINT.value, VIRTUAL_NODE_TAINT.effect))
        assert {(t["key"], t["value"], t["effect"]) for t in spec["tolerations"]} == expected
        assert spec["clusterIds"] == [values["clusterId"]]
        assert spec["gatewayType"] == "ingress"


def test_gateway_specs_carry_each_gateways_settings_in_camel_case(deployment: Deployment) -> None:
    stack = deployment.stack
    declared = stack_file(stack)["gateways"]
    by_name = {r.inputs["metadata"]["name"]: r for r in deployment.of_type(ISTIO_GATEWAY)}
    for gateway in declared:
        resource = by_name[gateway["name"]]
        spec = resource.inputs["spec"]
        assert resource.inputs["apiVersion"] == "istio.alibabacloud.com/v1beta1"
        assert resource.inputs["metadata"]["namespace"] == gateway.get("namespace", "istio-system")
        assert spec["replicaCount"] == gateway["replicaCount"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (
            gateway["minReplicas"],
            gateway["maxReplicas"],
        )
        assert spec["cpu"] == {"targetAverageUtilization": 80}
        assert spec["podAnnotations"] == gateway.get("podAnnotations", {})
        assert spec["serviceAnnotations"] == gateway.get("serviceAnnotations", {})
        if "ports" in gateway:
            assert [p["port"] for p in spec["ports"]] == [p["port"] for p in gateway["ports"]]
        if "resources" in gateway:
            assert spec["resources"] == gateway["resources"]
        assert all(not any(c == "_" for c in key) for key in spec)


def test_node_pool_stacks_declare_a_labelled_tainted_pool_that_updates_its_nodes(
    deployment: Deployment,
) -> None:
    stack = deployment.stack
    ecs = stack_file(stack)["ecsCapacity"]
    if ecs["mode"] != "nodePool":
        assert deployment.of_type(NODE_POOL) == []
        return
    pool = deployment.one(NODE_POOL).inputs
    spec = ecs["nodePool"]
    assert pool["nodePoolName"] == spec["name"]
    assert pool["instanceTypes"] == spec["instanceTypes"]
    assert pool["vswitchIds"] == spec["vswitchIds"]
    assert pool["labels"] == [{"key": k, "value": v} for k, v in sorted(ecs["labels"].items())]
    assert pool["taints"] == sorted(ecs["taints"], key=lambda t: (t["key"], t["value"], t["effect"]))
    assert pool["updateNodes"] is True
    assert "name" not in pool and "nodeCount" not in pool
    if "autoscaling" in spec:
        assert "desiredSize" not in pool
        assert pool["scalingConfig"]["enable"] is True
        assert pool["scalingConfig"]["minSize"] == spec["autoscaling"]["minSize"]
        assert pool["scalingConfig"]["maxSize"] == spec["autoscaling"]["maxSize"]
        assert deployment.one(NODE_POOL).ignore_changes == ["desiredSize"]
    else:
        assert pool["desiredSize"] == str(spec["desiredSize"])


def test_existing_node_stacks_label_and_taint_each_named_node(deployment: Deployment) -> None:
    stack = deployment.stack
    ecs = stack_file(stack)["ecsCapacity"]
    patches = deployment.of_type(NODE_PATCH)
    if ecs["mode"] != "existingNodes":
        assert patches == []
        return
    assert sorted(p.inputs["metadata"]["name"] for p in patches) == sorted(ecs["nodes"])
    for patch in patches:
        assert patch.inputs["metadata"]["labels"] == ecs["labels"]
        assert patch.inputs["spec"]["taints"] == ecs["taints"]
    assert deployment.outputs["node_names"] == ecs["nodes"]


def test_virtual_node_add_on_cleans_up_and_gets_the_eci_network(deployment: Deployment) -> None:
    stack = deployment.stack
    virtual = stack_file(stack)["virtualNodes"]
    assert deployment.outputs["virtual_node_mode"] == virtual["mode"]
    if virtual["mode"] != "addon":
        assert deployment.of_type(ADDON) == []
        return
    addon = deployment.one(ADDON).inputs
    assert addon["name"] == "ack-virtual-node"
    assert addon["cleanupCloudResources"] is True
    assert addon["clusterId"] == stack_file(stack)["clusterId"]
    # No guessed add-on config keys: the ECI network goes into the eci-profile.
    assert "config" not in addon or not addon["config"]
    profile = deployment.one(CONFIG_MAP_PATCH)
    assert profile.inputs["metadata"]["name"] == "eci-profile"
    assert profile.inputs["metadata"]["namespace"] == "kube-system"
    assert profile.inputs["data"] == {
        "vSwitchIds": ",".join(virtual["eciVswitchIds"]),
        "securityGroupId": virtual["eciSecurityGroupId"],
    }
    (cluster,) = [
        p for p in deployment.of_type("pulumi:providers:kubernetes") if p.name == "asm-gateway-cluster"
    ]
    assert profile.provider.startswith(cluster.urn)


def test_a_created_mesh_holds_the_cluster_and_its_kubeconfig_stays_secret(
    deployment: Deployment,
) -> None:
    stack = deployment.stack
    mesh_mode = stack_file(stack)["mesh"]["mode"]
    mesh_providers = [p for p in deployment.of_type(K8S_PROVIDER) if p.name.endswith("-mesh")]
    assert len(mesh_providers) == 1
    provider = mesh_providers[0].inputs
    if mesh_mode == "create":
        mesh = deployment.one(MESH)
        assert mesh.inputs["clusterIds"] == [stack_file(stack)["clusterId"]]
        assert "kubeconfig" in mesh.additional_secret_outputs
        assert deployment.outputs["mesh_id"] == f"{mesh.name}-id"
    else:
        assert deployment.of_type(MESH) == []
        assert deployment.outputs["mesh_id"] is None
    if "kubeconfig" in provider:
        assert is_rpc_secret(provider["kubeconfig"]), "a kubeconfig reached state in plain text"
        assert TEST_KUBECONFIG not in str({k: v for k, v in provider.items() if k != "kubeconfig"})
    else:
        assert provider["renderYamlToDirectory"].startswith(stack_file(stack)["renderYamlTo"])


def test_prod_protects_what_holds_traffic_or_capacity(deployment: Deployment) -> None:
    stack = deployment.stack
    protect = stack_file(stack).get("protect", False)
    for resource in deployment.resources:
        if resource.type in (NODE_POOL, ADDON, MESH, ISTIO_GATEWAY):
            assert resource.protect is protect, f"{stack}: {resource.name}"
    assert stack_file("prod")["protect"] is True


def test_local_stack_needs_no_cloud() -> None:
    local = run_stack_file("local")
    assert not [r for r in local.resources if r.type.startswith("alicloud:") or r.type == ALICLOUD_PROVIDER]


def test_pulumi_yaml_declares_no_key_of_the_stack_a_second_time() -> None:
    # Every key and its default is declared once, in the config model.
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert [key for key in project["config"] if not key.startswith("pulumi:")] == []
    assert project["stackConfigDir"] == "stacks"
    assert project["config"]["pulumi:disable-default-providers"]["value"] == ["*"]


def test_overrides_change_the_rules_in_place_of_the_stack_file() -> None:
    deployment = run_stack_file(
        "staging",
        {"placementPolicy": "prefer-eci", "preferredWeight": 60, "overflowWeight": 40},
    )
    spec = deployment.one(ISTIO_GATEWAY).inputs["spec"]
    preferred = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [p["weight"] for p in preferred] == [60, 40]
    assert preferred[0]["preference"]["matchExpressions"][0]["key"] == "type"


def test_a_taint_changed_on_the_pool_changes_the_gateways_toleration() -> None:
    values = stack_file("dev")
    ecs = dict(values["ecsCapacity"])
    ecs["taints"] = [{"key": "dedicated", "value": "asm", "effect": "NoExecute"}]
    deployment = run_stack_file("dev", {"ecsCapacity": ecs})
    pool = deployment.one(NODE_POOL).inputs
    tolerations = deployment.one(ISTIO_GATEWAY).inputs["spec"]["tolerations"]
    assert pool["taints"] == [{"key": "dedicated", "value": "asm", "effect": "NoExecute"}]
    assert {"key": "dedicated", "operator": "Equal", "value": "asm", "effect": "NoExecute"} in tolerations
    assert not [t for t in tolerations if t["key"] == "mykey"]


def test_ack_resource_policy_is_rendered_per_gateway_from_the_same_node_groups() -> None:
    deployment = run_stack_file("prod", {"ackResourcePolicy": True, "clusterKubeconfig": TEST_KUBECONFIG})
    policies = deployment.of_type("kubernetes:scheduling.alibabacloud.com/v1alpha1:ResourcePolicy")
    assert sorted(p.inputs["metadata"]["name"] for p in policies) == ["ingressgateway", "intranet-gateway"]
    cluster = next(p for p in deployment.of_type(K8S_PROVIDER) if p.name.endswith("-cluster"))
    for policy in policies:
        assert policy.provider.startswith(cluster.urn)
        name = policy.inputs["metadata"]["name"]
        assert policy.inputs["spec"]["selector"] == {"asm-serverless-gateway/gateway": name}
        gateway = next(g for g in deployment.of_type(ISTIO_GATEWAY) if g.inputs["metadata"]["name"] == name)
        assert gateway.inputs["spec"]["podLabels"] == policy.inputs["spec"]["selector"]
        assert policy.inputs["spec"]["units"] == [
            {"resource": "ecs", "nodeSelector": {"mykey4pod": "asmgateway"}},
            {"resource": "eci"},
        ]
    assert (
        run_stack_file("prod").of_type("kubernetes:scheduling.alibabacloud.com/v1alpha1:ResourcePolicy") == []
    )


def test_alicloud_credentials_in_config_stay_secret_on_the_provider() -> None:
    values, _ = config_values_of(ROOT / "stacks" / "Pulumi.dev.yaml")
    secrets = operator_secrets(values)
    values.update(secrets)
    deployment = run_stack("dev", values, secrets, alicloud={"accessKey": "AK-test", "secretKey": "SK-test"})
    provider = deployment.one(ALICLOUD_PROVIDER).inputs
    assert provider["region"] == "cn-hangzhou"
    assert is_rpc_secret(provider["accessKey"]) and is_rpc_secret(provider["secretKey"])


NODE_MARKS = "asm-node-marks:index:NodeMarks"
TOLERATION_ROLLOUT = "asm-node-marks:index:TolerationRollout"
NODE_MARKS_PROVIDER = "pulumi:providers:asm-node-marks"
GATEWAY_PODS = [
    {"namespace": "istio-system", "labelSelector": "asm-serverless-gateway/gateway=ingressgateway"}
]


def test_on_a_cluster_labels_go_on_before_the_gateways_and_taints_after_them() -> None:
    deployment = run_stack_file(
        "local", {"clusterKubeconfig": TEST_KUBECONFIG, "meshKubeconfig": TEST_KUBECONFIG}
    )
    assert deployment.of_type(NODE_PATCH) == []
    marks = deployment.of_type(NODE_MARKS)
    admit = next(m for m in marks if m.inputs["stage"] == "admit")
    restrict = next(m for m in marks if m.inputs["stage"] == "restrict")
    assert len(marks) == 2  # one per stage, however many nodes
    nodes = stack_file("local")["ecsCapacity"]["nodes"]
    assert admit.inputs["nodes"] == restrict.inputs["nodes"] == nodes
    gateway = deployment.one(ISTIO_GATEWAY)
    assert admit.urn in gateway.dependencies
    assert gateway.urn in restrict.dependencies
    assert restrict.inputs["gatewayPods"] == GATEWAY_PODS
    # The gateway tolerates the pool's taints under prefer-ecs: the wait is for those.
    assert restrict.inputs["gatewayTolerates"] == restrict.inputs["taints"] != []
    assert restrict.inputs["evictOtherPods"] is False
    # The kubeconfig is the provider's, once, a secret; no resource carries it.
    provider = deployment.one(NODE_MARKS_PROVIDER)
    assert is_rpc_secret(provider.inputs["kubeconfig"])
    assert all("kubeconfig" not in m.inputs for m in marks)
    assert admit.provider.startswith(provider.urn) and restrict.provider.startswith(provider.urn)


def test_under_eci_only_the_wait_is_for_no_toleration_of_the_ecs_taints() -> None:
    deployment = run_stack_file(
        "local",
        {
            "clusterKubeconfig": TEST_KUBECONFIG,
            "meshKubeconfig": TEST_KUBECONFIG,
            "placementPolicy": "eci-only",
        },
    )
    restrict = next(m for m in deployment.of_type(NODE_MARKS) if m.inputs["stage"] == "restrict")
    assert restrict.inputs["taints"] and restrict.inputs["gatewayTolerates"] == []


@pytest.mark.parametrize(("stack", "sees_the_cluster"), [("prod", False), ("dev", True)])
def test_a_node_pool_changes_after_the_gateways(stack: str, sees_the_cluster: bool) -> None:
    deployment = run_stack_file(stack)
    assert bool(deployment.of_type(NODE_MARKS_PROVIDER)) is sees_the_cluster
    gateways = {g.urn for g in deployment.of_type(ISTIO_GATEWAY)}
    pool = deployment.one(NODE_POOL)
    if sees_the_cluster:
        # ...and after the gateways' pods tolerate the pool's taints.
        gate = deployment.one(TOLERATION_ROLLOUT)
        assert gateways <= set(gate.dependencies)
        assert gate.urn in pool.dependencies
        assert gate.inputs["taints"] == stack_file(stack)["ecsCapacity"]["taints"]
        assert gate.inputs["nodeLabels"] == stack_file(stack)["ecsCapacity"]["labels"]
    else:
        assert deployment.of_type(TOLERATION_ROLLOUT) == []
        assert gateways <= set(pool.dependencies)


def test_letting_daemon_set_pods_be_evicted_reaches_both_waits_and_is_absent_when_not_set() -> None:
    dev = stack_file("dev")
    ecs = {**dev["ecsCapacity"], "evictDaemonSetPods": True}
    gate = run_stack_file("dev", {"ecsCapacity": ecs}).one(TOLERATION_ROLLOUT)
    assert gate.inputs["evictDaemonSetPods"] is True and gate.inputs["evictOtherPods"] is False
    # Unset, the input is left out, so a stack from before the key sees no change.
    assert "evictDaemonSetPods" not in run_stack_file("dev").one(TOLERATION_ROLLOUT).inputs
    local = stack_file("local")["ecsCapacity"]
    marks = run_stack_file(
        "local",
        {
            "clusterKubeconfig": TEST_KUBECONFIG,
            "meshKubeconfig": TEST_KUBECONFIG,
            "ecsCapacity": {**local, "evictDaemonSetPods": True},
        },
    ).of_type(NODE_MARKS)
    restrict = next(m for m in marks if m.inputs["stage"] == "restrict")
    assert restrict.inputs["evictDaemonSetPods"] is True


def test_the_cloud_provider_made_outside_the_component_keeps_its_urn() -> None:
    deployment = run_stack_file("dev")
    provider = deployment.one(ALICLOUD_PROVIDER)
    top = deployment.one(TOP)
    # Now a child of the stack, once of the component: the alias names the old parent.
    assert provider.parent.endswith("::pulumi:pulumi:Stack::asm-serverless-gateway-dev")
    assert provider.alias_parents == [top.urn]
    # ...and the component's cloud children still name it explicitly.
    pool = deployment.one(NODE_POOL)
    assert pool.provider.startswith(provider.urn)


@pytest.mark.parametrize("empty", ["", "  \n", None])
def test_an_empty_kubeconfig_is_an_error_naming_its_source_not_the_ambient_one(empty: str | None) -> None:
    check = require_kubeconfig("asm-gateway-mesh", "the mesh the stack created (mesh.mode: create)")
    with pytest.raises(KubeconfigError, match=r"mesh\.mode: create.*~/\.kube/config"):
        check(empty)
    assert check(TEST_KUBECONFIG) == TEST_KUBECONFIG


TOKEN = "tok-3f9a-RECOGNISABLE-7c21"
KEY = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tUkVDT0dOSVNBQkxF"


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        (f"clusters: [\n  users: {{token: {TOKEN}: : bad\n", "not valid YAML at line 2"),
        (f"users:\n- user:\n    token: {TOKEN}\n    client-key-data: {KEY}\n", "not a kubeconfig"),
        (f"{TOKEN} {KEY}", "not a kubeconfig"),
        (f"\tusers: [{{token: {TOKEN}}}]\n", "not valid YAML at line 1"),
    ],
)
def test_a_broken_kubeconfig_is_refused_by_what_is_wrong_never_by_what_it_holds(
    broken: str, says: str
) -> None:
    check = require_kubeconfig("asm-gateway-cluster", "clusterKubeconfig")
    with pytest.raises(KubeconfigError) as refused:
        check(broken)
    message = str(refused.value)
    assert says in message and "clusterKubeconfig" in message
    assert TOKEN not in message and KEY not in message and "RECOGNISABLE" not in message
