"""The preflight against a real API server with RBAC on: each missing permission is one failed row.

The stack's identity is a service account whose roles are the ones the project
generates (`preflight.permissions`); taking one verb out of them at a time
must fail exactly the row for that verb and no other.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asm_standin
import kubernetes
import pytest
import yaml
from control_plane import ControlPlane, grant, node_update_policy, running_control_plane
from engine_project import ROOT, EngineProject
from node_inventory import NodeSpec, ack_virtual_node, create_nodes
from pulumi import automation as auto

import preflight
import stack_config
from components.gateway import GATEWAY_POD_LABEL
from components.rollout import disruption_budget_name
from components.scheduling import VIRTUAL_NODE_TAINT
from go_tools import toolchain
from preflight.checks import Result, Row, api_rows, failed, stack_owner, stack_rows, table
from preflight.needs import Access, ApiNeeds, ServedKind, stack_needs
from preflight.permissions import Subject, rbac_documents

pytestmark = pytest.mark.cluster

NAMESPACE = "istio-system"
NODES = ["edge-a", "edge-b"]
# Every kind of need at once: named nodes, virtual nodes, the eci-profile,
# ResourcePolicies on the cluster, IstioGateways on the mesh.
CONFIG: dict[str, Any] = {
    "clusterId": "c-preflight",
    "ecsCapacity": {
        "mode": "existingNodes",
        "nodes": NODES,
        "labels": {"mykey4pod": "asmgateway"},
        "taints": [{"key": "mykey", "value": "myvalue", "effect": "NoSchedule"}],
    },
    "virtualNodes": {"mode": "existing", "eciSecurityGroupId": "sg-preflight"},
    "mesh": {"mode": "existing"},
    "ackResourcePolicy": True,
    "gateways": [{"name": "ingressgateway"}],
}


@dataclass
class Cluster:
    plane: ControlPlane
    api: kubernetes.client.ApiClient
    accounts: int = 0

    def identity(self) -> tuple[Subject, str]:
        """A new service account, with no roles yet, and a kubeconfig with its token."""
        self.accounts += 1
        name = f"deployer-{self.accounts}"
        core = kubernetes.client.CoreV1Api(self.api)
        core.create_namespaced_service_account("kube-system", {"metadata": {"name": name}})
        token = core.create_namespaced_service_account_token(
            name, "kube-system", {"spec": {"expirationSeconds": 3600}}
        ).status.token
        kubeconfig = self.plane.kubeconfig
        kubeconfig["users"] = [{"name": name, "user": {"token": token}}]
        kubeconfig["contexts"] = [{"name": "local", "context": {"cluster": "local", "user": name}}]
        return Subject("ServiceAccount", name, "kube-system"), yaml.safe_dump(kubeconfig)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_control_plane(tmp_path_factory.mktemp("preflight")) as (plane, api):
        create_nodes(
            api, [NodeSpec(n, cpu="3900m", memory="14Gi") for n in NODES] + [ack_virtual_node("vk-0")]
        )
        asm_standin.install(api, NAMESPACE)
        kubernetes.client.CoreV1Api(api).create_namespaced_config_map(
            "kube-system", {"metadata": {"name": "eci-profile"}, "data": {"vpcId": "vpc-1"}}
        )
        yield Cluster(plane, api)


def declared(kubeconfig: str = "(set)") -> stack_config.StackConfig:
    keys = {"clusterKubeconfig": kubeconfig, "meshKubeconfig": kubeconfig}
    return stack_config.parse("prod", {**CONFIG, **keys}, secret_keys=keys)


def rows_once_settled(needs: ApiNeeds, kubeconfig: str, expect: int, timeout: float = 20) -> list[Row]:
    """The rows once RBAC has caught up with the grants (its cache lags them by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = api_rows(needs, kubeconfig)
        if len(failed(rows)) == expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_the_generated_roles_pass_every_row(cluster: Cluster) -> None:
    subject, kubeconfig = cluster.identity()
    config = declared(kubeconfig)
    every = stack_needs(config.gateway)
    assert [n.api for n in every] == ["cluster", "mesh"]
    for needs in every:
        grant(cluster.api, rbac_documents(needs, "prod", subject))
    rows: list[Row] = []
    for needs in every:
        rows += rows_once_settled(needs, kubeconfig, expect=0)
    print("\n" + table(rows))
    assert not failed(rows), table(rows)
    checks = {(r.api, r.check) for r in rows}
    assert ("cluster", "may patch nodes") in checks
    assert ("mesh", f"may create istiogateways.istio.alibabacloud.com in {NAMESPACE}") in checks
    assert ("cluster", "kube-system/eci-profile exists") in checks
    assert ("mesh", "serves IstioGateway (istio.alibabacloud.com/v1beta1)") in checks


def test_each_verb_taken_out_fails_its_own_row_and_no_other(cluster: Cluster) -> None:
    config = declared()
    print()
    for needs in stack_needs(config.gateway):
        for missing in needs.access:
            subject, kubeconfig = cluster.identity()
            short = replace(needs, access=tuple(a for a in needs.access if a != missing))
            grant(cluster.api, rbac_documents(short, f"without-{cluster.accounts}", subject))
            rows = rows_once_settled(needs, kubeconfig, expect=1)
            failures = failed(rows)
            print(f"  without {missing.describe():60s} -> {[f.check for f in failures]}")
            assert [f.check for f in failures] == [f"may {missing.describe()}"], table(rows)
            assert "denied" in failures[0].detail and missing.why in failures[0].detail


def test_what_is_missing_on_the_cluster_is_named(cluster: Cluster) -> None:
    subject, kubeconfig = cluster.identity()
    config = declared(kubeconfig)
    for needs in stack_needs(config.gateway):
        grant(cluster.api, rbac_documents(needs, "names", subject))
    cluster_needs = stack_needs(config.gateway)[0]
    rows_once_settled(cluster_needs, kubeconfig, expect=0)
    wrong = replace(
        cluster_needs,
        nodes=("edge-a", "edge-gone"),
        kinds=(ServedKind("scheduling.alibabacloud.com/v1alpha2", "ResourcePolicy", "resourcepolicies"),),
    )
    rows = {r.check: r for r in api_rows(wrong, kubeconfig)}
    print("\n" + table(list(rows.values())))
    assert rows["the named nodes exist"].result is Result.FAILED
    assert "missing: edge-gone (ecsCapacity.nodes)" in rows["the named nodes exist"].detail
    assert "not served" in rows["serves ResourcePolicy (scheduling.alibabacloud.com/v1alpha2)"].detail

    core = kubernetes.client.CoreV1Api(cluster.api)
    core.delete_namespaced_config_map("eci-profile", "kube-system")
    core.patch_node("vk-0", {"spec": {"taints": []}})
    try:
        rows = {r.check: r for r in api_rows(cluster_needs, kubeconfig)}
        assert rows["kube-system/eci-profile exists"].result is Result.FAILED
        assert "does not create it" in rows["kube-system/eci-profile exists"].detail
        assert "vk-0 lack the taint virtual-kubelet.io/provider" in rows["virtual nodes exist"].detail
    finally:
        core.create_namespaced_config_map("kube-system", {"metadata": {"name": "eci-profile"}})
        core.patch_node("vk-0", {"spec": {"taints": [VIRTUAL_NODE_TAINT.as_node_taint()]}})


def test_an_unreachable_or_refused_api_is_one_row_that_says_so(cluster: Cluster, tmp_path: Path) -> None:
    config = declared()
    needs = stack_needs(config.gateway)[0]
    unreachable = cluster.plane.kubeconfig
    unreachable["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    refused = cluster.plane.kubeconfig
    refused["users"][0]["user"]["token"] = "not-a-token"
    anonymous = cluster.plane.kubeconfig
    anonymous["users"][0]["user"] = {}
    cases = {
        "cannot be reached": yaml.safe_dump(unreachable),
        "its credentials were not sent": yaml.safe_dump(anonymous),
        "401 Unauthorized": yaml.safe_dump(refused),
        "not valid YAML at line 1": "clusters: [x: : y\n",
    }
    for says, kubeconfig in cases.items():
        rows = api_rows(needs, kubeconfig)
        assert len(rows) == 1 and rows[0].result is Result.FAILED, table(rows)
        assert says in rows[0].detail, rows[0].detail
    rows = stack_rows(stack_needs(config.gateway), {"clusterKubeconfig": yaml.safe_dump(unreachable)})
    assert [(r.api, r.result) for r in rows] == [("cluster", Result.FAILED), ("mesh", Result.NOT_RUN)]


def test_a_budget_of_another_owner_over_the_gateways_pods_stops_the_stack(cluster: Cluster) -> None:
    """Istio's installs make one (`istio-ingressgateway`, minAvailable 1): a second budget of the
    stack's would make every eviction of those pods fail."""
    core = kubernetes.client.CoreV1Api(cluster.api)
    policy = kubernetes.client.PolicyV1Api(cluster.api)
    labels = {GATEWAY_POD_LABEL: "ingressgateway", "app": "istio-ingressgateway"}
    pod = {
        "metadata": {"name": "ingressgateway-0", "labels": labels},
        "spec": {"containers": [{"name": "envoy", "image": "envoy"}]},
    }
    core.create_namespaced_pod(NAMESPACE, pod)
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["istio-ingressgateway"]}]}
    policy.create_namespaced_pod_disruption_budget(
        NAMESPACE,
        {"metadata": {"name": "istio-ingressgateway"}, "spec": {"minAvailable": 1, "selector": selector}},
    )
    admin = yaml.safe_dump(cluster.plane.kubeconfig)
    try:
        with pytest.raises(preflight.PreflightError) as refused:
            preflight.require(declared(admin))
        message = str(refused.value)
        print("\n" + message)
        assert "PodDisruptionBudget istio-ingressgateway of another owner" in message
        assert "gateways[0].podDisruptionBudget: false" in message
        # Keeping theirs: the stack goes on.
        keys = {"clusterKubeconfig": admin, "meshKubeconfig": admin}
        theirs = {**CONFIG, "gateways": [{"name": "ingressgateway", "podDisruptionBudget": False}], **keys}
        preflight.require(stack_config.parse("prod", theirs, secret_keys=keys))
        # The stack's own budget alone is no conflict.
        policy.delete_namespaced_pod_disruption_budget("istio-ingressgateway", NAMESPACE)
        policy.create_namespaced_pod_disruption_budget(
            NAMESPACE,
            {
                "metadata": {"name": disruption_budget_name("ingressgateway")},
                "spec": {
                    "maxUnavailable": 1,
                    "selector": {"matchLabels": {GATEWAY_POD_LABEL: "ingressgateway"}},
                },
            },
        )
        preflight.require(declared(admin))
    finally:
        core.delete_namespaced_pod("ingressgateway-0", NAMESPACE, grace_period_seconds=0)
        for budget in policy.list_namespaced_pod_disruption_budget(NAMESPACE).items:
            policy.delete_namespaced_pod_disruption_budget(budget.metadata.name, NAMESPACE)


