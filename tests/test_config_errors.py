"""Bad config stops the program before any resource, naming the stack and the key."""

from __future__ import annotations

import contextlib
import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as client_parse_quantity
from mock_stack import (
    EVERY_KEY,
    ROOT,
    Registered,
    config_values_of,
    operator_secrets,
    run_stack,
    set_path,
)

import stack_config
from stack_config import ConfigError, label_value_problem, qualified_name_problem, reference


def local_values() -> dict[str, Any]:
    values, _ = config_values_of(ROOT / "stacks" / "Pulumi.local.yaml")
    return values


def dev_values() -> dict[str, Any]:
    values, _ = config_values_of(ROOT / "stacks" / "Pulumi.dev.yaml")
    return values


def with_change(values: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `values` with the key path set (or removed, for `...`)."""
    changed = copy.deepcopy(values)
    set_path(changed, path, value)
    return changed


BAD_CONFIGS = [
    # (base, key path, bad value, the key named in the message, words in the message)
    ("local", "gateways[0].namespace", "edge", "gateways[0].namespace", "only in istio-system"),
    ("dev", "mesh.version", "1.8.6.41", "gateways[0].ports[0].protocol", "before 1.9.7.107"),
    ("local", "preferredWeight", 0, "preferredWeight", "must be from 1 to 100"),
    ("local", "preferredWeight", 101, "preferredWeight", "must be from 1 to 100"),
    ("local", "overflowWeight", "20.5", "overflowWeight", "whole number"),
    ("local", "overflowWeight", True, "overflowWeight", "whole number"),
    ("local", "overflowWeight", 90, "preferredWeight", "must be above overflowWeight"),
    ("local", "placementPolicy", "ecs-first", "placementPolicy", "allowed: prefer-ecs, prefer-eci"),
    (
        "local",
        "ecsCapacity.taints[0].effect",
        "NoSchedul",
        "ecsCapacity.taints[0].effect",
        "allowed: NoSchedule",
    ),
    ("local", "ecsCapacity.taints[0].key", "bad key!", "ecsCapacity.taints[0].key", "'bad key!'"),
    ("local", "ecsCapacity.labels", {"-bad": "x"}, "ecsCapacity.labels.-bad", "key '-bad'"),
    (
        "local",
        "ecsCapacity.labels",
        {"Bad.Prefix/k": "x"},
        "ecsCapacity.labels.Bad.Prefix/k",
        "DNS subdomain",
    ),
    ("local", "ecsCapacity.labels", {"k": "v" * 64}, "ecsCapacity.labels.k", "at most 63"),
    ("local", "ecsCapacity.labels", {}, "ecsCapacity.labels", "at least one label"),
    (
        "local",
        "ecsCapacity.labels",
        {"type": "virtual-kubelet"},
        "ecsCapacity.labels",
        "match every virtual node",
    ),
    (
        "local",
        "ecsCapacity.mode",
        "pool",
        "ecsCapacity.mode",
        "allowed: nodePool, existingNodes, existingNodePool, none",
    ),
    ("local", "ecsCapacity.nodes", ["Node_1"], "ecsCapacity.nodes[0]", "DNS subdomain"),
    ("local", "ecsCapacity.nodes", ..., "ecsCapacity.nodes", "is required"),
    ("local", "gateways[0].minReplicas", 40, "gateways[0].minReplicas", "above maxReplicas"),
    ("local", "gateways[0].maxReplicas", 0, "gateways[0].maxReplicas", "from 1 to 1000"),
    ("local", "gateways[0].replicaCount", 99, "gateways[0].replicaCount", "outside minReplicas..maxReplicas"),
    (
        "local",
        "gateways[0].ports",
        [{"name": "a", "port": 80}, {"name": "b", "port": 80}],
        "gateways[0].ports",
        "port number 80 more than once",
    ),
    ("local", "gateways[0].ports", [{"name": "a", "port": 70000}], "gateways[0].ports[0].port", "1 to 65535"),
    (
        "local",
        "gateways[0].ports",
        [{"name": "a", "port": 80}, {"name": "a", "port": 81}],
        "gateways[0].ports",
        "name a",
    ),
    ("local", "gateways[0].ports", [{"name": "a"}], "gateways[0].ports[0].port", "is required"),
    ("local", "gateways[0].replicas", 3, "gateways[0].replicas", "'replicaCount'"),
    ("local", "gateways[0].extraSpec", {"tolerations": []}, "gateways[0].extraSpec.tolerations", "derived"),
    (
        "local",
        "gateways[0].podAnnotations",
        {"k8s.aliyun.com/eci-use-specs": 2},
        "gateways[0].podAnnotations.k8s.aliyun.com/eci-use-specs",
        "must be a string",
    ),
    ("local", "gateways", [], "gateways", "must list at least one"),
    (
        "local",
        "gateways[0].resources",
        {"requests": {"cpu": "two"}},
        "gateways[0].resources.requests.cpu",
        "quantity",
    ),
    (
        "local",
        "gateways[0].resources",
        {"request": {"cpu": "2"}},
        "gateways[0].resources.request",
        "'requests'",
    ),
    ("local", "ecsCapcity", {}, "ecsCapcity", "did you mean 'ecsCapacity'"),
    ("local", "ecsCapacity.mode", "none", "placementPolicy", "needs ECS nodes"),
    ("local", "virtualNodes.mode", "none", "placementPolicy", "needs virtual nodes"),
    ("local", "renderYamlTo", ..., "meshKubeconfig", "is required"),
    ("local", "clusterId", ..., "clusterId", "is required"),
    ("dev", "region", ..., "region", "declares Alibaba Cloud resources"),
    ("dev", "ecsCapacity.nodePool.instanceTypes", ..., "ecsCapacity.nodePool.instanceTypes", "is required"),
    (
        "dev",
        "ecsCapacity.nodePool.autoscaling",
        {"minSize": 5, "maxSize": 2},
        "ecsCapacity.nodePool.autoscaling.minSize",
        "above maxSize",
    ),
    (
        "dev",
        "ecsCapacity.nodePool.autoscaling",
        {"minSize": 1},
        "ecsCapacity.nodePool.desiredSize",
        "autoscaler owns the size",
    ),
    ("dev", "virtualNodes.eciSecurityGroupId", ..., "virtualNodes.eciSecurityGroupId", "is required"),
    ("dev", "mesh.vpcId", ..., "mesh.vpcId", "is required"),
    ("dev", "mesh.mode", "existing", "mesh.name", "only used with mode create"),
    ("prod", "ackResourcePolicy", True, "clusterKubeconfig", "required to apply ackResourcePolicy"),
    ("prod", "virtualNodes.eciVswitchIds", ["vsw-1"], "clusterKubeconfig", "kube-system/eci-profile"),
    ("dev", "virtualNodes.mode", "none", "virtualNodes.eciVswitchIds", "is not used with mode none"),
    ("local", "clusterId", "", "clusterId", "must not be empty"),
    ("local", "ecsCapacity.colour", None, "ecsCapacity.colour", "is not a known key"),
    # A key of another mode, one level deeper, is simply unknown there.
    ("dev", "ecsCapacity.nodePool.nodes", ["a"], "ecsCapacity.nodePool.nodes", "is not a known key"),
]


@pytest.mark.parametrize(("base", "path", "value", "named_key", "words"), BAD_CONFIGS)
def test_bad_config_stops_before_any_resource_naming_stack_and_key(
    base: str, path: str, value: Any, named_key: str, words: str
) -> None:
    base_values, _ = config_values_of(ROOT / "stacks" / f"Pulumi.{base}.yaml")
    # The operator set the secrets the stack needed before this change.
    secrets = operator_secrets(base_values) if base != "local" else {}
    values = with_change(base_values, path, value)
    values.update(secrets)
    with pytest.raises(ConfigError) as raised:
        run_stack(base, values, secrets)
    message = str(raised.value)
    assert f"stack '{base}'" in message
    matching = [line for line in message.splitlines() if f"asm-serverless-gateway:{named_key}:" in line]
    assert matching, f"no line names {named_key}:\n{message}"
    assert any(words in line for line in matching), message


def test_no_resource_is_registered_when_config_is_bad() -> None:
    # The program as __main__.py runs it; the monitor sees what it registers.
    registered: list[Registered] = []
    with pytest.raises(ConfigError):
        run_stack("local", with_change(local_values(), "preferredWeight", 0), registered=registered)
    assert registered == []
    # The same program with good config does register (so the check above can fail).
    run_stack("local", local_values(), registered=registered)
    assert registered


def test_every_problem_is_reported_at_once() -> None:
    values = with_change(local_values(), "preferredWeight", 0)
    values = with_change(values, "ecsCapacity.taints[0].effect", "NoSchedul")
    with pytest.raises(ConfigError) as raised:
        run_stack("local", values)
    assert len(raised.value.problems) == 2


def test_a_rule_across_sections_is_reported_beside_a_problem_inside_one() -> None:
    # The leftover `nodes` is wrong inside ecsCapacity; the policy still names the mode it needs.
    values = with_change(local_values(), "ecsCapacity.mode", "none")
    with pytest.raises(ConfigError) as raised:
        run_stack("local", values)
    problems = {p.path: p.message for p in raised.value.problems}
    assert set(problems) == {"ecsCapacity.nodes", "ecsCapacity.instanceType", "placementPolicy"}
    assert "it is only used with mode existingNodes" in problems["ecsCapacity.nodes"]
    assert "it is only used with mode existingNodes" in problems["ecsCapacity.instanceType"]
    assert "prefer-ecs needs ECS nodes" in problems["placementPolicy"]


def test_a_kubeconfig_set_in_plain_text_is_refused() -> None:
    values = dict(local_values(), clusterKubeconfig="apiVersion: v1")
    with pytest.raises(ConfigError, match="must be set as a secret"):
        run_stack("local", values)


@pytest.mark.parametrize(
    "path",
    ["gateways[0].podAnnotations", "gateways[0].ports", "mesh.edition", "virtualNodes.mode", "protect"],
)
def test_a_key_left_empty_in_yaml_is_unset(path: str) -> None:
    # `podAnnotations:` with every entry commented out is null in YAML; so is a
    # key of another mode of the same section (`mesh.edition` on an existing mesh).
    without = local_values()
    with contextlib.suppress(KeyError):
        set_path(without, path, ...)
    left_empty = with_change(local_values(), path, None)
    assert stack_config.parse("local", left_empty) == stack_config.parse("local", without)


def test_structured_values_given_as_json_text_parse_like_objects() -> None:
    # The engine hands structured config to the program as JSON text.
    as_text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in local_values().items()}
    assert stack_config.parse("local", as_text) == stack_config.parse("local", local_values())
    assert stack_config.parse("local", as_text).gateway.ecs.nodes == ("gateway-ecs-0", "gateway-ecs-1")


# Any JSON-like value YAML or the engine could hand the program.
config_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["nodePool", "existingNodes", "none", "addon", "existing", "create", "80", "true"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["mode", "name", "port"]), children, max_size=3
        )
    ),
    max_leaves=8,
)
documented_paths = [
    row.key.replace("[]", "[0]") for row in reference.rows() if not row.key.startswith("alicloud:")
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(documented_paths), config_values), min_size=1, max_size=3))
def test_any_value_at_any_key_is_read_or_refused_by_key_never_a_traceback(
    changes: list[tuple[str, Any]],
) -> None:
    values = copy.deepcopy(EVERY_KEY[0])
    for path, value in changes:
        with contextlib.suppress(TypeError, KeyError, IndexError, AttributeError, ValueError):
            set_path(values, path, value)  # a value set earlier may not hold this path
    try:
        stack_config.parse("fuzz", values, list(stack_config.SECRET_KEYS))
    except ConfigError as error:
        assert error.problems
        assert all(p.path and p.message for p in error.problems), error


# -- Properties of Kubernetes' syntax rules ---------------------------------------------

name_part = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", fullmatch=True)
prefix = st.from_regex(
    r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?){0,3}", fullmatch=True
)


@given(st.one_of(name_part, st.builds(lambda p, n: f"{p}/{n}", prefix, name_part)))
def test_keys_kubernetes_accepts_are_accepted(key: str) -> None:
    assert qualified_name_problem(key) is None


@given(st.text(min_size=1, max_size=80))
def test_keys_with_characters_kubernetes_rejects_are_rejected(key: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")
    if set(key) <= allowed:
        return
    assert qualified_name_problem(key) is not None


@given(st.text(max_size=70))
def test_label_values_follow_the_63_character_rule(value: str) -> None:
    ok = label_value_problem(value) is None
    if len(value) > 63:
        assert not ok
    if ok and value:
        assert value[0].isalnum() and value[-1].isalnum()


@pytest.mark.parametrize("check", [qualified_name_problem, label_value_problem])
def test_a_trailing_newline_is_not_part_of_a_valid_name(check: Any) -> None:
    # Python's `$` also matches before a final newline; Kubernetes' rules do not.
    assert check("mykey") is None
    assert check("mykey\n") is not None


@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_weights_outside_1_to_100_or_not_ordered_are_refused(preferred: int, overflow: int) -> None:
    values = dict(local_values(), preferredWeight=preferred, overflowWeight=overflow)
    valid = 1 <= overflow < preferred <= 100
    try:
        stack_config.parse("local", values)
    except ConfigError as error:
        assert not valid
        assert all(p.path in ("preferredWeight", "overflowWeight") for p in error.problems)
    else:
        assert valid


def test_alicloud_credentials_reach_the_explicit_provider_as_secrets() -> None:
    values = dev_values()
    secrets = operator_secrets(values)
    config = stack_config.parse(
        "dev",
        {**values, **secrets},
        list(secrets),
        alicloud={"accessKey": "AK", "secretKey": "SK"},
        alicloud_secret_keys=["accessKey", "secretKey"],
    )
    assert config.alicloud_credentials.access_key is not None
    assert config.alicloud_credentials.profile is None


@pytest.mark.parametrize(
    ("alicloud", "secret_keys", "words"),
    [
        ({"accessKey": "AK"}, [], "alicloud:accessKey: holds a credential and must be set as a secret"),
        ({"region": "cn-beijing"}, [], "alicloud:region: is not passed to the stack's provider"),
    ],
)
def test_alicloud_config_the_provider_would_not_see_is_refused(
    alicloud: dict[str, str], secret_keys: list[str], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        stack_config.parse("dev", dev_values(), alicloud=alicloud, alicloud_secret_keys=secret_keys)


def test_resource_quantities_may_be_numbers_as_yaml_reads_them() -> None:
    values = with_change(local_values(), "gateways[0].resources", {"requests": {"cpu": 2, "memory": "2Gi"}})
    config = stack_config.parse("local", values)
    assert config.gateway.gateways[0].resources == {"requests": {"cpu": "2", "memory": "2Gi"}}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100n", Decimal("1E-7")),
        ("1u", Decimal("0.000001")),
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("4Gi", Decimal(4 * 2**30)),
        ("1.5Gi", Decimal(int(1.5 * 2**30))),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("+1", Decimal(1)),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("1k", Decimal(1000)),
        ("2Ei", Decimal(2 * 2**60)),
    ],
)
def test_every_kubernetes_quantity_form_is_read(text: str, value: Decimal) -> None:
    assert stack_config.parse_quantity(text) == value
    assert stack_config.quantity_problem(text) is None


quantity_text = st.builds(
    lambda sign, number, suffix: f"{sign}{number}{suffix}",
    st.sampled_from(["", "+"]),
    st.from_regex(r"[0-9]{1,6}(\.[0-9]{0,3})?|\.[0-9]{1,3}", fullmatch=True),
    st.sampled_from(["", "n", "u", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", "e3", "E-2"]),
)


@given(quantity_text)
def test_every_valid_quantity_has_the_value_the_kubernetes_client_gives_it(text: str) -> None:
    assert stack_config.parse_quantity(text) == client_parse_quantity(text)


@pytest.mark.parametrize("text", ["1K", "1 Gi"])
def test_the_kubernetes_clients_parser_takes_what_the_api_server_refuses(text: str) -> None:
    # Why the stack has its own grammar: with the client's, these would pass the
    # config check and fail at the API server, mid-`up`. If this starts failing,
    # the client has become strict and can replace stack_config.syntax's parser.
    assert client_parse_quantity(text) > 0
    assert stack_config.quantity_problem(text) is not None


@pytest.mark.parametrize(
    "text", ["1K", "1 Gi", "1Gb", "abc", "", "0x1", "1e", "1mi", "1.0.0", "Gi", "-1", "1\n"]
)
def test_what_the_api_server_refuses_is_refused(text: str) -> None:
    assert stack_config.quantity_problem(text) is not None


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("hostNetwok", "is not a field of ASM's IstioGateway spec; did you mean 'hostNetwork'?"),
        ("priorityClassName", "is not a field of ASM's IstioGateway spec"),
        ("tolerations", "is derived by the stack"),
        ("replicaCount", "has its own key: set gateways[].replicaCount instead"),
        ("cpu", "has its own key: set gateways[].targetCpuUtilization instead"),
    ],
)
def test_extra_spec_keys_are_checked_against_the_real_istio_gateway_fields(key: str, expected: str) -> None:
    values, secrets = config_values_of(ROOT / "stacks" / "Pulumi.local.yaml")
    values["gateways"] = [{"name": "ingressgateway", "extraSpec": {key: True}}]
    with pytest.raises(ConfigError) as error:
        stack_config.parse("local", values, secrets)
    assert f"asm-serverless-gateway:gateways[0].extraSpec.{key}: {expected}" in str(error.value)


def test_real_istio_gateway_fields_pass_through_extra_spec() -> None:
    values, secrets = config_values_of(ROOT / "stacks" / "Pulumi.local.yaml")
    extra = {"hostNetwork": False, "rollingMaxUnavailable": "0", "nodeSelector": {"a": "b"}}
    values["gateways"] = [{"name": "ingressgateway", "extraSpec": extra}]
    assert stack_config.parse("local", values, secrets).gateway.gateways[0].extra_spec == extra


def test_the_documented_example_error_is_what_the_stack_prints() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    example = doc[doc.index("    error: stack 'local'") :].split("\n\n")[0]
    values = with_change(local_values(), "ecsCapacity.colour", "red")
    values = with_change(values, "preferredWeight", 0)
    with pytest.raises(ConfigError) as raised:
        stack_config.parse("local", values)
    assert example == "\n".join(f"    {line}" for line in f"error: {raised.value}".splitlines())


@pytest.mark.parametrize(("version", "refused"), [("1.9.7.107", False), ("v1.22.6.71-g1a2b-aliyun", False),
                                                  ("1.9.7.93", True), ("v1.8.6", True)])  # fmt: skip
def test_port_protocols_need_an_asm_version_that_takes_them(version: str, refused: bool) -> None:
    values = {**with_change(dev_values(), "mesh.version", version), "renderYamlTo": "rendered"}
    values["gateways"] = [{"ports": [{"name": "http", "port": 80, "protocol": "HTTP"}]}]
    if not refused:
        stack_config.parse("dev", values)
        return
    with pytest.raises(ConfigError, match=r"gateways\[0\]\.ports\[0\]\.protocol: is HTTP, but ASM before"):
        stack_config.parse("dev", values)
    values["gateways"][0]["ports"][0]["protocol"] = "TCP"
    stack_config.parse("dev", values)
