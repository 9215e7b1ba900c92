"""The stack's config, read once into a validated, typed model.

Every config key a user can set is read here and nowhere else. A mistake stops
the program before any resource is registered, with one message that names
the stack, each bad key path and what it allows (see `ConfigError`).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pulumi

from components import PACKAGE, type_token
from components.gateway import ISTIO_GATEWAY_FIELDS, Gateway, GatewayPort
from components.mesh import Mesh
from components.node_pool import Autoscaling, EcsCapacity, NodePoolSpec
from components.providers import alicloud_provider
from components.scheduling import (
    TAINT_EFFECTS,
    VIRTUAL_NODE_LABELS,
    NodeKind,
    Policy,
    Taint,
    Weights,
)
from components.stack import ServerlessGatewayArgs
from components.virtual_nodes import VirtualNodes

PROJECT = PACKAGE  # config keys live in the project namespace

# Defaults of the flat keys, declared again in Pulumi.yaml for the engine; a
# test keeps the two equal (mocks never see Pulumi.yaml).
PROJECT_DEFAULTS: dict[str, Any] = {
    "placementPolicy": Policy.PREFER_ECS.value,
    "preferredWeight": Weights().preferred,
    "overflowWeight": Weights().overflow,
    "protect": False,
    "ackResourcePolicy": False,
    "rolloutTimeoutSeconds": 600,
}

ISTIO_GATEWAY_RESERVED = frozenset({"affinity", "tolerations", "clusterIds", "gatewayType"})


# -- Kubernetes' own syntax rules -------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def qualified_name_problem(key: str) -> str | None:
    """Why Kubernetes rejects `key` as a label, taint or annotation key, if it does."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "has an empty prefix before '/'"
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "has a prefix that is not a DNS subdomain (lowercase, digits, '-', '.')"
    if not name or len(name) > 63 or not _NAME.match(name):
        return (
            "must be a name of at most 63 characters: letters, digits, '-', '_' or '.',"
            " starting and ending with a letter or digit (an optional 'prefix/' before it)"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why Kubernetes rejects `value` as a label or taint value, if it does."""
    if value and (len(value) > 63 or not _NAME.match(value)):
        return (
            "must be empty or at most 63 characters: letters, digits, '-', '_' or '.',"
            " starting and ending with a letter or digit"
        )
    return None


def dns_label_problem(value: str) -> str | None:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        return "must be a DNS label: at most 63 lowercase letters, digits or '-', alphanumeric at both ends"
    return None


def dns_subdomain_problem(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        return "must be a DNS subdomain: lowercase letters, digits, '-' and '.'"
    return None


# Kubernetes' quantity grammar (apimachinery's resource.Quantity): a signed
# decimal number, then a binary suffix, a decimal suffix or an exponent. Not
# the Python client's `parse_quantity`: it accepts what the API server refuses
# ("1K", "1 Gi") and its import costs about 0.45 s of every preview.
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity as a number (`500m` -> 0.5, `4Gi` -> 4294967296); ValueError if invalid."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))


def quantity_problem(value: str) -> str | None:
    """Why Kubernetes rejects `value` as a resource amount (e.g. 500m, 2, 4Gi), if it does."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        return "must be a Kubernetes quantity such as 500m, 2, 512Mi or 4Gi"
    if amount < 0:
        return "must not be negative"
    return None


# -- The model ----------------------------------------------------------------------


@dataclass(frozen=True)
class AlicloudCredentials:
    """`alicloud:` config for the stack's explicit provider (default providers are off)."""

    access_key: pulumi.Output[str] | None = None
    secret_key: pulumi.Output[str] | None = None
    security_token: pulumi.Output[str] | None = None
    profile: pulumi.Output[str] | None = None


@dataclass(frozen=True)
class StackConfig:
    """A stack's whole config: the gateway stack's own inputs, and the cloud credentials."""

    stack: str
    region: str | None
    gateway: ServerlessGatewayArgs
    # Secrets stay Outputs marked secret from the moment they are read.
    alicloud_credentials: AlicloudCredentials = field(default_factory=AlicloudCredentials, compare=False)


# -- Errors --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str  # the key path under its namespace, e.g. "gateways[0].ports[1].port"
    message: str
    namespace: str = PROJECT


class ConfigError(pulumi.RunError):
    """Bad stack config; the engine prints the message alone, with no traceback."""

    def __init__(self, stack: str, problems: Iterable[Problem]) -> None:
        self.stack = stack
        self.problems = tuple(problems)
        lines = [f"  {p.namespace}:{p.path}: {p.message}" for p in self.problems]
        count = len(self.problems)
        super().__init__(
            f"stack '{stack}' has {count} config error{'s' if count > 1 else ''}"
            " (nothing was changed):\n" + "\n".join(lines)
        )


# -- Reading ---------------------------------------------------------------------------


class _Fields:
    """The fields of one config object at a key path; records every problem found."""

    def __init__(self, path: str, raw: object, problems: list[Problem]) -> None:
        self._path = path
        self._problems = problems
        self._seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self._report(path, f"must be an object, got {_describe(raw)}")
            raw = {}
        self._raw: dict[str, Any] = raw

    def at(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _report(self, path: str, message: str) -> None:
        self._problems.append(Problem(path, message))

    def problem(self, key: str, message: str) -> None:
        self._report(self.at(key), message)

    def has(self, key: str) -> bool:
        return self._raw.get(key) is not None

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        return self._raw.get(key)

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        choices: Iterable[str] | None = None,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        value = self.raw(key)
        if value is None:
            if required:
                self.problem(key, "is required" + _choices_hint(choices))
            return default
        if not isinstance(value, str):
            self.problem(key, f"must be a string, got {_describe(value)}")
            return default
        if choices is not None and value not in choices:
            self.problem(key, f"is '{value}'" + _choices_hint(choices))
            return default
        reason = check(value) if check else None
        if reason:
            self.problem(key, f"'{value}' {reason}")
            return default
        return value

    def integer(self, key: str, default: int, low: int, high: int, *, required: bool = False) -> int:
        value = self.raw(key)
        if value is None:
            if required:
                self.problem(key, f"is required: a whole number from {low} to {high}")
            return default
        number = _as_int(value)
        if number is None:
            self.problem(key, f"must be a whole number from {low} to {high}, got {_describe(value)}")
            return default
        if not low <= number <= high:
            self.problem(key, f"is {number}; must be from {low} to {high}")
            return default
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.problem(key, f"must be true or false, got {_describe(value)}")
        return default

    def strings(
        self, key: str, *, required: bool = False, check: Callable[[str], str | None] | None = None
    ) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            if required:
                self.problem(key, "is required: a list of strings")
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(key, f"must be a list of non-empty strings, got {_describe(value)}")
            return ()
        if required and not value:
            self.problem(key, "must not be empty")
        for index, item in enumerate(value):
            reason = check(item) if check else None
            if reason:
                self._report(f"{self.at(key)}[{index}]", f"'{item}' {reason}")
        if len(set(value)) != len(value):
            self.problem(key, "lists the same value twice")
        return tuple(value)

    def string_map(
        self,
        key: str,
        *,
        check_key: Callable[[str], str | None],
        check_value: Callable[[str], str | None] | None = None,
        numbers_as_text: bool = False,
    ) -> dict[str, str]:
        result: dict[str, str] = {}
        for item_key, item_value in self.free_object(key, "an object of string values").items():
            if numbers_as_text and isinstance(item_value, int | float) and not isinstance(item_value, bool):
                item_value = str(item_value)  # noqa: PLW2901 - YAML reads `cpu: 2` as a number
            path = f"{self.at(key)}.{item_key}"
            reason = check_key(item_key)
            if reason:
                self._report(path, f"key '{item_key}' {reason}")
                continue
            if not isinstance(item_value, str):
                self._report(path, f"must be a string, got {_describe(item_value)}")
                continue
            reason = check_value(item_value) if check_value else None
            if reason:
                self._report(path, f"value '{item_value}' {reason}")
                continue
            result[item_key] = item_value
        # Sorted, so that reordering keys in config is never a diff.
        return dict(sorted(result.items()))

    def free_object(self, key: str, what: str = "an object") -> dict[str, Any]:
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key, f"must be {what}, got {_describe(value)}")
            return {}
        return value

    def refuse(self, keys: Iterable[str], reason: str) -> None:
        """Keys that are known but do not apply here: each one set is a problem."""
        for key in keys:
            if self.has(key):
                self.problem(key, reason)
            self.raw(key)

    def nested(self, key: str) -> _Fields:
        return _Fields(self.at(key), self.raw(key), self._problems)

    def items(self, key: str) -> list[_Fields]:
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"must be a list, got {_describe(value)}")
            return []
        return [_Fields(f"{self.at(key)}[{i}]", item, self._problems) for i, item in enumerate(value)]

    def close(self) -> None:
        """Unknown keys are mistakes: a typo must never be silently ignored."""
        for key in sorted(set(self._raw) - self._seen):
            hint = (
                _did_you_mean(key, self._seen, cutoff=0.5) or f"; known keys: {', '.join(sorted(self._seen))}"
            )
            self.problem(key, "is not a known key" + hint)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _describe(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 40 else text[:37] + "..."


def _did_you_mean(key: str, known: Iterable[str], cutoff: float) -> str:
    """ "; did you mean 'x'?" for the known names closest to a mistyped `key`, or ""."""
    close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=cutoff)
    return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else ""


