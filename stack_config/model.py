"""The stack's config as data: every key with its type, default, constraint and meaning.

One pydantic model per config object. A field's name is the Python spelling of
its key (`eci_vswitch_ids` is `eciVswitchIds`), its `description` is the one
line the reference (docs/configuration.md) and the JSON Schema of
`stacks/Pulumi.*.yaml` are generated from (`python -m stack_config.reference`). A key whose meaning
depends on a mode lives in that mode's model, and the modes are a union told
apart by `mode`. Rules that tie keys together are model validators that name
the key they are about (`related_problems`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from components.gateway import ISTIO_GATEWAY_FIELDS
from components.rebalancer import SHARED_NAMESPACES
from components.rollout import scaled
from components.scheduling import VIRTUAL_NODE_LABELS, NodeKind, Policy, Weights
from stack_config.problems import did_you_mean, keys_of
from stack_config.syntax import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    LABEL_VALUE_PATTERN,
    NODE_POOL_ID_PATTERN,
    QUALIFIED_NAME_PATTERN,
    QUANTITY_PATTERN,
    dns_label_problem,
    dns_subdomain_problem,
    label_value_problem,
    node_pool_id_problem,
    qualified_name_problem,
    quantity_problem,
)

# -- Value types --------------------------------------------------------------------


@dataclass(frozen=True)
class KubernetesSyntax:
    """Field metadata: the text must pass Kubernetes' `check`; `pattern` is the editor's hint."""

    check: Callable[[str], str | None]
    pattern: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), "pattern": self.pattern}

    def _validate(self, value: str) -> str:
        reason = self.check(value)
        if reason:
            raise PydanticCustomError(
                "kubernetes_syntax", "'{value}' {reason}", {"value": value, "reason": reason}
            )
        return value


@dataclass(frozen=True)
class Secret:
    """Field metadata: a credential, which must come from `pulumi config set --secret`.

    Which keys the engine holds as secrets is passed in the validation context
    (`secret_keys`, with the `namespace` prefix for the message). A credential
    inside a list (`within`, the top-level key) is set with `--path`; the
    engine then holds that whole key as a secret, so that is what is checked.
    """

    within: str | None = None
    holds_credential: ClassVar[bool] = True  # error messages never repeat the value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # In a stack file a secret is always `{secure: <ciphertext>}`.
        return {
            "type": "object",
            "properties": {"secure": {"type": "string"}},
            "required": ["secure"],
            "additionalProperties": False,
        }

    def _validate(self, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        key = to_camel(info.field_name or "")
        if (self.within or key) not in context.get("secret_keys", ()):
            prefix = context.get("namespace_prefix", "")
            command = (
                f"pulumi config set --secret --path '{prefix}{self.within}[<n>].{key}'"
                if self.within
                else f"pulumi config set --secret {prefix}{key}"
            )
            raise PydanticCustomError(
                "not_secret",
                "holds a credential and must be set as a secret: {command}",
                {"command": command},
            )
        return value


def _whole_number(value: Any) -> Any:
    # YAML's `true` is not the number 1; pydantic's lax mode would take it as one.
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "must be a whole number")
    return value


def _flag(value: Any) -> Any:
    # The engine passes `true`/`false` as text; pydantic's lax mode would also take `yes`, `1`, `on`.
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise PydanticCustomError("bool_type", "must be true or false")
    return value


def _number_as_text(value: Any) -> Any:
    # YAML reads `cpu: 2` as a number; Kubernetes takes it as the quantity "2".
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _no_duplicates(items: Sequence[Hashable]) -> Sequence[Hashable]:
    repeated = sorted({str(item) for index, item in enumerate(items) if item in items[:index]})
    if repeated:
        raise PydanticCustomError(
            "duplicates", "lists {values} more than once", {"values": ", ".join(repeated)}
        )
    return items


def _empty_kubeconfig(value: str) -> str:
    if not value.strip():
        # The Kubernetes provider would take an empty kubeconfig as "use ~/.kube/config".
        raise PydanticCustomError(
            "empty_kubeconfig", "is empty; the stack never falls back to the ambient ~/.kube/config"
        )
    return value


def _count_or_percent(value: Any) -> Any:
    """A PodDisruptionBudget's amount: a whole number, or a percentage such as `50%`."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # the engine passes numbers set with `config set` as text
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit() and int(value[:-1]) <= 100:
        return f"{int(value[:-1])}%"  # "05%" as Kubernetes reads it
    raise PydanticCustomError("count_or_percent", "must be a whole number or a percentage such as 50%")


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
CountOrPercent = Annotated[
    int | str,
    BeforeValidator(_count_or_percent),
    Field(
        json_schema_extra={
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+%$"}]
        }
    ),
]
Flag = Annotated[bool, BeforeValidator(_flag)]
Text = Annotated[str, Field(min_length=1)]
UniqueTexts = Annotated[
    list[Text], AfterValidator(_no_duplicates), Field(json_schema_extra={"uniqueItems": True})
]
QualifiedName = Annotated[str, KubernetesSyntax(qualified_name_problem, QUALIFIED_NAME_PATTERN)]
LabelValue = Annotated[str, KubernetesSyntax(label_value_problem, LABEL_VALUE_PATTERN)]
DnsLabel = Annotated[str, KubernetesSyntax(dns_label_problem, DNS_LABEL_PATTERN)]
NodePoolId = Annotated[str, KubernetesSyntax(node_pool_id_problem, NODE_POOL_ID_PATTERN)]
NodeNames = Annotated[
    list[Annotated[str, KubernetesSyntax(dns_subdomain_problem, DNS_SUBDOMAIN_PATTERN)]],
    AfterValidator(_no_duplicates),
    Field(json_schema_extra={"uniqueItems": True}),
]
Quantity = Annotated[
    str,
    BeforeValidator(_number_as_text),
    KubernetesSyntax(quantity_problem, QUANTITY_PATTERN),
    Field(json_schema_extra={"type": ["string", "number"]}),
]
Kubeconfig = Annotated[str, Secret(), AfterValidator(_empty_kubeconfig)]
ListedKubeconfig = Annotated[str, Secret(within="clusters"), AfterValidator(_empty_kubeconfig)]
Credential = Annotated[str, Secret()]


