"""The stack's config, read once into validated, typed component inputs.

Every config key is declared once, in `stack_config.model`; this module
validates a stack's raw config against it and turns the result into the
components' own Args (`ServerlessGatewayArgs`), so that nothing under
`components/` knows about config. A mistake stops the program before any
resource is registered, with one message that names the stack, each bad key
path and what it allows (`ConfigError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pulumi
from pydantic import BaseModel, ValidationError

from components import PACKAGE, type_token
from components.data_plane import DataPlaneCluster
from components.forecast import PodSize, amounts
from components.gateway import ClusterOverride, Gateway, GatewayPort
from components.mesh import Mesh
from components.node_pool import Autoscaling, EcsCapacity, NodePoolSpec
from components.providers import alicloud_provider
from components.rebalancer import Rebalancer
from components.rebalancer import object_name as rebalancer_object_name
from components.scheduling import Taint, Weights
from components.stack import ServerlessGatewayArgs
from components.virtual_nodes import VirtualNodes
from stack_config.model import (
    DEFAULT_RESOURCES,
    AlicloudConfig,
    ClusterConfig,
    ClusterOverrideConfig,
    EcsCapacityConfig,
    EcsExistingNodePool,
    EcsExistingNodes,
    EcsNodePool,
    GatewayConfig,
    GatewayStackConfig,
    MeshCreate,
    MoreProblems,
    ResourcesConfig,
    Secret,
    TaintedNodesConfig,
    VirtualNodesAddon,
    VirtualNodesConfig,
    VirtualNodesExisting,
)
from stack_config.problems import ConfigError, Problem, keys_of, metadata_of, problems_from
from stack_config.syntax import (
    dns_label_problem,
    label_value_problem,
    parse_quantity,
    qualified_name_problem,
    quantity_problem,
)

__all__ = [
    "PROJECT",
    "SECRET_KEYS",
    "AlicloudCredentials",
    "ConfigError",
    "Problem",
    "StackConfig",
    "from_config_json",
    "from_stack_file",
    "label_value_problem",
    "load",
    "parse",
    "parse_quantity",
    "provider_options",
    "qualified_name_problem",
    "quantity_problem",
]

PROJECT = PACKAGE  # config keys live in the project namespace

# The keys that hold credentials, which must be set with --secret: the key itself,
# or (`clusters`) a key inside it, set with --path.
SECRET_KEYS = tuple(
    key
    for key, info in keys_of(GatewayStackConfig).items()
    if any(isinstance(m, Secret) for m in metadata_of(info))
) + tuple(
    sorted(
        {
            m.within
            for info in keys_of(ClusterConfig).values()
            for m in metadata_of(info)
            if isinstance(m, Secret) and m.within
        }
    )
)


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
    # The kubeconfigs' text by config key, for the preflight (never shown: repr=False).
    kubeconfigs: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


# -- Validating ----------------------------------------------------------------------

Model = TypeVar("Model", bound=BaseModel)


def _validate(
    model: type[Model],
    values: Mapping[str, Any],
    secret_keys: Iterable[str],
    namespace: str,
    problems: list[Problem],
) -> Model | None:
    prefix = "" if namespace == PROJECT else f"{namespace}:"
    context = {"secret_keys": set(secret_keys), "namespace_prefix": prefix}
    try:
        return model.model_validate(values, context=context)
    except ValidationError as error:
        problems.extend(problems_from(error, model, namespace))
    except MoreProblems as more:
        problems.extend(problems_from(more.error, model, namespace))
        problems.extend(Problem(key, message, namespace) for key, message in more.problems)
    return None


def _needs_problems(config: GatewayStackConfig, args: ServerlessGatewayArgs) -> list[Problem]:
    """Keys that the rest of the config makes necessary."""
    problems: list[Problem] = []
    applying = not config.render_yaml_to
    if args.needs_cloud and not config.region:
        problems.append(Problem("region", "is required: the stack declares Alibaba Cloud resources", PROJECT))
    for cluster in args.clusters:
        if cluster.ecs.mode == "existingNodePool" and cluster.kubeconfig is None:
            problems.append(
                Problem(
                    cluster.kubeconfig_key,
                    f"is required to adopt node pool {cluster.ecs.node_pool_id}: its nodes exist and may"
                    " serve, so the stack reads them, and waits for the gateway's pods there to tolerate"
                    " the taints before ACK puts them on",
                    PROJECT,
                )
            )
        elif cluster.needs_api(args.ack_resource_policy) and cluster.kubeconfig is None and applying:
            why = (
                "label and taint existing nodes"
                if cluster.ecs.mode == "existingNodes"
                else "apply ackResourcePolicy"
                if args.ack_resource_policy
                else "set the ECI network in kube-system/eci-profile"
                f" ({cluster.config_path}virtualNodes.eciVswitchIds)"
            )
            problems.append(
                Problem(cluster.kubeconfig_key, f"is required to {why} (or set renderYamlTo)", PROJECT)
            )
    if args.mesh.mode == "existing" and config.mesh_kubeconfig is None and applying:
        problems.append(
            Problem(
                "meshKubeconfig",
                "is required to apply gateways to an existing mesh (or set renderYamlTo)",
                PROJECT,
            )
        )
    return problems


def parse(
    stack: str,
    values: Mapping[str, Any],
    secret_keys: Iterable[str] = (),
    alicloud: Mapping[str, Any] | None = None,
    alicloud_secret_keys: Iterable[str] = (),
) -> StackConfig:
    """Validate raw config (key -> value, without the namespace) into the components' inputs.

    `values` are the project's keys, `alicloud` the provider's. Structured
    values may be given as JSON text, as the engine passes them. Raises
    `ConfigError` listing every problem found.
    """
    problems: list[Problem] = []
    decoded = {key: _decode(value) for key, value in values.items()}
    config = _validate(GatewayStackConfig, decoded, secret_keys, PROJECT, problems)
    credentials = _validate(AlicloudConfig, dict(alicloud or {}), alicloud_secret_keys, "alicloud", problems)
    if config is not None:
        args = gateway_args(config, stack)
        problems.extend(_needs_problems(config, args))
    if problems:
        raise ConfigError(stack, _naming_the_clusters(problems, decoded))
    assert config is not None and credentials is not None
    kubeconfigs = {
        key: text
        for key, text in (
            ("clusterKubeconfig", config.cluster_kubeconfig),
            ("meshKubeconfig", config.mesh_kubeconfig),
            *(
                (f"clusters[{index}].clusterKubeconfig", cluster.cluster_kubeconfig)
                for index, cluster in enumerate(config.clusters)
            ),
        )
        if text is not None
    }
    return StackConfig(stack, config.region, args, alicloud_credentials(credentials), kubeconfigs)


def _naming_the_clusters(problems: Iterable[Problem], values: Mapping[str, Any]) -> list[Problem]:
    """Problems under `clusters[<n>]` with that cluster's id beside its position, where it has a
    valid one. A problem of the marks a listed cluster takes from the first is left out where the
    first cluster's own is reported: it is the same problem, at the key the user wrote."""
    problems = list(problems)
    reported = {(p.path, p.message) for p in problems}
    listed = values.get("clusters")
    named = []
    for problem in problems:
        found = re.match(r"clusters\[(\d+)\](\.ecsCapacity(\.(labels|taints)(?=[.\[]|$).*))?", problem.path)
        if problem.namespace != PROJECT or not found or not isinstance(listed, list):
            named.append(problem)
            continue
        index = int(found.group(1))
        found_entry = listed[index] if index < len(listed) else None
        entry: dict[str, Any] = found_entry if isinstance(found_entry, dict) else {}
        capacity = entry.get("ecsCapacity")
        own: dict[str, Any] = capacity if isinstance(capacity, dict) else {}
        inherited = found.group(4) and own.get(found.group(4)) is None
        if inherited and (f"ecsCapacity{found.group(3)}", problem.message) in reported:
            continue
        message = problem.message.replace("clusters[<n>]", f"clusters[{index}]")
        cluster_id = entry.get("clusterId")
        where = (
            f" (cluster {cluster_id})"
            if isinstance(cluster_id, str) and not dns_label_problem(cluster_id)
            else ""
        )
        named.append(replace(problem, path=problem.path + where, message=message))
    return named