def _choices_hint(choices: Iterable[str] | None) -> str:
    return f"; allowed: {', '.join(choices)}" if choices is not None else ""


# -- Sections -------------------------------------------------------------------------

ECS_MODES = ("nodePool", "existingNodes", "none")
VIRTUAL_NODE_MODES = ("addon", "existing", "none")
MESH_MODES = ("create", "existing")
SERVICE_TYPES = ("LoadBalancer", "NodePort", "ClusterIP")
PORT_PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS")


def _read_taints(fields: _Fields, key: str) -> tuple[Taint, ...]:
    taints: set[Taint] = set()
    for item in fields.items(key):
        taint_key = item.string("key", required=True, check=qualified_name_problem)
        value = item.string("value", "", check=label_value_problem) or ""
        effect = item.string("effect", required=True, choices=TAINT_EFFECTS)
        item.close()
        if taint_key and effect:
            taint = Taint(taint_key, value, effect)
            if any(t.key == taint.key and t.effect == taint.effect for t in taints):
                fields.problem(key, f"has the key '{taint_key}' with effect {effect} twice")
            taints.add(taint)
    return tuple(sorted(taints))


def _read_ecs(fields: _Fields) -> EcsCapacity:
    mode = fields.string("mode", "nodePool", choices=ECS_MODES) or "nodePool"
    labels = fields.string_map("labels", check_key=qualified_name_problem, check_value=label_value_problem)
    taints = _read_taints(fields, "taints")
    node_pool = None
    nodes: tuple[str, ...] = ()
    if mode != "none" and not labels:
        fields.problem("labels", f"must name at least one label that marks the gateway's nodes (mode {mode})")
    if labels and all(VIRTUAL_NODE_LABELS.get(k) == v for k, v in labels.items()):
        fields.problem("labels", "match every virtual node too; pick a label of the pool's own")
    if mode == "nodePool":
        node_pool = _read_node_pool(fields.nested("nodePool"))
    else:
        fields.refuse(["nodePool"], f"is only used with mode nodePool (mode is {mode})")
    if mode == "existingNodes":
        nodes = fields.strings("nodes", required=True, check=dns_subdomain_problem)
    else:
        fields.refuse(["nodes"], f"is only used with mode existingNodes (mode is {mode})")
    fields.close()
    return EcsCapacity(mode, labels, taints, node_pool, nodes)