def modes_of_one_section(*variants: type[ConfigModel]) -> Discriminator:
    """What tells a section's modes apart: its `mode` key, or the one mode with a default.

    Each mode also learns the keys of the whole section (see `_null_is_unset`).
    """
    (default,) = (keys_of(v)["mode"].default for v in variants if not keys_of(v)["mode"].is_required())
    keys = frozenset(key for variant in variants for key in keys_of(variant))
    for variant in variants:
        variant.section_keys = keys

    def mode_of(value: Any) -> Any:
        if isinstance(value, dict):
            return default if value.get("mode") is None else value["mode"]
        return getattr(value, "mode", None)

    return Discriminator(mode_of)


def related_problems(problems: list[tuple[str, str]]) -> None:
    """Report rules that tie keys together, each at the key (relative to the model) it is about."""
    if problems:
        raise PydanticCustomError(
            "related_keys", "{summary}", {"problems": problems, "summary": "; ".join(m for _, m in problems)}
        )


# -- Models -------------------------------------------------------------------------


class ConfigModel(BaseModel):
    """A config object: camelCase keys, unknown keys refused, frozen once read."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        # Built on first use: only the models a stack validates, once, as one schema.
        defer_build=True,
    )
    # What an unknown key's message adds, where "did you mean" is not enough.
    unknown_key_note: ClassVar[str] = ""
    # For one mode of a section: the keys of all its modes (see `null_is_unset`).
    section_keys: ClassVar[frozenset[str]] = frozenset()
    # Keys whose own keys the reference documents once, where they first appear.
    documented_elsewhere: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        # YAML reads `key:` with nothing after it (every entry commented out,
        # say) as null; it means the key's default, as it always has.
        # An unknown key stays, null or not, to be refused as unknown; a null
        # for a key of another mode of the same section is unset all the same.
        if isinstance(data, dict):
            known = cls.section_keys | set(keys_of(cls))
            return {key: value for key, value in data.items() if value is not None or key not in known}
        return data


class TaintConfig(ConfigModel):
    key: QualifiedName = Field(description="The taint's key.")
    value: LabelValue = Field("", description="The taint's value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        description="What the taint does to pods that do not tolerate it."
    )


class MarkedNodes(ConfigModel):
    """What every ECS mode shares: the marks that make nodes the gateway's."""

    labels: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        description="Labels that mark the gateway's nodes (the guide's `mykey4pod: asmgateway`);"
        " at least one, unless the mode is `none`.",
    )
    taints: list[TaintConfig] = Field(
        default_factory=list,
        description="Taints that keep other pods off the gateway's nodes"
        " (the guide's `mykey=myvalue:NoSchedule`).",
    )

    @model_validator(mode="after")
    def _marks_single_out_the_nodes(self) -> MarkedNodes:
        problems = []
        mode = getattr(self, "mode", "")
        if mode != "none" and not self.labels:
            problems.append(
                ("labels", f"must name at least one label that marks the gateway's nodes (mode {mode})")
            )
        if self.labels and all(VIRTUAL_NODE_LABELS.get(k) == v for k, v in self.labels.items()):
            problems.append(("labels", "match every virtual node too; pick a label of the pool's own"))
        pairs = [(t.key, t.effect) for t in self.taints]
        for key, effect in sorted({p for i, p in enumerate(pairs) if p in pairs[:i]}):
            problems.append(("taints", f"has the key '{key}' with effect {effect} twice"))
        related_problems(problems)
        return self


class AutoscalingConfig(ConfigModel):
    min_size: WholeNumber = Field(1, ge=0, le=1000, description="The fewest nodes the autoscaler keeps.")
    max_size: WholeNumber = Field(3, ge=1, le=1000, description="The most nodes the autoscaler adds.")

    @model_validator(mode="after")
    def _bounds_in_order(self) -> AutoscalingConfig:
        if self.min_size > self.max_size:
            related_problems([("minSize", f"is {self.min_size}, above maxSize {self.max_size}")])
        return self


class SystemDiskConfig(ConfigModel):
    category: Literal["cloud_essd", "cloud_ssd", "cloud_efficiency", "cloud_auto"] = Field(
        "cloud_essd", description="The system disk's category."
    )
    size: WholeNumber = Field(120, ge=20, le=2048, description="The system disk's size in GiB.")


class NodePoolConfig(ConfigModel):
    name: DnsLabel = Field("asm-gateway", description="The pool's name.")
    instance_types: UniqueTexts = Field(min_length=1, description="ECS instance types of the pool's nodes.")
    vswitch_ids: UniqueTexts = Field(min_length=1, description="vSwitches of the pool's nodes.")
    desired_size: WholeNumber = Field(
        2, ge=0, le=1000, description="A fixed number of nodes; not with `autoscaling`."
    )
    autoscaling: AutoscalingConfig | None = Field(
        None, description="Let ACK's autoscaler own the size between these bounds (never shown as drift)."
    )
    system_disk: SystemDiskConfig = Field(
        default_factory=SystemDiskConfig, description="The nodes' system disk."
    )
    security_group_ids: UniqueTexts = Field(
        default_factory=list, description="Security groups of the pool's nodes."
    )

    @model_validator(mode="after")
    def _one_owner_of_the_size(self) -> NodePoolConfig:
        if self.autoscaling is not None and "desired_size" in self.model_fields_set:
            related_problems(
                [("desiredSize", "cannot be set with autoscaling: the autoscaler owns the size")]
            )
        return self