# -- Config to the components' inputs ----------------------------------------------------


def _secret(text: str | None) -> pulumi.Output[str] | None:
    return pulumi.Output.secret(text) if text is not None else None


def _sorted(mapping: Mapping[str, str]) -> dict[str, str]:
    # Sorted, so that reordering keys in config is never a diff.
    return dict(sorted(mapping.items()))


def alicloud_credentials(config: AlicloudConfig) -> AlicloudCredentials:
    return AlicloudCredentials(
        access_key=_secret(config.access_key),
        secret_key=_secret(config.secret_key),
        security_token=_secret(config.security_token),
        profile=_secret(config.profile),
    )


def gateway_args(config: GatewayStackConfig, stack: str) -> ServerlessGatewayArgs:
    return ServerlessGatewayArgs(
        cluster_id=config.cluster_id,
        ecs=_ecs_capacity(config.ecs_capacity),
        virtual_nodes=_virtual_nodes(config.virtual_nodes),
        mesh=_mesh(config),
        policy=config.placement_policy,
        weights=Weights(config.preferred_weight, config.overflow_weight),
        gateways=tuple(_gateway(gateway) for gateway in config.gateways),
        protect=config.protect,
        render_yaml_to=config.render_yaml_to,
        ack_resource_policy=config.ack_resource_policy,
        rollout_timeout_seconds=config.rollout_timeout_seconds,
        rebalancer=Rebalancer(
            enabled=config.rebalancer.enabled,
            interval_seconds=config.rebalancer.interval_seconds,
            max_evictions_per_run=config.rebalancer.max_evictions_per_run,
            namespace=config.rebalancer.namespace,
            image=config.rebalancer.image,
            name=rebalancer_object_name(PROJECT, stack),
        ),
        cluster_kubeconfig=_secret(config.cluster_kubeconfig),
        mesh_kubeconfig=_secret(config.mesh_kubeconfig),
        more_clusters=tuple(
            DataPlaneCluster(
                cluster.cluster_id,
                _ecs_capacity(cluster.ecs_capacity),
                _virtual_nodes(cluster.virtual_nodes),
                f"clusters[{index}].",
                _secret(cluster.cluster_kubeconfig),
                cluster.retiring,
            )
            for index, cluster in enumerate(config.clusters)
        ),
    )