def _read_node_pool(fields: _Fields) -> NodePoolSpec:
    name = fields.string("name", "asm-gateway", check=dns_label_problem) or "asm-gateway"
    instance_types = fields.strings("instanceTypes", required=True)
    vswitch_ids = fields.strings("vswitchIds", required=True)
    desired_size: int | None = None
    autoscaling: Autoscaling | None = None
    if fields.has("autoscaling"):
        fields.refuse(["desiredSize"], "cannot be set with autoscaling: the autoscaler owns the size")
        scaling = fields.nested("autoscaling")
        low = scaling.integer("minSize", 1, 0, 1000)
        high = scaling.integer("maxSize", 3, 1, 1000)
        if low > high:
            scaling.problem("minSize", f"is {low}, above maxSize {high}")
        scaling.close()
        autoscaling = Autoscaling(low, high)
    else:
        desired_size = fields.integer("desiredSize", 2, 0, 1000)
    disk = fields.nested("systemDisk")
    category = (
        disk.string(
            "category", "cloud_essd", choices=("cloud_essd", "cloud_ssd", "cloud_efficiency", "cloud_auto")
        )
        or "cloud_essd"
    )
    size = disk.integer("size", 120, 20, 2048)
    disk.close()
    security_groups = fields.strings("securityGroupIds")
    fields.close()
    return NodePoolSpec(
        name, instance_types, vswitch_ids, desired_size, autoscaling, category, size, security_groups
    )


