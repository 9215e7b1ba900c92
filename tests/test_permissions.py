"""What a stack needs of each API, and the permission documents generated from it (pure, no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import stack_config
from components.rebalancer import descheduler_rules, object_name
from preflight.__main__ import PROJECT_DIR, permissions
from preflight.needs import Access, stack_needs
from preflight.permissions import (
    PLACEHOLDER_SUBJECT,
    Subject,
    SubjectError,
    ram_policy,
    rbac_documents,
    role_name,
)

STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml")
    for p in (PROJECT_DIR / "stacks").glob("Pulumi.*.yaml")
)
KUBECONFIGS = {"clusterKubeconfig": "(set)", "meshKubeconfig": "(set)"}


def declare(**config: Any) -> stack_config.StackConfig:
    values = {
        "clusterId": "c-1",
        "region": "cn-hangzhou",
        "gateways": [{"name": "gw"}],
        **KUBECONFIGS,
        **config,
    }
    return stack_config.parse("test", values, secret_keys=KUBECONFIGS)


@pytest.mark.parametrize("stack", STACKS)
def test_the_committed_permission_documents_are_what_the_stack_files_generate(
    stack: str, tmp_path: Path
) -> None:
    permissions(stack, PLACEHOLDER_SUBJECT, tmp_path)
    committed = PROJECT_DIR / "permissions" / stack
    generated = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert generated == {p.name: p.read_text() for p in committed.iterdir()}, (
        f"permissions/{stack}/ is stale: run scripts/preflight.sh permissions --stack {stack}"
    )


def verbs(config: stack_config.StackConfig, api: str) -> set[str]:
    needs = {n.api: n for n in stack_needs(config.gateway)}
    return {a.describe() for a in needs[api].access} if api in needs else set()


def test_existing_nodes_need_reading_and_patching_nodes_and_listing_pods_everywhere() -> None:
    config = declare(ecsCapacity={"mode": "existingNodes", "nodes": ["n1"], "labels": {"a": "b"}})
    assert {"list nodes", "get nodes", "patch nodes", "list pods"} <= verbs(config, "cluster")
    assert stack_needs(config.gateway)[0].nodes == ("n1",)


def test_the_eci_profile_is_only_read_and_patched_by_name_and_must_exist() -> None:
    config = declare(
        ecsCapacity={"mode": "none"},
        placementPolicy="eci-only",
        virtualNodes={"mode": "existing", "eciVswitchIds": ["vsw-1"]},
    )
    cluster = verbs(config, "cluster")
    assert "patch configmaps/eci-profile in kube-system" in cluster
    assert not any(v.startswith(("create configmaps", "delete configmaps")) for v in cluster)
    (needs,) = [n for n in stack_needs(config.gateway) if n.api == "cluster"]
    assert [(o.namespace, o.name, o.unless) for o in needs.objects] == [("kube-system", "eci-profile", "")]


def test_an_add_on_the_stack_installs_may_make_the_eci_profile_later() -> None:
    config = declare(
        ecsCapacity={"mode": "none"},
        placementPolicy="eci-only",
        virtualNodes={"mode": "addon", "eciVswitchIds": ["vsw-1"], "eciSecurityGroupId": "sg-1"},
    )
    (needs,) = [n for n in stack_needs(config.gateway) if n.api == "cluster"]
    assert not needs.virtual_nodes
    assert needs.objects[0].unless == "the ack-virtual-node add-on this stack installs makes it"
    assert not any(a.resource == "nodes" for a in needs.access)


def test_a_mesh_the_stack_creates_needs_ram_actions_and_no_mesh_rbac() -> None:
    config = declare(
        ecsCapacity={"mode": "none"},
        placementPolicy="eci-only",
        virtualNodes={"mode": "existing"},
        mesh={"mode": "create", "name": "m", "vpcId": "vpc-1", "vswitchId": "vsw-1"},
    )
    assert verbs(config, "mesh") == set()
    policy = ram_policy(config.gateway)
    assert policy is not None
    assert "servicemesh:CreateServiceMesh" in policy["Statement"][0]["Action"]


def test_no_cloud_resource_no_ram_policy() -> None:
    config = declare(
        ecsCapacity={"mode": "none"}, placementPolicy="eci-only", virtualNodes={"mode": "existing"}
    )
    assert ram_policy(config.gateway) is None


def test_rbac_merges_verbs_per_kind_and_names_a_single_object() -> None:
    config = declare(
        ecsCapacity={"mode": "existingNodes", "nodes": ["n1"], "labels": {"a": "b"}},
        virtualNodes={"mode": "existing", "eciSecurityGroupId": "sg-1"},
        gateways=[{"name": "a"}, {"name": "b"}],
        rebalancer={"enabled": False},
    )
    subject = Subject.parse("serviceaccount:kube-system/deployer")
    documents = {
        (d["kind"], d["metadata"].get("namespace")): d
        for n in stack_needs(config.gateway)
        for d in rbac_documents(n, "prod", subject)
    }
    node_rule = next(r for r in documents[("ClusterRole", None)]["rules"] if r["resources"] == ["nodes"])
    assert node_rule["verbs"] == ["get", "list", "patch"]
    profile = next(r for r in documents[("Role", "kube-system")]["rules"] if r["resources"] == ["configmaps"])
    assert profile == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["eci-profile"],
        "verbs": ["get", "patch"],
    }
    assert {("Role", "istio-system"), ("RoleBinding", "istio-system")} <= set(documents)
    binding = documents[("ClusterRoleBinding", None)]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "deployer", "namespace": "kube-system"}]
    assert yaml.safe_load(yaml.safe_dump(binding)) == binding


def test_opting_out_keeps_the_rights_that_remove_what_an_earlier_up_made() -> None:
    on_ecs = {
        "placementPolicy": "prefer-ecs",
        "ecsCapacity": {"mode": "existingNodes", "nodes": ["n1"], "labels": {"a": "b"}},
        "virtualNodes": {"mode": "existing"},
    }
    removed = [
        declare(**on_ecs, rebalancer={"enabled": False}),
        declare(**{**on_ecs, "placementPolicy": "ecs-only"}),
        declare(**on_ecs, gateways=[{"name": "gw", "podDisruptionBudget": False}]),
    ]
    own = object_name(stack_config.PROJECT, "test")
    for config in removed:
        assert not config.gateway.rebalances
        (cluster, *_) = stack_needs(config.gateway)
        held = {(a.verb, a.resource, a.name) for a in cluster.access}
        for resource in ("clusterroles", "clusterrolebindings"):
            for name in (own, "asm-gateway-rebalancer"):
                assert {("get", resource, name), ("delete", resource, name)} <= held
            assert ("create", resource, None) not in held
    # A gateway without its budget any more: its old budget can still be deleted, not made.
    budgets = {
        a.verb
        for a in stack_needs(removed[2].gateway)[0].access
        if a.resource == "poddisruptionbudgets" and a.namespace == "istio-system"
    }
    assert budgets == {"get", "list", "watch", "delete"}


def test_the_rebalancers_grants_give_the_deployer_no_way_to_grant_more_than_it_holds() -> None:
    config = declare(
        placementPolicy="prefer-ecs",
        ecsCapacity={"mode": "existingNodes", "nodes": ["n1"], "labels": {"a": "b"}},
        virtualNodes={"mode": "existing"},
        rebalancer={"enabled": True},
    )
    subject = Subject.parse("serviceaccount:kube-system/deployer")
    rules = [
        rule
        for n in stack_needs(config.gateway)
        for d in rbac_documents(n, "prod", subject)
        if d["kind"] in ("ClusterRole", "Role")
        for rule in d["rules"]
    ]
    verbs = {verb for rule in rules for verb in rule["verbs"]}
    assert not verbs & {"escalate", "bind", "impersonate", "*"}
    rbac_rules = [r for r in rules if "rbac.authorization.k8s.io" in r["apiGroups"]]
    # Changing a role or binding: only this stack's rebalancer's own; deleting: that one, or the
    # one an earlier version made under its single name.
    own = object_name(stack_config.PROJECT, "test")
    for rule in rbac_rules:
        named = set(rule["verbs"]) - {"create", "list", "watch"}
        assert not named or set(rule["resourceNames"]) <= {own, "asm-gateway-rebalancer"}, rule
        assert "patch" not in named or rule["resourceNames"] == [own], rule
    # What the descheduler's role grants, the deployer holds itself (RBAC's rule for granting).
    held = {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    granted = {
        (g, r, v)
        for rule in descheduler_rules()
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted <= held


@pytest.mark.parametrize("text", ["deployer", "robot:x", "serviceaccount:deployer", "user:"])
def test_a_subject_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(SubjectError, match="subject"):
        Subject.parse(text)


def test_access_describes_itself_as_a_row_names_it() -> None:
    assert Access("get", "configmaps", namespace="kube-system", name="eci-profile").describe() == (
        "get configmaps/eci-profile in kube-system"
    )
    assert (
        Access("list", "istiogateways", "istio.alibabacloud.com").describe()
        == "list istiogateways.istio.alibabacloud.com"
    )


def test_the_engine_listing_parses_like_the_program() -> None:
    listing = {
        "asm-serverless-gateway:clusterId": {"value": "c-1", "secret": False},
        "asm-serverless-gateway:meshKubeconfig": {"value": "clusters: []", "secret": True},
        "asm-serverless-gateway:gateways": {
            "value": '[{"name":"gw"}]',
            "objectValue": [{"name": "gw"}],
            "secret": False,
        },
        "asm-serverless-gateway:ecsCapacity": {"value": '{"mode":"none"}', "secret": False},
        "asm-serverless-gateway:placementPolicy": {"value": "eci-only", "secret": False},
        "asm-serverless-gateway:virtualNodes": {"value": '{"mode":"existing"}', "secret": False},
    }
    config = stack_config.from_config_json("prod", listing)
    assert config.kubeconfigs == {"meshKubeconfig": "clusters: []"}
    assert [g.name for g in config.gateway.gateways] == ["gw"]


def test_role_names_are_valid_rbac_names_for_any_stack_name() -> None:
    assert role_name("myorg/Prod_EU", "cluster") == "asm-serverless-gateway-myorg-prod-eu-cluster"


def test_an_org_qualified_stack_finds_its_stack_file(tmp_path: Path) -> None:
    assert permissions("myorg/asm-serverless-gateway/prod", PLACEHOLDER_SUBJECT, tmp_path) == 0
    assert (
        "asm-serverless-gateway-myorg-asm-serverless-gateway-prod-cluster"
        in (tmp_path / "cluster-rbac.yaml").read_text()
    )