def _ecs_capacity(ecs: EcsCapacityConfig) -> EcsCapacity:
    taints = tuple(sorted({Taint(t.key, t.value, t.effect) for t in ecs.taints}))
    node_pool = None
    if isinstance(ecs, EcsNodePool):
        pool = ecs.node_pool
        scaling = pool.autoscaling
        node_pool = NodePoolSpec(
            name=pool.name,
            instance_types=tuple(pool.instance_types),
            vswitch_ids=tuple(pool.vswitch_ids),
            desired_size=None if scaling else pool.desired_size,
            autoscaling=Autoscaling(scaling.min_size, scaling.max_size) if scaling else None,
            system_disk_category=pool.system_disk.category,
            system_disk_size=pool.system_disk.size,
            security_group_ids=tuple(pool.security_group_ids),
        )
    nodes = tuple(ecs.nodes) if isinstance(ecs, EcsExistingNodes) else ()
    tainted = ecs if isinstance(ecs, TaintedNodesConfig) else None
    instance_type = ecs.instance_type if isinstance(ecs, EcsExistingNodes) else None
    pool_id = ecs.node_pool_id if isinstance(ecs, EcsExistingNodePool) else None
    return EcsCapacity(
        ecs.mode,
        _sorted(ecs.labels),
        taints,
        node_pool,
        nodes,
        evict_other_pods=bool(tainted and tainted.evict_other_pods),
        evict_daemon_set_pods=bool(tainted and tainted.evict_daemon_set_pods),
        instance_type=instance_type,
        node_pool_id=pool_id,
    )


def _virtual_nodes(virtual: VirtualNodesConfig) -> VirtualNodes:
    if isinstance(virtual, VirtualNodesAddon):
        return VirtualNodes(
            virtual.mode,
            tuple(virtual.eci_vswitch_ids),
            virtual.eci_security_group_id,
            virtual.addon_version,
            virtual.addon_config,
        )
    if isinstance(virtual, VirtualNodesExisting):
        return VirtualNodes(virtual.mode, tuple(virtual.eci_vswitch_ids), virtual.eci_security_group_id)
    return VirtualNodes(virtual.mode)