def _read_virtual_nodes(fields: _Fields) -> VirtualNodes:
    mode = fields.string("mode", "existing", choices=VIRTUAL_NODE_MODES) or "existing"
    if mode == "addon":
        result = VirtualNodes(
            mode,
            fields.strings("eciVswitchIds", required=True),
            fields.string("eciSecurityGroupId", required=True),
            fields.string("addonVersion"),
            fields.free_object("addonConfig"),
        )
    elif mode == "existing":
        # Existing virtual nodes: the ECI network in their eci-profile is optional.
        fields.refuse(("addonVersion", "addonConfig"), "is only used with mode addon (mode is existing)")
        result = VirtualNodes(mode, fields.strings("eciVswitchIds"), fields.string("eciSecurityGroupId"))
    else:
        fields.refuse(
            ("eciVswitchIds", "eciSecurityGroupId", "addonVersion", "addonConfig"),
            f"is not used with mode {mode}",
        )
        result = VirtualNodes(mode)
    fields.close()
    return result


def _read_mesh(fields: _Fields) -> Mesh:
    mode = fields.string("mode", "existing", choices=MESH_MODES) or "existing"
    if mode == "create":
        result = Mesh(
            mode,
            name=fields.string("name", "asm-gateway-mesh") or "asm-gateway-mesh",
            edition=fields.string("edition", "Pro", choices=("Default", "Pro")) or "Pro",
            version=fields.string("version"),
            vpc_id=fields.string("vpcId", "", required=True) or "",
            vswitch_id=fields.string("vswitchId", "", required=True) or "",
        )
    else:
        fields.refuse(
            ("name", "edition", "version", "vpcId", "vswitchId"),
            f"is only used with mode create (mode is {mode})",
        )
        result = Mesh(mode)
    fields.close()
    return result


def _read_ports(fields: _Fields) -> tuple[GatewayPort, ...]:
    ports: list[GatewayPort] = []
    items = fields.items("ports")
    if not fields.has("ports"):
        return (GatewayPort("http-0", 80, 80, "HTTP"), GatewayPort("https", 443, 443, "HTTPS"))
    if not items:
        fields.problem("ports", "must list at least one port")
    for item in items:
        name = item.string("name", required=True, check=dns_label_problem)
        port = item.integer("port", 0, 1, 65535, required=True)
        target = item.integer("targetPort", port, 1, 65535)
        protocol = item.string("protocol", "TCP", choices=PORT_PROTOCOLS) or "TCP"
        item.close()
        if name and port:
            ports.append(GatewayPort(name, port, target, protocol))
    for attr, label in (("name", "name"), ("port", "port number")):
        values = [getattr(p, attr) for p in ports]
        for duplicate in sorted({v for v in values if values.count(v) > 1}, key=str):
            fields.problem("ports", f"uses the {label} {duplicate} more than once")
    return tuple(ports)