def test_an_admission_policy_that_would_refuse_the_marks_fails_the_preflight_not_rbac(
    cluster: Cluster,
) -> None:
    """SelfSubjectAccessReview says yes; the node patches, dry-run, meet the policy `up` would meet."""
    subject, kubeconfig = cluster.identity()
    config = declared(kubeconfig)
    cluster_needs = stack_needs(config.gateway)[0]
    grant(cluster.api, rbac_documents(cluster_needs, "admission", subject))
    owner = stack_owner("prod", "asm-serverless-gateway")
    check = "admits the node marks (dry run)"

    def marks_row() -> Row:
        return next(r for r in api_rows(cluster_needs, kubeconfig, owner=owner) if r.check == check)

    deadline = time.monotonic() + 20
    while (row := marks_row()).result is not Result.PASSED:  # RBAC's cache catches up with the grant
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    assert row.detail == "2 node(s), as `up` would patch them"

    admission = kubernetes.client.AdmissionregistrationV1Api(cluster.api)
    username = f"system:serviceaccount:kube-system:{subject.name}"
    policy, binding = node_update_policy(
        "no-gateway-label",
        username,
        "!has(object.metadata.labels) || !('mykey4pod' in object.metadata.labels)",
        "nodes may not carry mykey4pod",
    )
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)
    try:
        deadline = time.monotonic() + 20
        while (row := marks_row()).result is Result.PASSED:  # the policy takes a moment to be enforced
            assert time.monotonic() < deadline, "the policy never refused the dry run"
            time.sleep(0.2)
        print(f"\n{table([row])}")
        assert row.result is Result.FAILED
        assert "edge-a" in row.detail and "ValidatingAdmissionPolicy 'no-gateway-label'" in row.detail
        assert "nodes may not carry mykey4pod" in row.detail and "not RBAC" in row.detail
        assert "lacks this permission" not in row.detail
        # The access review still passes: only the dry run could tell.
        rows = {r.check: r for r in api_rows(cluster_needs, kubeconfig, owner=owner)}
        assert rows["may patch nodes"].result is Result.PASSED
        # A dry run leaves the nodes as they were.
        for name in NODES:
            node = kubernetes.client.CoreV1Api(cluster.api).read_node(name).metadata
            assert "mykey4pod" not in (node.labels or {}), name
            assert not any(k.startswith("asm-serverless-gateway/") for k in node.annotations or {}), name
    finally:
        admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
        admission.delete_validating_admission_policy(policy["metadata"]["name"])

    # A rule across the two stages: a node with the gateway's taint must carry its label. `up`
    # labels (admit) before it taints (restrict), so it passes; so must the dry run.
    policy, binding = node_update_policy(
        "taint-needs-label",
        username,
        "!has(object.spec.taints) || !object.spec.taints.exists(t, t.key == 'mykey')"
        " || (has(object.metadata.labels) && 'mykey4pod' in object.metadata.labels)",
        "the gateway's taint needs its label",
    )
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)
    deployer = kubernetes.client.CoreV1Api(
        kubernetes.config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    )
    taint_only = {"spec": {"taints": [{"key": "mykey", "value": "myvalue", "effect": "NoSchedule"}]}}
    try:
        deadline = time.monotonic() + 20
        while True:  # enforced once the taint alone is refused
            try:
                deployer.patch_node("edge-a", taint_only, dry_run="All")
            except kubernetes.client.ApiException as refused:
                assert "the gateway's taint needs its label" in str(refused.body)
                break
            assert time.monotonic() < deadline, "the policy was never enforced"
            time.sleep(0.2)
        row = marks_row()
        assert row.result is Result.PASSED, row
    finally:
        admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
        admission.delete_validating_admission_policy(policy["metadata"]["name"])