class TaintedNodesConfig(MarkedNodes):
    """What the modes with nodes share: whether the stack's taints may evict others' pods there."""

    evict_other_pods: Flag = Field(
        False,
        description="Let a `NoExecute` taint the stack adds evict pods of other owners that do not"
        " tolerate it; otherwise `up` stops before the taint and names them, and `preview` warns."
        " It does not cover DaemonSets' pods: see `evictDaemonSetPods`.",
    )
    evict_daemon_set_pods: Flag = Field(
        False,
        description="Let a `NoExecute` taint the stack adds evict pods of DaemonSets that do not"
        " tolerate it (node agents such as log collectors and node-exporter): they then stay off the"
        " gateway's nodes, as their controller respects the taint. Otherwise `up` stops before the"
        " taint and names the DaemonSets, whose pods keep running once given the toleration.",
    )


class EcsNodePool(TaintedNodesConfig):
    mode: Literal["nodePool"] = Field("nodePool", description="A new ACK node pool for the gateway.")
    node_pool: NodePoolConfig = Field(description="The new pool.")


class EcsExistingNodes(TaintedNodesConfig):
    mode: Literal["existingNodes"] = Field(description="Nodes that exist, named in `nodes`.")
    nodes: NodeNames = Field(
        min_length=1,
        description="The nodes to label and taint; the stack adds and removes only its own labels"
        " and taints there.",
    )
    instance_type: Text | None = Field(
        None,
        description="The nodes' ECS instance type (e.g. `ecs.g7.xlarge`), for the placement forecast"
        " when the stack has no `clusterKubeconfig` to read the nodes' real room.",
    )


class EcsExistingNodePool(TaintedNodesConfig):
    mode: Literal["existingNodePool"] = Field(
        description="An ACK node pool that exists (made in the console or by hand), adopted by its id."
    )
    node_pool_id: NodePoolId = Field(
        description="The pool's id (`np-...`). The first `up` imports it and adds `labels` and `taints` to"
        " the pool and, in place, to its nodes; every other setting stays the pool's. `destroy` leaves"
        " the pool.",
    )


class EcsNone(MarkedNodes):
    mode: Literal["none"] = Field(description="No ECS capacity (only with `eci-only`).")


EcsCapacityConfig = Annotated[
    Annotated[EcsNodePool, Tag("nodePool")]
    | Annotated[EcsExistingNodes, Tag("existingNodes")]
    | Annotated[EcsExistingNodePool, Tag("existingNodePool")]
    | Annotated[EcsNone, Tag("none")],
    modes_of_one_section(EcsNodePool, EcsExistingNodes, EcsExistingNodePool, EcsNone),
]


class EciNetwork(ConfigModel):
    eci_vswitch_ids: UniqueTexts = Field(
        default_factory=list,
        description="vSwitches of ECI pods, written as `vSwitchIds` into `kube-system/eci-profile`;"
        " needs `clusterKubeconfig` (or `renderYamlTo`).",
    )
    eci_security_group_id: Text | None = Field(
        None,
        description="Security group of ECI pods, written as `securityGroupId` into the same `eci-profile`.",
    )


class VirtualNodesAddon(EciNetwork):
    mode: Literal["addon"] = Field(description="Install the `ack-virtual-node` add-on.")
    eci_vswitch_ids: UniqueTexts = Field(
        min_length=1, description=EciNetwork.model_fields["eci_vswitch_ids"].description
    )
    eci_security_group_id: Text = Field(
        description=EciNetwork.model_fields["eci_security_group_id"].description
    )
    addon_version: Text | None = Field(None, description="Pin the add-on's version.")
    addon_config: dict[str, Any] = Field(
        default_factory=dict,
        description="The add-on's own configuration keys, passed as they are; the stack sets none.",
    )


class VirtualNodesExisting(EciNetwork):
    mode: Literal["existing"] = Field(
        "existing", description="Virtual nodes that exist (ACK Serverless, or an add-on managed elsewhere)."
    )


class VirtualNodesNone(ConfigModel):
    mode: Literal["none"] = Field(description="No virtual nodes (only with `ecs-only`).")


VirtualNodesConfig = Annotated[
    Annotated[VirtualNodesAddon, Tag("addon")]
    | Annotated[VirtualNodesExisting, Tag("existing")]
    | Annotated[VirtualNodesNone, Tag("none")],
    modes_of_one_section(VirtualNodesAddon, VirtualNodesExisting, VirtualNodesNone),
]


class MeshCreate(ConfigModel):
    mode: Literal["create"] = Field(description="Create an ASM instance with the cluster in it.")
    name: Text = Field("asm-gateway-mesh", description="The new mesh's name.")
    edition: Literal["Default", "Pro"] = Field("Pro", description="The new mesh's edition.")
    version: Text | None = Field(None, description="The new mesh's ASM version; ASM's latest when unset.")
    vpc_id: Text = Field(description="The new mesh's VPC.")
    vswitch_id: Text = Field(description="The new mesh's vSwitch.")


class MeshExisting(ConfigModel):
    mode: Literal["existing"] = Field(
        "existing", description="A mesh that exists, reached through `meshKubeconfig`."
    )


MeshConfig = Annotated[
    Annotated[MeshCreate, Tag("create")] | Annotated[MeshExisting, Tag("existing")],
    modes_of_one_section(MeshCreate, MeshExisting),
]


