"""The ASM ingress gateway: an `IstioGateway` custom resource on the mesh.

`istio_gateway_spec` is pure: it turns one gateway's settings and the derived
scheduling rules into the spec, keyed in camelCase exactly as ASM's CRD has it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import child_options, type_token
from components.forecast import PodSize
from components.scheduling import SchedulingRules

API_VERSION = "istio.alibabacloud.com/v1beta1"
KIND = "IstioGateway"

# The fields ASM's IstioGateway spec has (its API types, and the document "CRD
# fields of an ASM gateway"); anything else is dropped or refused by ASM.
ISTIO_GATEWAY_FIELDS = frozenset(
    {
        # top level
        "gatewayType",
        "clusterIds",
        "overrides",
        # the basic fields, also the values of `overrides`
        "replicaCount",
        "minReplicas",
        "maxReplicas",
        "autoscaleEnabled",
        "cpu",
        "memory",
        "serviceType",
        "loadBalancerClass",
        "loadBalancerIP",
        "externalTrafficPolicy",
        "serviceAnnotations",
        "podAnnotations",
        "serviceLabels",
        "podLabels",
        "sds",
        "resources",
        "env",
        "ports",
        "meshExpansionPorts",
        "nodeSelector",
        "applicationPorts",
        "requestedNetworkView",
        "affinity",
        "tolerations",
        "secretVolumes",
        "configVolumes",
        "rollingMaxSurge",
        "rollingMaxUnavailable",
        "kernel",
        "compression",
        "runAsRoot",
        "hostNetwork",
        "dnsPolicy",
        "lifecycle",
        "readinessProbe",
        "autoCreateGatewayYaml",
        "disableContainerPortExposed",
    }
)

# The stack labels each gateway's pods itself (ASM copies `podLabels` onto
# them), so what selects them (a ResourcePolicy, the placement check) does not
# depend on ASM's own labelling.
GATEWAY_POD_LABEL = "asm-serverless-gateway/gateway"


@dataclass(frozen=True)
class GatewayPort:
    """One port of the gateway's Service."""

    name: str
    port: int
    target_port: int
    protocol: str


@dataclass(frozen=True)
class Gateway:
    """One ingress gateway's own settings (the stack derives its scheduling rules)."""

    name: str  # the IstioGateway's name, also its pods' `asm-serverless-gateway/gateway` label
    namespace: str
    replicas: int  # replicaCount
    autoscale: bool  # autoscaleEnabled: an HPA between min and max
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int  # cpu.targetAverageUtilization
    ports: tuple[GatewayPort, ...]  # the Service's ports
    service_type: str  # LoadBalancer, NodePort or ClusterIP
    service_annotations: Mapping[str, str]  # CLB/NLB annotations
    pod_annotations: Mapping[str, str]  # ECI ones among them
    resources: Mapping[str, Any]  # requests and limits, as core/v1 ResourceRequirements
    pod_size: PodSize  # its requests as numbers, for the placement forecast
    extra_spec: Mapping[str, Any]  # any other real IstioGateway field, passed as is
    # Per cluster id, what runs differently there: the spec's `overrides`.
    cluster_overrides: Mapping[str, ClusterOverride] = field(default_factory=dict)
    # Its disruption budget (components/rollout.py): at most one of the two; neither is "1 down".
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    disruption_budget: bool = True  # declare a PodDisruptionBudget for it in each cluster
    # It existed before the stack (gateways[].adopt): the stack sets only the guide's fields,
    # its derived rollout and `declared` (the spec fields the config sets), and never deletes it.
    adopt: bool = False
    declared: frozenset[str] = frozenset()

    def in_cluster(self, cluster_id: str) -> Gateway:
        """The gateway as it runs in one cluster: its own values, with that cluster's overrides."""
        override = self.cluster_overrides.get(cluster_id)
        if override is None:
            return self
        return replace(
            self,
            replicas=self.replicas if override.replicas is None else override.replicas,
            min_replicas=override.min_replicas or self.min_replicas,
            max_replicas=override.max_replicas or self.max_replicas,
            resources=override.resources or self.resources,
            pod_size=override.pod_size or self.pod_size,
            cluster_overrides={},
        )


@dataclass(frozen=True)
class ClusterOverride:
    """What one gateway runs differently in one cluster; None: as everywhere else."""

    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    resources: Mapping[str, Any] | None = None
    pod_size: PodSize | None = None  # the override's requests as numbers, with `resources`

    def as_spec(self) -> dict[str, Any]:
        """The basic fields this cluster sets, as the spec's `overrides.<clusterId>` holds them."""
        fields = {
            "replicaCount": self.replicas,
            "minReplicas": self.min_replicas,
            "maxReplicas": self.max_replicas,
            "resources": copy.deepcopy(dict(self.resources)) if self.resources is not None else None,
        }
        return {key: value for key, value in fields.items() if value is not None}


def gateway_pod_labels(gateway_name: str) -> dict[str, str]:
    return {GATEWAY_POD_LABEL: gateway_name}


def gateway_pod_selector(namespace: str, gateway_name: str) -> dict[str, str]:
    """Where one gateway's pods are: their namespace and a label selector."""
    return {"namespace": namespace, "labelSelector": f"{GATEWAY_POD_LABEL}={gateway_name}"}