def _read_resources(fields: _Fields) -> dict[str, dict[str, str]]:
    """`requests` and `limits`: resource names to quantities, as Kubernetes has them."""
    resources: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        amounts = fields.string_map(
            part, check_key=qualified_name_problem, check_value=quantity_problem, numbers_as_text=True
        )
        if amounts:
            resources[part] = amounts
    fields.close()
    return resources


# Spec fields that have their own key under gateways[]: one way to set each.
EXTRA_SPEC_OWN_KEYS = {
    "replicaCount": "replicaCount",
    "minReplicas": "minReplicas",
    "maxReplicas": "maxReplicas",
    "autoscaleEnabled": "autoscaleEnabled",
    "cpu": "targetCpuUtilization",
    "ports": "ports",
    "serviceType": "serviceType",
    "serviceAnnotations": "serviceAnnotations",
    "podAnnotations": "podAnnotations",
    "resources": "resources",
}


def extra_spec_problem(key: str) -> str | None:
    """Why `gateways[].extraSpec` may not carry `key`, if it may not."""
    if key in ISTIO_GATEWAY_RESERVED:
        return "is derived by the stack and cannot be set here"
    if key in EXTRA_SPEC_OWN_KEYS:
        return f"has its own key: set gateways[].{EXTRA_SPEC_OWN_KEYS[key]} instead"
    if key not in ISTIO_GATEWAY_FIELDS:
        return "is not a field of ASM's IstioGateway spec" + _did_you_mean(
            key, ISTIO_GATEWAY_FIELDS, cutoff=0.6
        )
    return None


def _read_gateway(fields: _Fields, index: int) -> Gateway:
    name = fields.string("name", "ingressgateway" if index == 0 else None, check=dns_label_problem)
    if name is None:
        fields.problem("name", "is required for every gateway after the first")
    namespace = fields.string("namespace", "istio-system", check=dns_label_problem) or "istio-system"
    replicas = fields.integer("replicaCount", 2, 0, 1000)
    autoscale = fields.boolean("autoscaleEnabled", True)
    low = fields.integer("minReplicas", 2, 1, 1000)
    high = fields.integer("maxReplicas", 5, 1, 1000)
    if low > high:
        fields.problem("minReplicas", f"is {low}, above maxReplicas {high}")
    if autoscale and not low <= replicas <= high and fields.has("replicaCount"):
        fields.problem("replicaCount", f"is {replicas}, outside minReplicas..maxReplicas ({low}..{high})")
    target_cpu = fields.integer("targetCpuUtilization", 80, 1, 100)
    ports = _read_ports(fields)
    service_type = fields.string("serviceType", "LoadBalancer", choices=SERVICE_TYPES) or "LoadBalancer"
    service_annotations = fields.string_map("serviceAnnotations", check_key=qualified_name_problem)
    pod_annotations = fields.string_map("podAnnotations", check_key=qualified_name_problem)
    resources = _read_resources(fields.nested("resources")) if fields.has("resources") else {}
    fields.raw("resources")
    extra = fields.free_object("extraSpec")
    for key in sorted(extra):
        problem = extra_spec_problem(key)
        if problem:
            fields.problem(f"extraSpec.{key}", problem)
    fields.close()
    return Gateway(
        name or f"gateway-{index}",
        namespace,
        replicas,
        autoscale,
        low,
        high,
        target_cpu,
        ports,
        service_type,
        service_annotations,
        pod_annotations,
        resources or {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}},
        extra,
    )


# -- Loading -----------------------------------------------------------------------------

SECRET_KEYS = ("clusterKubeconfig", "meshKubeconfig")

# `alicloud:` keys that the stack passes to its explicit provider (a default
# provider would read them itself; with default providers disabled, nothing
# would), with the provider's own argument names.
ALICLOUD_KEYS = {
    "accessKey": ("access_key", True),
    "secretKey": ("secret_key", True),
    "securityToken": ("security_token", True),
    "profile": ("profile", False),
}  # key -> (AlicloudCredentials field, must be a secret)