class PortConfig(ConfigModel):
    name: DnsLabel = Field(description="The port's name; unique in the gateway.")
    port: WholeNumber = Field(ge=1, le=65535, description="The Service's port; unique in the gateway.")
    target_port: WholeNumber | None = Field(
        None, ge=1, le=65535, description="The pods' port; `port` when unset."
    )
    protocol: Literal["HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS"] = Field(
        "TCP", description="The protocol."
    )


class ResourcesConfig(ConfigModel):
    requests: dict[QualifiedName, Quantity] | None = Field(
        None,
        description="What each pod asks for: resource names to Kubernetes quantities (`500m`, `2`, `4Gi`).",
    )
    limits: dict[QualifiedName, Quantity] | None = Field(None, description="What each pod may use at most.")


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
# Spec fields the stack derives from the node groups and the cluster.
ISTIO_GATEWAY_DERIVED = frozenset({"affinity", "tolerations", "clusterIds", "gatewayType"})


EXTRA_SPEC_FIELDS = tuple(sorted(ISTIO_GATEWAY_FIELDS - ISTIO_GATEWAY_DERIVED - set(EXTRA_SPEC_OWN_KEYS)))


def extra_spec_problem(key: str) -> str | None:
    """Why `gateways[].extraSpec` may not carry `key`, if it may not."""
    if key in ISTIO_GATEWAY_DERIVED:
        return "is derived by the stack and cannot be set here"
    if key in EXTRA_SPEC_OWN_KEYS:
        return f"has its own key: set gateways[].{EXTRA_SPEC_OWN_KEYS[key]} instead"
    if key not in ISTIO_GATEWAY_FIELDS:
        return "is not a field of ASM's IstioGateway spec" + did_you_mean(
            key, ISTIO_GATEWAY_FIELDS, cutoff=0.6
        )
    return None


def _extra_spec_key(key: str) -> str:
    reason = extra_spec_problem(key)
    if reason:
        raise PydanticCustomError("extra_spec_field", "{reason}", {"reason": reason})
    return key


# Defaults as config text, validated where they are used: building a model
# object here would build its validator on import, on every preview.
DEFAULT_PORTS = (
    {"name": "http-0", "port": 80, "protocol": "HTTP"},
    {"name": "https", "port": 443, "protocol": "HTTPS"},
)
DEFAULT_RESOURCES = {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}}


class ClusterOverrideConfig(ConfigModel):
    """What one cluster runs differently (the IstioGateway's `overrides.<clusterId>`)."""

    replica_count: WholeNumber | None = Field(
        None, ge=0, le=1000, description="Replicas in this cluster; the gateway's `replicaCount` when unset."
    )
    min_replicas: WholeNumber | None = Field(
        None, ge=1, le=1000, description="The HPA's lower bound in this cluster."
    )
    max_replicas: WholeNumber | None = Field(
        None, ge=1, le=1000, description="The HPA's upper bound in this cluster."
    )
    resources: ResourcesConfig | None = Field(
        None, description="The pods' requests and limits in this cluster, in place of the gateway's."
    )


# ASM's docs: a gateway elsewhere cannot fetch its configuration (Istio 1.6 and later) and never starts.
ASM_GATEWAY_NAMESPACE = "istio-system"
# ASM's docs: before this version a gateway port's protocol must be TCP.
FIRST_ASM_WITH_PORT_PROTOCOLS = (1, 9, 7, 107)