def _on_cluster(config: dict[str, Any]) -> None:
    config.pop("renderYamlTo")
    config["ecsCapacity"] = {**CONFIG["ecsCapacity"]}
    config["virtualNodes"] = {**CONFIG["virtualNodes"]}


@pytest.mark.engine
def test_up_stops_before_anything_changes_and_the_command_names_the_missing_verb(
    cluster: Cluster, tmp_path: Path
) -> None:
    project = EngineProject(tmp_path)
    shutil.copytree(ROOT / "scripts", project.dir / "scripts")
    subject, kubeconfig = cluster.identity()
    stack = project.stack_on_cluster("local", yaml.safe_load(kubeconfig), _on_cluster)
    every = stack_needs(stack_config.from_stack_file("local", project.stack_file("local")).gateway)
    patch_nodes = Access("patch", "nodes", why="labels and taints on the named nodes")
    for needs in every:
        short = replace(needs, access=tuple(a for a in needs.access if a != patch_nodes))
        grant(cluster.api, rbac_documents(short, "local", subject))

    def preflight_command() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(project.dir / "scripts" / "preflight.sh"), "--stack", "local"],
            env={**project.env, "ASM_GATEWAY_TOOLS_CACHE": str(toolchain.cache_root())},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    time.sleep(1)  # RBAC's cache catches up with the grants
    refused = preflight_command()
    print("\n" + refused.stdout)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "FAILED   may patch nodes" in refused.stdout
    # The dry run waits on that row rather than blame RBAC a second time.
    assert "not run  admits the node marks (dry run)" in refused.stdout
    assert kubeconfig.split("token: ")[1].split()[0] not in refused.stdout + refused.stderr

    with pytest.raises(auto.errors.CommandError) as stopped:
        stack.up()
    message = str(stopped.value)
    assert "the preflight failed, so nothing was changed" in message and "may patch nodes" in message
    core = kubernetes.client.CoreV1Api(cluster.api)
    assert all("mykey4pod" not in (core.read_node(n).metadata.labels or {}) for n in NODES)
    gateways = kubernetes.client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "istio.alibabacloud.com", "v1beta1", NAMESPACE, "istiogateways"
    )
    assert gateways["items"] == []

    grant(cluster.api, rbac_documents(every[0], "local-complete", subject))
    time.sleep(1)
    passed = preflight_command()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    stack.up()
    assert all(core.read_node(n).metadata.labels.get("mykey4pod") == "asmgateway" for n in NODES)
    stack.destroy()