def _mesh(config: GatewayStackConfig) -> Mesh:
    mesh = config.mesh
    if isinstance(mesh, MeshCreate):
        return Mesh(mesh.mode, mesh.name, mesh.edition, mesh.version, mesh.vpc_id, mesh.vswitch_id)
    return Mesh(mesh.mode)


def _resources(resources: ResourcesConfig) -> dict[str, dict[str, str]]:
    """`requests` and `limits` as core/v1 ResourceRequirements has them."""
    parts = (("requests", resources.requests), ("limits", resources.limits))
    return {part: _sorted(amounts) for part, amounts in parts if amounts}


def _pod_size(resources: Mapping[str, Mapping[str, str]]) -> PodSize:
    # Kubernetes takes a container's limits as its requests where it gives none.
    requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    amounts_asked = {name: parse_quantity(amount) for name, amount in requests.items()}
    return PodSize(
        cpu=amounts_asked.pop("cpu", Decimal(0)),
        memory=amounts_asked.pop("memory", Decimal(0)),
        other=amounts(amounts_asked),
    )


def _cluster_override(override: ClusterOverrideConfig) -> ClusterOverride:
    resources = _resources(override.resources) if override.resources is not None else None
    return ClusterOverride(
        replicas=override.replica_count,
        min_replicas=override.min_replicas,
        max_replicas=override.max_replicas,
        resources=resources or None,
        pod_size=_pod_size(resources) if resources else None,
    )


def _gateway(gateway: GatewayConfig) -> Gateway:
    # `resources: {}` is the default, as it always was.
    resources = _resources(gateway.resources) or DEFAULT_RESOURCES
    return Gateway(
        name=gateway.name,
        namespace=gateway.namespace,
        replicas=gateway.replica_count,
        autoscale=gateway.autoscale_enabled,
        min_replicas=gateway.min_replicas,
        max_replicas=gateway.max_replicas,
        target_cpu_utilization=gateway.target_cpu_utilization,
        ports=tuple(
            GatewayPort(port.name, port.port, port.target_port or port.port, port.protocol)
            for port in gateway.ports
        ),
        service_type=gateway.service_type,
        service_annotations=_sorted(gateway.service_annotations),
        pod_annotations=_sorted(gateway.pod_annotations),
        resources=resources,
        pod_size=_pod_size(resources),
        extra_spec=gateway.extra_spec,
        cluster_overrides={
            cluster: _cluster_override(override)
            for cluster, override in sorted(gateway.cluster_overrides.items())
        },
        min_available=gateway.min_available,
        max_unavailable=gateway.max_unavailable,
        disruption_budget=gateway.pod_disruption_budget,
        adopt=gateway.adopt,
        declared=_declared_fields(gateway),
    )


# The IstioGateway fields each gateway key writes (the rest are the stack's own or none).
_SPEC_FIELDS_OF_KEYS = {
    "replica_count": ("replicaCount",),
    "autoscale_enabled": ("autoscaleEnabled",),
    "min_replicas": ("minReplicas",),
    "max_replicas": ("maxReplicas",),
    "target_cpu_utilization": ("cpu",),
    "ports": ("ports",),
    "service_type": ("serviceType",),
    "service_annotations": ("serviceAnnotations",),
    "pod_annotations": ("podAnnotations",),
    "resources": ("resources",),
    "cluster_overrides": ("overrides",),
}


def _declared_fields(gateway: GatewayConfig) -> frozenset[str]:
    """The spec fields the gateway's entry sets itself (not by default): what an adopted
    gateway's patch declares beside the guide's fields."""
    fields = {f for key in gateway.model_fields_set for f in _SPEC_FIELDS_OF_KEYS.get(key, ())}
    return frozenset(fields | set(gateway.extra_spec))


# -- Loading -----------------------------------------------------------------------------


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


def _from_flat(stack: str, flat: Mapping[str, Any], secret: Callable[[str], bool]) -> StackConfig:
    """Parse `namespace:key -> value` config, as the engine holds it."""

    def namespace(name: str) -> tuple[dict[str, Any], list[str]]:
        prefix = f"{name}:"
        found = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        return found, [k for k in found if secret(prefix + k)]

    values, secret_keys = namespace(PROJECT)
    alicloud, alicloud_secret_keys = namespace("alicloud")
    return parse(stack, values, secret_keys, alicloud, alicloud_secret_keys)