def asm_version(text: str) -> tuple[int, ...] | None:
    """`v1.22.6.71-g1a2b-aliyun` or `1.9.7.107` as numbers; None if it does not start with one."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", text.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


class GatewayConfig(ConfigModel):
    name: DnsLabel = Field(
        "ingressgateway",
        description="The `IstioGateway`'s name, also its pods' `asm-serverless-gateway/gateway` label.",
    )
    namespace: DnsLabel = Field(
        ASM_GATEWAY_NAMESPACE,
        description="The `IstioGateway`'s namespace; ASM starts gateways only in `istio-system`.",
    )
    replica_count: WholeNumber = Field(
        2, ge=0, le=1000, description="Replicas; within min..max when autoscaling."
    )
    autoscale_enabled: Flag = Field(True, description="An HPA between `minReplicas` and `maxReplicas`.")
    min_replicas: WholeNumber = Field(2, ge=1, le=1000, description="The HPA's lower bound.")
    max_replicas: WholeNumber = Field(5, ge=1, le=1000, description="The HPA's upper bound.")
    target_cpu_utilization: WholeNumber = Field(
        80, ge=1, le=100, description="The HPA's CPU target, `cpu.targetAverageUtilization`."
    )
    ports: list[PortConfig] = Field(
        default=list(DEFAULT_PORTS),
        validate_default=True,
        min_length=1,
        description="The gateway Service's ports.",
    )
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = Field(
        "LoadBalancer", description="The gateway Service's type."
    )
    service_annotations: dict[QualifiedName, str] = Field(
        default_factory=dict, description="The Service's annotations (CLB/NLB ones)."
    )
    pod_annotations: dict[QualifiedName, str] = Field(
        default_factory=dict,
        description="The pods' annotations, ECI ones among them"
        " (`k8s.aliyun.com/eci-use-specs`, image cache).",
    )
    resources: ResourcesConfig = Field(
        default=DEFAULT_RESOURCES, validate_default=True, description="The pods' requests and limits."
    )
    cluster_overrides: dict[Text, ClusterOverrideConfig] = Field(
        default_factory=dict,
        description="Per cluster id, what runs differently there (replica bounds, resources); written"
        " into the spec's `overrides`, so set only where a cluster really differs.",
    )
    min_available: CountOrPercent | None = Field(
        None,
        description="The fewest Ready pods a rollout, a drain or the rebalancer may leave (a count or a"
        " percentage); instead of `maxUnavailable`.",
    )
    max_unavailable: CountOrPercent | None = Field(
        None,
        description="The most pods a rollout, a drain or the rebalancer may take down at once (a count or"
        " a percentage); `1` when neither this nor `minAvailable` is set.",
    )
    adopt: Flag = Field(
        False,
        description="The IstioGateway exists already (made in ASM's console, say): the stack takes it"
        " over without recreating it, sets only the placement rules, its pod label, the derived rollout"
        " and the keys of this entry you set, and on `destroy` releases them and leaves the gateway.",
    )
    pod_disruption_budget: Flag = Field(
        True,
        description="Declare a PodDisruptionBudget with this budget in each cluster (the IstioGateway has"
        " no field for one); without it, the rebalancer never moves this gateway's pods.",
    )
    extra_spec: dict[Annotated[str, BeforeValidator(_extra_spec_key)], Any] = Field(
        default_factory=dict,
        description="Any other field of ASM's `IstioGateway` spec, in camelCase, passed as is;"
        " not one the stack derives (`affinity`, `tolerations`, `clusterIds`, `gatewayType`)"
        " or one with its own key. Its `podLabels` are kept beside the stack's own.",
        # Editors complete the real fields from this list.
        json_schema_extra={"propertyNames": {"enum": list(EXTRA_SPEC_FIELDS)}},
    )

    @model_validator(mode="after")
    def _replicas_and_ports_agree(self) -> GatewayConfig:
        problems = self._replica_problems(
            "", self.replica_count, self.min_replicas, self.max_replicas, self.model_fields_set
        )
        extra_overrides = self.extra_spec.get("overrides")
        joinable = extra_overrides is None or (
            isinstance(extra_overrides, dict) and all(isinstance(v, dict) for v in extra_overrides.values())
        )
        if self.cluster_overrides and not joinable:
            problems.append(
                (
                    "extraSpec.overrides",
                    "must map cluster ids to objects of fields to be joined with clusterOverrides",
                )
            )
        for cluster, override in self.cluster_overrides.items():
            written = extra_overrides.get(cluster) if isinstance(extra_overrides, dict) else None
            for key in sorted(override.model_dump(by_alias=True, exclude_none=True)):
                if isinstance(written, dict) and key in written:
                    problems.append(
                        (
                            f"clusterOverrides.{cluster}.{key}",
                            f"is also set in extraSpec.overrides.{cluster}; set it in one place",
                        )
                    )
            problems += self._replica_problems(
                f"clusterOverrides.{cluster}.",
                self.replica_count if override.replica_count is None else override.replica_count,
                override.min_replicas or self.min_replicas,
                override.max_replicas or self.max_replicas,
                # The cluster's replicaCount is the gateway's where the override leaves it out.
                override.model_fields_set | (self.model_fields_set & {"replica_count"}),
            )
        problems += self._budget_problems()
        for what, values in (
            ("name", [p.name for p in self.ports]),
            ("port number", [p.port for p in self.ports]),
        ):
            for repeated in sorted({v for i, v in enumerate(values) if v in values[:i]}, key=str):
                problems.append(("ports", f"uses the {what} {repeated} more than once"))
        related_problems(problems)
        return self

    def _budget_problems(self) -> list[tuple[str, str]]:
        """A budget that lets no pod be evicted (every drain and the rebalancer would wait for
        ever) or lets every pod go at once, at the fewest pods the gateway runs in any cluster."""
        if self.min_available is not None and self.max_unavailable is not None:
            return [("maxUnavailable", "cannot be set with minAvailable; set one of them")]
        if self.min_available is None and self.max_unavailable is None:
            return []  # one pod down at a time: never all, never none
        at_fewest = [("", self._fewest(self.replica_count, self.min_replicas))] + [
            (
                f" in clusterOverrides.{cluster}",
                self._fewest(
                    self.replica_count if override.replica_count is None else override.replica_count,
                    override.min_replicas or self.min_replicas,
                ),
            )
            for cluster, override in self.cluster_overrides.items()
        ]
        bound = "minReplicas" if self.autoscale_enabled else "replicaCount"
        # A gateway of one pod may lose it (a budget of none would block every drain); from two
        # pods up, never all at once: checked at its fewest, and at two where it scales there.
        if self.autoscale_enabled and self.max_replicas >= 2:
            at_fewest += [(where + " scaled to 2", 2) for where, fewest in at_fewest if fewest == 1]
        for where, fewest in at_fewest:
            if self.min_available is not None:
                key, text = "minAvailable", str(self.min_available)
                kept = scaled(self.min_available, fewest, round_up=True)  # a PDB rounds it up
                down = fewest - kept
            else:
                key, text = "maxUnavailable", str(self.max_unavailable)
                assert self.max_unavailable is not None
                down = scaled(self.max_unavailable, fewest, round_up=True)  # so does a PDB
            if fewest and down <= 0:
                return [
                    (
                        key,
                        f"is {text}, which keeps all {fewest} pods ({bound}{where}) Ready: no drain,"
                        " rollout or rebalancing could ever take one down",
                    )
                ]
            if fewest > 1 and down >= fewest:
                return [
                    (
                        key,
                        f"is {text}, which lets all {fewest} pods ({bound}{where}) go down at once;"
                        " set podDisruptionBudget: false for no budget",
                    )
                ]
        return []

    def _fewest(self, replicas: int, least: int) -> int:
        """The fewest pods the gateway runs: the HPA's lower bound, else its replicas."""
        return least if self.autoscale_enabled else replicas

    def _replica_problems(
        self, at: str, replicas: int, least: int, most: int, fields_set: set[str]
    ) -> list[tuple[str, str]]:
        """Replica bounds out of order where set (`at`: "" for the gateway's own, else a cluster's)."""
        if least > most:
            if at == "" or "min_replicas" in fields_set:
                return [(f"{at}minReplicas", f"is {least}, above maxReplicas {most}")]
            return [(f"{at}maxReplicas", f"is {most}, below minReplicas {least}")]
        if self.autoscale_enabled and "replica_count" in fields_set and not least <= replicas <= most:
            return [
                (f"{at}replicaCount", f"is {replicas}, outside minReplicas..maxReplicas ({least}..{most})")
            ]
        return []