def _read_alicloud(
    values: Mapping[str, Any], secret_keys: set[str], problems: list[Problem]
) -> AlicloudCredentials:
    credentials: dict[str, pulumi.Output[str]] = {}
    for key, value in sorted(values.items()):
        if key not in ALICLOUD_KEYS:
            allowed = ", ".join(ALICLOUD_KEYS)
            problems.append(
                Problem(
                    key,
                    f"is not passed to the stack's provider (it takes {allowed};"
                    f" the region is {PROJECT}:region)",
                    "alicloud",
                )
            )
            continue
        argument, secret = ALICLOUD_KEYS[key]
        if secret and key not in secret_keys:
            problems.append(
                Problem(
                    key,
                    f"is a credential and must be set as a secret: pulumi config set --secret alicloud:{key}",
                    "alicloud",
                )
            )
            continue
        credentials[argument] = pulumi.Output.secret(str(value))
    return AlicloudCredentials(**credentials)


def parse(
    stack: str,
    values: Mapping[str, Any],
    secret_keys: Iterable[str] = (),
    alicloud: Mapping[str, Any] | None = None,
    alicloud_secret_keys: Iterable[str] = (),
) -> StackConfig:
    """Validate raw config (key -> value, without the namespace) into a model.

    `values` are the project's keys, `alicloud` the provider's. Structured
    values may be given as JSON text, as the engine passes them. Raises
    `ConfigError` listing every problem found.
    """
    problems: list[Problem] = []
    alicloud_credentials = _read_alicloud(alicloud or {}, set(alicloud_secret_keys), problems)
    decoded = {key: _decode(value) for key, value in values.items()}
    top = _Fields("", decoded, problems)

    region = top.string("region")
    cluster_id = top.string("clusterId", required=True) or ""
    render_to = top.string("renderYamlTo")
    secrets = set(secret_keys)
    kubeconfigs: dict[str, pulumi.Output[str] | None] = {}
    for key in SECRET_KEYS:
        # An empty kubeconfig would make the Kubernetes provider use the
        # ambient ~/.kube/config: whichever cluster that points at.
        text = top.string(key, check=_kubeconfig_problem)
        if text is not None and key not in secrets:
            top.problem(
                key, f"holds a credential and must be set as a secret: pulumi config set --secret {key}"
            )
        kubeconfigs[key] = pulumi.Output.secret(text) if text is not None else None

    ecs = _read_ecs(top.nested("ecsCapacity"))
    virtual_nodes = _read_virtual_nodes(top.nested("virtualNodes"))
    mesh = _read_mesh(top.nested("mesh"))

    policy_name = top.string(
        "placementPolicy", PROJECT_DEFAULTS["placementPolicy"], choices=[p.value for p in Policy]
    )
    policy = Policy(policy_name or PROJECT_DEFAULTS["placementPolicy"])
    weights = Weights(
        top.integer("preferredWeight", PROJECT_DEFAULTS["preferredWeight"], 1, 100),
        top.integer("overflowWeight", PROJECT_DEFAULTS["overflowWeight"], 1, 100),
    )
    if weights.preferred <= weights.overflow:
        top.problem(
            "preferredWeight",
            f"is {weights.preferred}; must be above overflowWeight ({weights.overflow})"
            " or the preferred nodes are not preferred",
        )
    for kind in policy.allowed:
        if kind is NodeKind.ECS and ecs.mode == "none":
            top.problem("placementPolicy", f"{policy.value} needs ECS nodes, but ecsCapacity.mode is none")
        if kind is NodeKind.ECI and virtual_nodes.mode == "none":
            top.problem(
                "placementPolicy", f"{policy.value} needs virtual nodes, but virtualNodes.mode is none"
            )

    gateway_items = top.items("gateways") if top.has("gateways") else [_Fields("gateways[0]", {}, problems)]
    if top.has("gateways") and not gateway_items:
        top.problem("gateways", "must declare at least one gateway")
    gateways = tuple(_read_gateway(item, i) for i, item in enumerate(gateway_items))
    seen: set[tuple[str, str]] = set()
    for index, gateway in enumerate(gateways):
        if (gateway.namespace, gateway.name) in seen:
            problems.append(
                Problem(
                    f"gateways[{index}].name", f"'{gateway.name}' is declared twice in {gateway.namespace}"
                )
            )
        seen.add((gateway.namespace, gateway.name))

    protect = top.boolean("protect", PROJECT_DEFAULTS["protect"])
    ack_resource_policy = top.boolean("ackResourcePolicy", PROJECT_DEFAULTS["ackResourcePolicy"])
    rollout_timeout = top.integer(
        "rolloutTimeoutSeconds", PROJECT_DEFAULTS["rolloutTimeoutSeconds"], 10, 7200
    )
    gateway_args = ServerlessGatewayArgs(
        cluster_id=cluster_id,
        ecs=ecs,
        virtual_nodes=virtual_nodes,
        mesh=mesh,
        policy=policy,
        weights=weights,
        gateways=gateways,
        protect=protect,
        render_yaml_to=render_to,
        ack_resource_policy=ack_resource_policy,
        rollout_timeout_seconds=rollout_timeout,
        cluster_kubeconfig=kubeconfigs["clusterKubeconfig"],
        mesh_kubeconfig=kubeconfigs["meshKubeconfig"],
    )
    config = StackConfig(stack, region, gateway_args, alicloud_credentials)
    if gateway_args.needs_cloud and not region:
        top.problem("region", "is required: the stack declares Alibaba Cloud resources")
    if gateway_args.needs_cluster_api and kubeconfigs["clusterKubeconfig"] is None and not render_to:
        why = (
            "label and taint existing nodes"
            if ecs.mode == "existingNodes"
            else "apply ackResourcePolicy"
            if ack_resource_policy
            else "set the ECI network in kube-system/eci-profile (virtualNodes.eciVswitchIds)"
        )
        top.problem("clusterKubeconfig", f"is required to {why} (or set renderYamlTo)")
    if mesh.mode == "existing" and kubeconfigs["meshKubeconfig"] is None and not render_to:
        top.problem(
            "meshKubeconfig", "is required to apply gateways to an existing mesh (or set renderYamlTo)"
        )
    top.close()
    if problems:
        raise ConfigError(stack, problems)
    return config


