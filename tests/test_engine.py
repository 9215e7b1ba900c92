"""The user's workflow under the real Pulumi engine: up, preview diffs, overrides.

Runs the local stack (no cloud: existing nodes, existing virtual nodes, YAML
rendered by the real Kubernetes provider) through the Automation API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from engine_project import EngineProject, Step, changed_steps
from mock_stack import set_path
from pulumi import automation as auto

from components import type_token

pytestmark = pytest.mark.engine

ISTIO_GATEWAY = "kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway"
NODE_PATCH = "kubernetes:core/v1:NodePatch"
GATEWAY = "asm-gateway-istio-system-ingressgateway-istiogateway"
NODES = ("asm-gateway-ecs-gateway-ecs-0", "asm-gateway-ecs-gateway-ecs-1")
DESTRUCTIVE = {"delete", "replace", "create-replacement", "delete-replaced"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[EngineProject, auto.Stack]:
    project = EngineProject(tmp_path_factory.mktemp("engine"))
    stack = project.stack("local")
    result = stack.up()
    assert result.summary.result == "succeeded"
    return project, stack


def test_up_renders_the_manifests_and_a_second_up_changes_nothing(
    deployed: tuple[EngineProject, auto.Stack],
) -> None:
    project, stack = deployed
    rendered = project.dir / "rendered"
    node = yaml.safe_load((rendered / "cluster/1-manifest/v1-node-default-gateway-ecs-0.yaml").read_text())
    assert node["metadata"]["labels"] == {"mykey4pod": "asmgateway"}
    assert node["spec"]["taints"] == [{"effect": "NoSchedule", "key": "mykey", "value": "myvalue"}]
    gateway_file = (
        rendered
        / "mesh/1-manifest/istio.alibabacloud.com_v1beta1-istiogateway-istio-system-ingressgateway.yaml"
    )
    gateway = yaml.safe_load(gateway_file.read_text())
    assert gateway["kind"] == "IstioGateway"
    assert len(gateway["spec"]["tolerations"]) == 2
    again = stack.up()
    changes = {
        str(getattr(op, "value", op)): count for op, count in (again.summary.resource_changes or {}).items()
    }
    assert set(changes) == {"same"}, changes
    assert changed_steps(stack) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda config: set_path(config, path, value)


GATEWAY_ONLY = [Step("update", ISTIO_GATEWAY, GATEWAY)]
NODES_AND_GATEWAY = [Step("update", ISTIO_GATEWAY, GATEWAY), *(Step("update", NODE_PATCH, n) for n in NODES)]

# The rebalancer runs only where the policy prefers ECS, and reads its policy (which names the
# pool's labels) once, at start: a new policy is a new ConfigMap and restarts it.
REBALANCER = "asm-gateway-rebalancer"
REBALANCER_GONE = [
    Step("delete", type_token("GatewayRebalancer"), REBALANCER),
    *(
        Step("delete", f"kubernetes:{kind}", f"{REBALANCER}-{child}")
        for kind, child in (
            ("apps/v1:Deployment", "deployment"),
            ("core/v1:ConfigMap", "policy"),
            ("core/v1:ServiceAccount", "account"),
            ("rbac.authorization.k8s.io/v1:ClusterRole", "role"),
            ("rbac.authorization.k8s.io/v1:ClusterRoleBinding", "binding"),
        )
    ),
]
REBALANCER_RESTARTED = [
    Step("update", "kubernetes:apps/v1:Deployment", f"{REBALANCER}-deployment"),
    *(
        Step(op, "kubernetes:core/v1:ConfigMap", f"{REBALANCER}-policy")
        for op in ("create-replacement", "replace", "delete-replaced")
    ),
]

KNOBS = [
    ("a weight", _set("preferredWeight", 70), GATEWAY_ONLY),
    ("the policy", _set("placementPolicy", "prefer-eci"), GATEWAY_ONLY + REBALANCER_GONE),
    (
        "a label",
        _set("ecsCapacity.labels", {"mykey4pod": "asm-gw"}),
        NODES_AND_GATEWAY + REBALANCER_RESTARTED,
    ),
    ("a taint", _set("ecsCapacity.taints[0].value", "othervalue"), NODES_AND_GATEWAY),
    ("replica bounds", _set("gateways[0].maxReplicas", 12), GATEWAY_ONLY),
    (
        "an ECI annotation",
        _set("gateways[0].podAnnotations", {"k8s.aliyun.com/eci-use-specs": "4-8Gi"}),
        GATEWAY_ONLY,
    ),
    (
        "the ports",
        _set("gateways[0].ports", [{"name": "http", "port": 8080, "targetPort": 80}]),
        GATEWAY_ONLY,
    ),
]


@pytest.mark.parametrize(("knob", "edit", "expected"), KNOBS, ids=[k[0] for k in KNOBS])
def test_each_override_previews_as_in_place_updates_of_what_serves(
    deployed: tuple[EngineProject, auto.Stack],
    knob: str,
    edit: Callable[[dict[str, Any]], None],
    expected: list[Step],
) -> None:
    project, stack = deployed
    original = project.stack_file("local").read_text()
    try:
        project.edit_config("local", edit)
        steps = changed_steps(stack)
    finally:
        project.stack_file("local").write_text(original)
    assert steps == sorted(expected, key=lambda s: (s.type, s.name)), knob
    # Nothing is replaced or deleted but the rebalancer's own objects, which hold no state.
    assert not {s.op for s in steps if not s.name.startswith(REBALANCER)} & DESTRUCTIVE


def test_a_stack_file_value_beats_the_project_default(deployed: tuple[EngineProject, auto.Stack]) -> None:
    project, stack = deployed

    def weights() -> list[int]:
        gateway = stack.outputs()["gateways"].value[0]
        preferred = gateway["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        return [p["weight"] for p in preferred]

    assert weights() == [80, 20]  # Pulumi.yaml's defaults
    original = project.stack_file("local").read_text()
    try:
        project.edit_config("local", _set("preferredWeight", 95))
        stack.up()
        assert weights() == [95, 20]
    finally:
        project.stack_file("local").write_text(original)
        stack.up()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("preferredWeight", 0), "asm-serverless-gateway:preferredWeight: is 0; must be from 1 to 100"),
        (
            _set("ecsCapacity.taints[0].effect", "NoScheduling"),
            "ecsCapacity.taints[0].effect: is 'NoScheduling'",
        ),
        (_set("gatways", []), "asm-serverless-gateway:gatways: is not a known key; did you mean 'gateways'?"),
        (_set("preferredWeight", "eighty"), "preferredWeight"),
    ],
    ids=["weight 0", "misspelt effect", "unknown key", "not an integer"],
)
def test_bad_config_fails_the_preview_with_the_validation_message(
    deployed: tuple[EngineProject, auto.Stack], edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    project, stack = deployed
    original = project.stack_file("local").read_text()
    try:
        project.edit_config("local", edit)
        with pytest.raises(auto.errors.CommandError) as failed:
            stack.preview()
    finally:
        project.stack_file("local").write_text(original)
    text = str(failed.value)
    assert message in text
    assert "Traceback" not in text


def test_the_program_has_no_cloud_plugin_to_load_for_the_local_stack(
    deployed: tuple[EngineProject, auto.Stack],
) -> None:
    _, stack = deployed
    exported = stack.export_stack().deployment or {}
    types = {r["type"] for r in exported["resources"]}
    assert "kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway" in types
    assert not any(t.startswith("alicloud:") or t == "pulumi:providers:alicloud" for t in types)


def test_the_local_stacks_preview_shows_the_placement_forecast_with_no_cluster(
    deployed: tuple[EngineProject, auto.Stack],
) -> None:
    project, stack = deployed
    preview = stack.preview(diff=True)
    shown = preview.stdout + preview.stderr  # the stack's own messages go to stderr under --diff
    assert "placement forecast (prefer-ecs; ECS nodes: 2 x ecs.g7.xlarge" in shown, shown
    assert re.search(r"istio-system/ingressgateway +maxReplicas +30 +4 +26 +0", shown), shown
    # ECI bills the local stack's pods at its eci-use-specs size, 2 vCPU and 4 GiB each.
    assert "ECI at maxReplicas: 52 vCPU, 104.0 GiB (eci-use-specs)" in shown, shown
    forecast = stack.outputs()["placementForecast"].value
    assert forecast["gateways"][0]["ecsRoom"] == 4  # two 4-vCPU nodes, 2-vCPU requests
    # A change that moves the forecast shows it before and after in `preview --diff`.
    project.edit_config("local", _set("gateways[0].maxReplicas", 60))
    try:
        changed = stack.preview(diff=True)
        diff = changed.stdout + changed.stderr
        assert re.search(r"istio-system/ingressgateway +maxReplicas +60 +4 +56 +0", diff), diff
        assert re.search(r"eci +: 26 => 56", diff), diff  # the stack output, before and after
    finally:
        project.edit_config("local", _set("gateways[0].maxReplicas", 30))