class ClusterConfig(ConfigModel):
    """One more data-plane cluster of the mesh: what the flat keys are for the first."""

    documented_elsewhere: ClassVar[frozenset[str]] = frozenset({"ecsCapacity", "virtualNodes"})

    cluster_id: DnsLabel = Field(
        description="The ACK cluster's id (it also names this cluster's resources, render folder and RBAC)."
    )
    cluster_kubeconfig: ListedKubeconfig | None = Field(
        None,
        description="Its kubeconfig, as `clusterKubeconfig` is the first cluster's:"
        " `pulumi config set --secret --path 'clusters[<n>].clusterKubeconfig'`.",
    )
    ecs_capacity: EcsCapacityConfig = Field(
        description="Its gateway nodes, as `ecsCapacity`; `labels` and `taints` left out are the first"
        " cluster's, and given, must be the same."
    )
    virtual_nodes: VirtualNodesConfig = Field(
        default_factory=VirtualNodesExisting, description="Its virtual nodes, as `virtualNodes`."
    )
    retiring: Flag = Field(
        False,
        description="Take the gateways out of this cluster, keeping its capacity, marks and mesh"
        " membership: the first `up` of removing a cluster (delete the entry in the second).",
    )


class RebalancerConfig(ConfigModel):
    """The Kubernetes descheduler the stack runs per cluster to move gateway pods back onto ECS."""

    enabled: Flag = Field(
        True,
        description="Run it in each cluster that has ECS and virtual nodes under `prefer-ecs` (needs"
        " the cluster's kubeconfig, or `renderYamlTo`); it evicts only the gateways' pods, through the"
        " Eviction API. Its objects are named per stack (`asm-gateway-rebalancer-<stack>-<hash>`).",
    )
    interval_seconds: WholeNumber = Field(
        60, ge=10, le=86400, description="How often it looks for gateway pods on ECI that ECS has room for."
    )
    max_evictions_per_run: WholeNumber = Field(
        2, ge=1, le=1000, description="The most gateway pods it evicts in one run, over every gateway."
    )
    namespace: DnsLabel = Field(
        "asm-gateway-rebalancer",
        description="Its own namespace, made once by an admin (the generated `cluster-rbac.yaml` holds"
        " it, Pod Security `restricted`); not one every cluster has.",
    )

    @field_validator("namespace")
    @classmethod
    def _its_own(cls, value: str) -> str:
        if value in SHARED_NAMESPACES:
            raise PydanticCustomError(
                "shared_namespace",
                "is a namespace every cluster has; the stack makes one for the rebalancer alone",
            )
        return value

    image: Text = Field(
        "registry.k8s.io/descheduler/descheduler:v0.36.0",
        description="Its image; a copy in your own registry (ACR) where the cluster cannot pull this one.",
    )


class GatewayStackConfig(ConfigModel):
    """The project's own keys (`asm-serverless-gateway:<key>`).

    `clusterId`, `clusterKubeconfig`, `ecsCapacity` and `virtualNodes` are
    what one ACK cluster brings: the first. A mesh over several clusters lists
    the others in `clusters`, with exactly those keys; each gateway is
    deployed to all of them, with `clusterOverrides` where one differs.
    """

    cluster_id: Text = Field(
        description="The ACK cluster: the pool and add-on go into it, a new mesh adds it,"
        " and every gateway's `clusterIds` names it."
    )
    region: Text | None = Field(
        None, description="Alibaba Cloud region; required when the stack declares cloud resources."
    )
    cluster_kubeconfig: Kubeconfig | None = Field(
        None,
        description="Kubeconfig of the ACK cluster, to label and taint `existingNodes`,"
        " write the `eci-profile` and apply `ackResourcePolicy`.",
    )
    mesh_kubeconfig: Kubeconfig | None = Field(
        None, description="Kubeconfig of an existing mesh's control plane (`mesh.mode: existing`)."
    )
    render_yaml_to: Text | None = Field(
        None,
        description="Without a kubeconfig, write manifests under this folder (`cluster/`, `mesh/`) instead of"
        " applying them; a kubeconfig, when set, wins.",
    )
    placement_policy: Policy = Field(
        Policy.PREFER_ECS,
        description="Which kinds of node the gateways may use, the preferred one first (`prefer-ecs` is the"
        " guide's: ECS preferred, ECI as overflow).",
    )
    preferred_weight: WholeNumber = Field(
        Weights().preferred,
        ge=1,
        le=100,
        description="Preferred-affinity weight of the preferred kind of node.",
    )
    overflow_weight: WholeNumber = Field(
        Weights().overflow, ge=1, le=100, description="Weight of the overflow kind; below `preferredWeight`."
    )
    protect: Flag = Field(
        False, description="Protect the node pool, the add-on, the mesh and the gateways from deletion."
    )
    rollout_timeout_seconds: WholeNumber = Field(
        600,
        ge=10,
        le=7200,
        description="How long an `up` waits for every gateway pod to tolerate a taint before adding it to the"
        " gateway's nodes; on time-out the taint is not added and the `up` fails, naming the pods.",
    )
    ack_resource_policy: Flag = Field(
        False,
        description="Also apply an ACK `ResourcePolicy` per gateway (the pool's ECS nodes, then ECI)"
        " for strict ECS-first on ACK Pro; needs `clusterKubeconfig`.",
    )
    ecs_capacity: EcsCapacityConfig = Field(description="The gateway's dedicated ECS nodes.")
    virtual_nodes: VirtualNodesConfig = Field(
        default_factory=VirtualNodesExisting, description="The virtual nodes the gateway bursts onto."
    )
    clusters: list[ClusterConfig] = Field(
        default_factory=list,
        description="The mesh's other data-plane clusters, each with its own capacity; every gateway's"
        " `clusterIds` lists them after `clusterId`, and the same labels and taints mark the gateway"
        " nodes of every cluster.",
    )
    mesh: MeshConfig = Field(default_factory=MeshExisting, description="The ASM instance the gateways go to.")
    rebalancer: RebalancerConfig = Field(
        default_factory=RebalancerConfig,
        description="The descheduler that moves gateway pods from ECI back to ECS when ECS has room.",
    )
    gateways: list[GatewayConfig] = Field(
        default_factory=lambda: [GatewayConfig()],
        min_length=1,
        description="The ingress gateways, one `IstioGateway` each; several may share the capacity.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _keys_agree(
        cls, data: Any, handler: ModelWrapValidatorHandler[GatewayStackConfig]
    ) -> GatewayStackConfig:
        if isinstance(data, dict):
            data = _with_inherited_marks(data)
        try:
            config = handler(data)
        except ValidationError as error:
            # The rules that tie sections together still run on what did
            # validate, so that one run names every problem.
            problems = _agreement_problems(_valid_parts(data)) if isinstance(data, dict) else []
            if problems:
                raise MoreProblems(error, problems) from error
            raise
        related_problems(_agreement_problems({name: getattr(config, name) for name in cls.model_fields}))
        return config