def load() -> StackConfig:
    """Read this stack's config from the running Pulumi program."""
    all_config = {**pulumi.runtime.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    stack = pulumi.get_stack()
    _refuse_listed_kubeconfigs_in_plain_text(stack, all_config)
    return _from_flat(stack, all_config, pulumi.runtime.is_config_secret)


def from_config_json(stack: str, listing: Mapping[str, Mapping[str, Any]]) -> StackConfig:
    """Parse what `pulumi config --json --show-secrets` prints for a stack."""
    flat = {
        key: entry["value"] if "value" in entry else json.dumps(entry.get("objectValue"))
        for key, entry in listing.items()
    }
    _refuse_listed_kubeconfigs_in_plain_text(stack, flat)
    return _from_flat(stack, flat, lambda key: bool(listing[key].get("secret")))


LISTED_CLUSTERS = f"{PROJECT}:clusters"
# Pulumi.yaml's stackConfigDir.
STACK_CONFIG_DIR = Path(__file__).resolve().parent.parent / "stacks"


def _refuse_listed_kubeconfigs_in_plain_text(stack: str, flat: Mapping[str, Any]) -> None:
    """Refuse a listed cluster's kubeconfig that the stack file holds in plain text.

    Set with `--secret --path`, it makes the engine hold the whole `clusters`
    key as a secret, and another entry's kubeconfig pasted in plain text beside
    it would pass as one: only the stack file tells them apart. Read only when
    a listed cluster has a kubeconfig.
    """
    if "clusterKubeconfig" not in str(flat.get(LISTED_CLUSTERS, "")):
        return
    path = STACK_CONFIG_DIR / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"
    if not path.is_file():
        return
    import yaml  # noqa: PLC0415 - only this reader needs it

    _refuse_plain_text_in(
        stack, ((yaml.safe_load(path.read_text()) or {}).get("config") or {}).get(LISTED_CLUSTERS)
    )


def _refuse_plain_text_in(stack: str, listed: Any) -> None:
    """Refuse each listed cluster whose kubeconfig a stack file holds as text, not `{secure: ...}`."""
    problems = [
        Problem(
            f"clusters[{index}].clusterKubeconfig",
            "holds a credential in plain text in the stack file; set it as a secret:"
            f" pulumi config set --secret --path 'clusters[{index}].clusterKubeconfig'",
            PROJECT,
        )
        for index, cluster in enumerate(listed if isinstance(listed, list) else [])
        if isinstance(cluster, dict) and isinstance(cluster.get("clusterKubeconfig"), str)
    ]
    if problems:
        raise ConfigError(stack, _naming_the_clusters(problems, {"clusters": listed}))


def from_stack_file(stack: str, path: Path) -> StackConfig:
    """Parse a stack file as it is in the repo, for what it declares: no secret is decrypted, and
    the kubeconfigs count as set (they are, once the stack runs), whatever their values."""
    import yaml  # noqa: PLC0415 - only this reader needs it

    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") or {}
    _refuse_plain_text_in(stack, config.get(LISTED_CLUSTERS))
    for key in (f"{PROJECT}:clusterKubeconfig", f"{PROJECT}:meshKubeconfig"):
        config.setdefault(key, {"secure": ""})
    for cluster in config.get(f"{PROJECT}:clusters") or []:
        if isinstance(cluster, dict):
            cluster.setdefault("clusterKubeconfig", {"secure": ""})
    # As the engine has it: a key is a secret when it holds one anywhere (set with --path).
    secret = {key for key, value in config.items() if _holds_secret(value)}
    flat = {key: _without_ciphertext(value) for key, value in config.items()}
    return _from_flat(stack, flat, lambda key: key in secret)


def _holds_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return "secure" in value or any(_holds_secret(v) for v in value.values())
    return isinstance(value, list) and any(_holds_secret(v) for v in value)


def _without_ciphertext(value: Any) -> Any:
    """A config value with each secret in it as the text `(secret)`."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return "(secret)"
        return {k: _without_ciphertext(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_ciphertext(v) for v in value]
    return value