def _kubeconfig_problem(text: str) -> str | None:
    if not text.strip():
        return "is empty; the stack never falls back to the ambient ~/.kube/config"
    return None


def _root_stack_urn() -> str:
    """The URN of the program's root `pulumi:pulumi:Stack` resource (named `<project>-<stack>`)."""
    project, stack = pulumi.get_project(), pulumi.get_stack()
    return f"urn:pulumi:{stack}::{project}::pulumi:pulumi:Stack::{project}-{stack}"


def provider_options(config: StackConfig, stack_component: str) -> pulumi.ResourceOptions:
    """The explicit cloud provider for the stack's component, when it declares cloud resources.

    Made here, beside the credentials it reads, and passed in through
    `ResourceOptions.providers`. It was a child of the component once; its
    alias keeps its URN.
    """
    if not config.gateway.needs_cloud:
        return pulumi.ResourceOptions()
    credentials = config.alicloud_credentials
    provider = alicloud_provider(
        f"{stack_component}-alicloud",
        config.region,
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        security_token=credentials.security_token,
        profile=credentials.profile,
        moved_from=pulumi.create_urn(
            stack_component, type_token("ServerlessGateway"), parent=_root_stack_urn()
        ),
    )
    return pulumi.ResourceOptions(providers=[provider])


def _decode(value: Any) -> Any:
    """The engine passes structured values as JSON text; scalars stay strings."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def load() -> StackConfig:
    """Read this stack's config from the running Pulumi program."""
    all_config = {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}

    def namespace(name: str) -> tuple[dict[str, Any], list[str]]:
        prefix = f"{name}:"
        found = {k[len(prefix) :]: v for k, v in all_config.items() if k.startswith(prefix)}
        return found, [k for k in found if pulumi.runtime.is_config_secret(prefix + k)]

    values, secret_keys = namespace(PROJECT)
    alicloud, alicloud_secret_keys = namespace("alicloud")
    return parse(pulumi.get_stack(), values, secret_keys, alicloud, alicloud_secret_keys)