class MoreProblems(Exception):  # noqa: N818 - not an error of its own: more of the same
    """A validation error, and the related-key problems found beside it."""

    def __init__(self, error: ValidationError, problems: list[tuple[str, str]]) -> None:
        super().__init__(str(error))
        self.error = error
        self.problems = problems


def _valid_parts(data: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys of `data` that validate on their own (by field name); a section by its mode."""
    parts: dict[str, Any] = {}
    for name, info in GatewayStackConfig.model_fields.items():
        raw = data.get(info.alias or name)
        if raw is None:
            if not info.is_required():
                parts[name] = info.get_default(call_default_factory=True)
            continue
        try:
            annotation: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            parts[name] = TypeAdapter(annotation).validate_python(raw)
        except ValidationError:
            modes = [m for m in info.metadata if isinstance(m, Discriminator)]
            if modes and callable(modes[0].discriminator):
                parts[name] = SimpleNamespace(mode=modes[0].discriminator(raw))
    return parts


def _with_inherited_marks(data: dict[str, Any]) -> dict[str, Any]:
    """Each listed cluster's `ecsCapacity`, with the first's labels and taints where it leaves them out."""
    first, listed = data.get("ecsCapacity"), data.get("clusters")
    if not isinstance(first, dict) or not isinstance(listed, list):
        return data
    marks = {key: first[key] for key in ("labels", "taints") if first.get(key) is not None}
    # A key left empty (null) is unset here too: it takes the first cluster's.
    clusters = [
        {
            **entry,
            "ecsCapacity": {**marks, **{k: v for k, v in entry["ecsCapacity"].items() if v is not None}},
        }
        if isinstance(entry, dict) and isinstance(entry.get("ecsCapacity"), dict)
        else entry
        for entry in listed
    ]
    return {**data, "clusters": clusters}


def _cluster_problems(parts: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules across the stack's clusters: each listed once, each able to run the policy, one set of marks."""
    listed: list[ClusterConfig] = parts.get("clusters") or []
    problems: list[tuple[str, str]] = []
    policy = parts.get("placement_policy")
    first_id, first_ecs = parts.get("cluster_id"), parts.get("ecs_capacity")
    where = {first_id: "clusterId"} if first_id else {}
    for index, cluster in enumerate(listed):
        at = f"clusters[{index}]."
        if cluster.cluster_id in where:
            problems.append(
                (f"{at}clusterId", f"'{cluster.cluster_id}' is already listed at {where[cluster.cluster_id]}")
            )
        where.setdefault(cluster.cluster_id, f"{at}clusterId")
        if policy is not None and NodeKind.ECS in policy.allowed and cluster.ecs_capacity.mode == "none":
            problems.append(
                (f"{at}ecsCapacity.mode", f"is none, but {policy.value} needs ECS nodes in every cluster")
            )
        if policy is not None and NodeKind.ECI in policy.allowed and cluster.virtual_nodes.mode == "none":
            problems.append(
                (
                    f"{at}virtualNodes.mode",
                    f"is none, but {policy.value} needs virtual nodes in every cluster",
                )
            )
    # A section that did not validate is only its mode here (_valid_parts): no marks to compare.
    marked = [
        (at, ecs)
        for at, ecs in [("", first_ecs)] + [(f"clusters[{i}].", c.ecs_capacity) for i, c in enumerate(listed)]
        if ecs is not None and not isinstance(ecs, SimpleNamespace) and ecs.mode != "none"
    ]
    # One IstioGateway's affinity and tolerations serve every cluster: the same marks everywhere.
    for at, ecs in marked[1:]:
        first_at, first = marked[0]
        for key in ("labels", "taints"):
            if _marks(getattr(ecs, key)) != _marks(getattr(first, key)):
                problems.append(
                    (
                        f"{at}ecsCapacity.{key}",
                        f"differ from {first_at}ecsCapacity.{key}: one IstioGateway's affinity and"
                        " tolerations serve every cluster, so every cluster's gateway nodes carry the"
                        f" same {key} (leave them out to take the first cluster's)",
                    )
                )
    # Which clusters there are is only known when the list and the first id are valid.
    known = {cluster_id for cluster_id in where if cluster_id}
    checkable = "clusters" in parts and first_id is not None
    for index, gateway in enumerate(parts.get("gateways") or [] if checkable else []):
        for cluster_id in gateway.cluster_overrides:
            if cluster_id not in known:
                problems.append(
                    (
                        f"gateways[{index}].clusterOverrides.{cluster_id}",
                        "is not a cluster of this stack (clusterId, clusters[].clusterId)"
                        + did_you_mean(cluster_id, known, cutoff=0.6),
                    )
                )
    return problems


def _marks(marks: dict[str, str] | list[TaintConfig]) -> Any:
    """Labels or taints as a value that compares equal whatever their order."""
    return marks if isinstance(marks, dict) else sorted((t.key, t.value, t.effect) for t in marks)


# Keys an adopted gateway's entry may not set: releasing them (on `destroy`, or taking the
# entry out) would leave the live gateway without them, its Service without its listeners.
NOT_ADOPTABLE = {"ports": "ports", "service_type": "serviceType", "service_annotations": "serviceAnnotations",
                 "cluster_overrides": "clusterOverrides"}  # fmt: skip


def _adoption_problems(index: int, gateway: GatewayConfig, parts: dict[str, Any]) -> list[tuple[str, str]]:
    """What an adopted gateway's entry cannot do: see NOT_ADOPTABLE, and work without the mesh."""
    at = f"gateways[{index}]"
    problems = [
        (f"{at}.{key}", "cannot be set on an adopted gateway: the stack would remove it on release; keep"
                        " it where the gateway was made (ASM's console)")
        for attribute, key in NOT_ADOPTABLE.items()
        if attribute in gateway.model_fields_set
    ]  # fmt: skip
    if parts.get("mesh_kubeconfig") is None:
        problems.append(
            (f"{at}.adopt", "is true, but meshKubeconfig is not set: adoption reads the gateway first")
        )
    if parts.get("clusters"):
        problems.append(
            (f"{at}.adopt", "is true in a stack of several clusters, which adoption does not cover yet")
        )
    return problems


def _agreement_problems(parts: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules across sections, on those parts of the config that are known to be valid."""
    problems: list[tuple[str, str]] = _cluster_problems(parts)
    preferred, overflow = parts.get("preferred_weight"), parts.get("overflow_weight")
    if preferred is not None and overflow is not None and preferred <= overflow:
        problems.append(
            (
                "preferredWeight",
                f"is {preferred}; must be above overflowWeight ({overflow})"
                " or the preferred nodes are not preferred",
            )
        )
    policy = parts.get("placement_policy")
    ecs, virtual = parts.get("ecs_capacity"), parts.get("virtual_nodes")
    if policy is not None and ecs is not None and NodeKind.ECS in policy.allowed and ecs.mode == "none":
        problems.append(("placementPolicy", f"{policy.value} needs ECS nodes, but ecsCapacity.mode is none"))
    if (
        policy is not None
        and virtual is not None
        and NodeKind.ECI in policy.allowed
        and virtual.mode == "none"
    ):
        problems.append(
            ("placementPolicy", f"{policy.value} needs virtual nodes, but virtualNodes.mode is none")
        )
    seen: set[tuple[str, str]] = set()
    mesh = parts.get("mesh")
    mesh_version = mesh.version if isinstance(mesh, MeshCreate) else None
    version = asm_version(mesh_version) if mesh_version else None
    for index, gateway in enumerate(parts.get("gateways") or []):
        if gateway.namespace != ASM_GATEWAY_NAMESPACE:
            problems.append(
                (
                    f"gateways[{index}].namespace",
                    f"is {gateway.namespace}: ASM starts gateways only in {ASM_GATEWAY_NAMESPACE} (elsewhere,"
                    " since Istio 1.6, a gateway cannot fetch its configuration and never starts)",
                )
            )
        if version is not None and version < FIRST_ASM_WITH_PORT_PROTOCOLS:
            problems += [
                (
                    f"gateways[{index}].ports[{p}].protocol",
                    f"is {port.protocol}, but ASM before 1.9.7.107 (mesh.version {mesh_version})"
                    " takes TCP only",
                )
                for p, port in enumerate(gateway.ports)
                if port.protocol != "TCP"
            ]
        if (gateway.namespace, gateway.name) in seen:
            problems.append(
                (f"gateways[{index}].name", f"'{gateway.name}' is declared twice in {gateway.namespace}")
            )
        seen.add((gateway.namespace, gateway.name))
        if gateway.adopt:
            problems += _adoption_problems(index, gateway, parts)
        if gateway.adopt and mesh is not None and mesh.mode == "create":
            problems.append(
                (
                    f"gateways[{index}].adopt",
                    "is true, but the stack creates the mesh (mesh.mode: create): it has no gateway yet",
                )
            )
    return problems


class AlicloudConfig(ConfigModel):
    """The `alicloud:` keys the stack passes to its explicit provider.

    A default provider would read them itself; with default providers
    disabled, nothing would, so any other `alicloud:` key is refused.
    """

    unknown_key_note: ClassVar[str] = (
        "is not passed to the stack's provider (it takes accessKey, secretKey, securityToken, profile;"
        " the region is asm-serverless-gateway:region)"
    )
    access_key: Credential | None = Field(
        None, description="Access key of the stack's Alibaba Cloud provider."
    )
    secret_key: Credential | None = Field(None, description="Secret key of the same provider.")
    security_token: Credential | None = Field(None, description="STS token of the same provider.")
    profile: Text | None = Field(
        None, description="A profile of the Alibaba Cloud CLI's config, for the same provider."
    )