def istio_gateway_spec(
    gateway: Gateway,
    rules: SchedulingRules,
    cluster_ids: Sequence[str],
    rollout: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The spec; `rollout` is its derived `rollingMaxSurge` / `rollingMaxUnavailable`."""
    spec: dict[str, Any] = copy.deepcopy(dict(gateway.extra_spec))
    spec.update(rollout or {})
    spec.update(
        {
            "clusterIds": list(cluster_ids),
            "gatewayType": "ingress",
            "replicaCount": gateway.replicas,
            "autoscaleEnabled": gateway.autoscale,
            "minReplicas": gateway.min_replicas,
            "maxReplicas": gateway.max_replicas,
            "cpu": {"targetAverageUtilization": gateway.target_cpu_utilization},
            "ports": [
                {
                    "name": port.name,
                    "port": port.port,
                    "targetPort": port.target_port,
                    "protocol": port.protocol,
                }
                for port in gateway.ports
            ],
            "serviceType": gateway.service_type,
            "serviceAnnotations": dict(gateway.service_annotations),
            "podAnnotations": dict(gateway.pod_annotations),
            "podLabels": {**spec.get("podLabels", {}), **gateway_pod_labels(gateway.name)},
            "resources": copy.deepcopy(dict(gateway.resources)),
            **rules.as_spec(),
        }
    )
    if gateway.cluster_overrides:
        # ASM takes a basic field under `overrides.<clusterId>` in place of the
        # spec's own for that cluster; only the clusters that differ are listed,
        # beside what extraSpec.overrides writes (the config refuses a field in both).
        extra = spec.get("overrides")  # extraSpec's, passed as is (the config refuses one not a map of maps)
        written: dict[str, Any] = extra if isinstance(extra, dict) else {}
        overrides = dict(written)
        for cluster, override in gateway.cluster_overrides.items():
            if cluster not in cluster_ids:
                continue  # a retiring cluster: the gateway is not there (extraSpec's stay as written)
            own = written.get(cluster)
            fields = {**(own if isinstance(own, dict) else {}), **override.as_spec()}  # empty: none
            if fields:
                overrides[cluster] = fields
        if overrides or "overrides" in spec:
            spec["overrides"] = dict(sorted(overrides.items()))
    if gateway.adopt:
        return adopted_spec(spec, gateway, cluster_ids, rollout)
    return spec


# What the stack always sets on a gateway it adopts: the guide's placement, and its pod label.
GUIDE_FIELDS = ("affinity", "tolerations", "podLabels")


def adopted_spec(
    spec: Mapping[str, Any],
    gateway: Gateway,
    cluster_ids: Sequence[str],
    rollout: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Of a full spec, what the stack sets on a gateway it adopted: the guide's fields (the pod
    label alone, beside the live ones), the derived rollout, the fields the config sets, and
    the clusters where the stack spans several. Everything else keeps its live value."""
    kept = set(GUIDE_FIELDS) | set(rollout or {}) | set(gateway.declared)
    if len(cluster_ids) > 1:
        kept.add("clusterIds")
    adopted = {key: value for key, value in spec.items() if key in kept}
    own_labels = gateway.extra_spec.get("podLabels") if "podLabels" in gateway.declared else None
    adopted["podLabels"] = {**(own_labels or {}), **gateway_pod_labels(gateway.name)}
    return adopted


@dataclass
class IstioGatewayArgs:
    gateway: Gateway
    rules: SchedulingRules
    cluster_ids: Sequence[str]  # every cluster ASM deploys it to, the first cluster first
    rollout: Mapping[str, str] | None = None  # rollingMaxSurge / rollingMaxUnavailable, derived


class IstioGateway(pulumi.ComponentResource):
    """One ingress gateway of the mesh, scheduled by the stack's rules."""

    # Known when the component is built, so plain data, not Outputs: where the
    # gateway is and the rules it got (the stack's `gateways` output).
    summary: dict[str, Any]

    def __init__(self, name: str, args: IstioGatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(type_token("IstioGateway"), name, None, opts)
        gateway = args.gateway
        spec = istio_gateway_spec(gateway, args.rules, args.cluster_ids, args.rollout)
        if gateway.adopt:
            # Made before the stack: a server-side-apply patch of its fields, under the mesh's
            # explicit provider. It takes them over from the writer that held them (the console,
            # `kubectl edit`; the preflight says which), and deleting it releases them: the
            # gateway, its Service and its load balancer stay.
            k8s.apiextensions.CustomResourcePatch(
                f"{name}-istiogateway-adopted",
                api_version=API_VERSION,
                kind=KIND,
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=gateway.name,
                    namespace=gateway.namespace,
                    annotations={"pulumi.com/patchForce": "true"},
                ),
                spec=spec,
                opts=child_options(self, opts),
            )
        else:
            k8s.apiextensions.CustomResource(
                f"{name}-istiogateway",
                api_version=API_VERSION,
                kind=KIND,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=gateway.name, namespace=gateway.namespace),
                spec=spec,
                opts=child_options(self, opts),
            )
        self.summary = {
            "namespace": gateway.namespace,
            "name": gateway.name,
            "podLabels": gateway_pod_labels(gateway.name),
            "affinity": args.rules.affinity,
            "tolerations": args.rules.tolerations,
            **({"rollout": dict(args.rollout)} if args.rollout else {}),
        }
        self.register_outputs(self.summary)
