"""Stand-ins for what ASM (and ACK) provide, for the cluster tests only.

ASM's control plane serves the `IstioGateway` CRD and its controller turns each
IstioGateway into a Deployment of Envoy pods. Neither runs here, so this module
provides both: a CRD with ASM's real field list (so the API server validates
the stack's specs against it and prunes any field ASM does not have), and a controller stand-in that
builds the Deployment from an IstioGateway's spec as ASM's controller does:
replicas, resources, pod annotations, affinity, tolerations.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import kubernetes

from components.rebalancer import Rebalancer

REBALANCER_NAMESPACE = Rebalancer().namespace

GROUP = "istio.alibabacloud.com"
VERSION = "v1beta1"
PLURAL = "istiogateways"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_FREE_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _namespaced_crd(group: str, version: str, kind: str, plural: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A one-version, namespaced CRD whose objects carry a `spec` of this schema."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
                }
            ],
        },
    }


_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_STRING = {"type": "string"}
_PORTS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "port"],
        "properties": {
            "name": _STRING,
            "protocol": _STRING,
            "appProtocol": _STRING,
            "port": _INT,
            "targetPort": {"x-kubernetes-int-or-string": True},
            "nodePort": _INT,
        },
    },
}
_TOLERATIONS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "key": _STRING,
            "operator": {"type": "string", "enum": ["Equal", "Exists"]},
            "value": _STRING,
            "effect": _STRING,
            "tolerationSeconds": _INT,
        },
    },
}

# ASM's IstioGateway basic fields, written here from ASM's published API types
# (../shared/reference/istio-gateway-spec.md), not from the stack's own list,
# so a field the stack names wrongly is pruned by the API server and the
# cluster tests see it missing.
_BASIC_FIELDS: dict[str, Any] = {
    "replicaCount": _INT,
    "minReplicas": {"type": "integer", "minimum": 1},
    "maxReplicas": {"type": "integer", "minimum": 1},
    "autoscaleEnabled": _BOOL,
    "cpu": {"type": "object", "properties": {"targetAverageUtilization": _INT}},
    "memory": {"type": "object", "properties": {"targetAverageUtilization": _INT}},
    "serviceType": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "loadBalancerClass": _STRING,
    "loadBalancerIP": _STRING,
    "externalTrafficPolicy": _STRING,
    "serviceAnnotations": _STRING_MAP,
    "podAnnotations": _STRING_MAP,
    "serviceLabels": _STRING_MAP,
    "podLabels": _STRING_MAP,
    "sds": _FREE_OBJECT,
    "resources": _FREE_OBJECT,
    "env": {"type": "array", "items": _FREE_OBJECT},
    "ports": _PORTS,
    "meshExpansionPorts": _PORTS,
    "nodeSelector": _STRING_MAP,
    "applicationPorts": _STRING,
    "requestedNetworkView": _STRING,
    "affinity": _FREE_OBJECT,
    "tolerations": _TOLERATIONS,
    "secretVolumes": {"type": "array", "items": _FREE_OBJECT},
    "configVolumes": {"type": "array", "items": _FREE_OBJECT},
    "rollingMaxSurge": {"x-kubernetes-int-or-string": True},
    "rollingMaxUnavailable": {"x-kubernetes-int-or-string": True},
    "kernel": _FREE_OBJECT,
    "compression": _FREE_OBJECT,
    "runAsRoot": _BOOL,
    "hostNetwork": _BOOL,
    "dnsPolicy": _STRING,
    "lifecycle": _FREE_OBJECT,
    "readinessProbe": {
        "type": "object",
        "properties": {"failureThreshold": _INT, "periodSeconds": _INT, "successThreshold": _INT},
    },
    "autoCreateGatewayYaml": _BOOL,
    "disableContainerPortExposed": _BOOL,
}

ISTIO_GATEWAY_CRD = _namespaced_crd(
    GROUP,
    VERSION,
    "IstioGateway",
    PLURAL,
    {
        "type": "object",
        "required": ["clusterIds", "gatewayType"],
        "properties": {
            "gatewayType": {"type": "string", "enum": ["ingress", "egress"]},
            "clusterIds": {"type": "array", "items": _STRING},
            "overrides": {
                "type": "object",
                "additionalProperties": {"type": "object", "properties": _BASIC_FIELDS},
            },
            **_BASIC_FIELDS,
        },
    },
)


# ACK Pro serves this CRD for its scheduler; the schema is the fields the stack sets.
RESOURCE_POLICY_CRD = _namespaced_crd(
    "scheduling.alibabacloud.com",
    "v1alpha1",
    "ResourcePolicy",
    "resourcepolicies",
    {
        "type": "object",
        "required": ["units"],
        "properties": {
            "selector": _STRING_MAP,
            "strategy": {"type": "string", "enum": ["prefer"]},
            "units": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["resource"],
                    "properties": {
                        "resource": {"type": "string", "enum": ["ecs", "eci", "acs"]},
                        "nodeSelector": _STRING_MAP,
                    },
                },
            },
        },
    },
)


def install(api: kubernetes.client.ApiClient, namespace: str = "istio-system") -> None:
    """What an ASM mesh on ACK Pro has before any gateway: the CRDs and the namespace."""
    extensions = kubernetes.client.ApiextensionsV1Api(api)
    existing = {crd.metadata.name for crd in extensions.list_custom_resource_definition().items}
    for crd in (ISTIO_GATEWAY_CRD, RESOURCE_POLICY_CRD):
        if crd["metadata"]["name"] not in existing:
            extensions.create_custom_resource_definition(crd)
    core = kubernetes.client.CoreV1Api(api)
    if namespace not in {ns.metadata.name for ns in core.list_namespace().items}:
        core.create_namespace({"metadata": {"name": namespace}})


STANDIN_LABEL = "asm-standin/made"
LOAD_BALANCER_IP = "203.0.113.10"  # a documentation address: the stand-in's load balancer


def gateway_deployment(gateway: dict[str, Any]) -> dict[str, Any]:
    """The Deployment that ASM's controller makes of one IstioGateway."""
    spec = gateway["spec"]
    name = gateway["metadata"]["name"]
    # Istio selects a gateway's pods by `app` and `istio` alone: podLabels may change later.
    selector = {"app": name, "istio": name}
    labels = {**selector, **spec.get("podLabels", {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": gateway["metadata"]["namespace"], "labels": labels},
        "spec": {
            "replicas": spec.get("replicaCount", 1),
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": spec.get("podAnnotations", {})},
                "spec": {
                    "affinity": spec.get("affinity"),
                    "tolerations": spec.get("tolerations", []),
                    "containers": [
                        {
                            "name": "istio-proxy",
                            # No kubelet runs: the image is never pulled.
                            "image": "asm-proxy:stand-in",
                            "resources": spec.get("resources", {}),
                            "ports": [
                                {"containerPort": p.get("targetPort", p["port"]), "name": p["name"][:15]}
                                for p in spec.get("ports", [])
                            ],
                        }
                    ],
                },
            },
        },
    }


def read_gateway(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """An IstioGateway as the mesh's API serves it."""
    gateway: dict[str, Any] = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return gateway


def reconcile(
    api: kubernetes.client.ApiClient, namespace: str, name: str, replicas: int | None = None
) -> None:
    """Create or update the gateway's Deployment from its IstioGateway, like ASM does.

    `replicas`, if given, stands for the HPA scaling within min..max.
    """
    deployment = gateway_deployment(read_gateway(api, namespace, name))
    if replicas is not None:
        deployment["spec"]["replicas"] = replicas
    apps = kubernetes.client.AppsV1Api(api)
    existing = {d.metadata.name for d in apps.list_namespaced_deployment(namespace).items}
    if name in existing:
        apps.replace_namespaced_deployment(name, namespace, deployment)
    else:
        apps.create_namespaced_deployment(namespace, deployment)


# -- ASM's controller and a kubelet, as background loops ----------------------------------------


def _int_or_percent(text: Any) -> int | str:
    """ASM's `rollingMax*` are strings; its controller parses them as IntOrString does."""
    return int(text) if isinstance(text, int) or str(text).isdigit() else str(text)


def _rollout_strategy(spec: dict[str, Any]) -> dict[str, Any]:
    """The Deployment strategy ASM gives a gateway (its `rollingMax*` fields, Istio's defaults)."""
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {
            "maxSurge": _int_or_percent(spec.get("rollingMaxSurge", "100%")),
            "maxUnavailable": _int_or_percent(spec.get("rollingMaxUnavailable", "25%")),
        },
    }


class MeshController:
    """ASM's gateway controller, stood in: it watches IstioGateways and reconciles their
    Deployments continuously, acting on a new spec `delay` seconds after it sees it (ASM
    reconciles on its own time). With autoscaling on, the replica count of an existing
    Deployment is left to the HPA (here: to whoever scaled it).

    With `clusters` (cluster id -> that cluster's API), it deploys each IstioGateway into
    every cluster its `clusterIds` lists, with that cluster's `overrides` in place of the
    spec's own fields, and takes it out of a cluster the list no longer names, as ASM
    does for a mesh of several clusters. Without, every gateway runs in the mesh's own API.

    It also plays the kubelets, which do not run here: a bound gateway pod is reported
    Running and Ready, and a pod being deleted is removed once it is terminating, so that
    Deployments roll out and evictions complete as they would on real nodes.
    """

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        namespace: str,
        delay: float = 2.0,
        clusters: dict[str, kubernetes.client.ApiClient] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.delay = delay
        self.clusters = clusters
        self._seen: dict[str, tuple[int, float]] = {}  # gateway -> (generation, first seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="asm-standin", daemon=True)
        self.errors: list[str] = []

    def start(self) -> MeshController:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._reconcile_gateways()
                for api in self.clusters.values() if self.clusters else [self.api]:
                    self._play_kubelets(api)
            except Exception as error:  # noqa: BLE001  # keep running, as a controller does
                self.errors.append(repr(error))
            self._stop.wait(0.3)

    def _reconcile_gateways(self) -> None:
        gateways = kubernetes.client.CustomObjectsApi(self.api).list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL
        )["items"]
        now = time.monotonic()
        wanted: dict[str, set[str]] = {}  # cluster id -> the gateways it runs
        for gateway in gateways:
            name = gateway["metadata"]["name"]
            generation = gateway["metadata"]["generation"]
            seen = self._seen.get(name)
            if seen is None or seen[0] != generation:
                self._seen[name] = seen = (generation, now)
            listed = gateway["spec"].get("clusterIds", [])
            for cluster_id in listed if self.clusters else [""]:
                wanted.setdefault(cluster_id, set()).add(name)
            if now - seen[1] < self.delay:
                continue
            if not self.clusters:
                self._deploy(self.api, gateway, gateway["spec"])
                continue
            for cluster_id in listed:
                if cluster_id in self.clusters:
                    overrides = gateway["spec"].get("overrides", {}).get(cluster_id, {})
                    self._deploy(self.clusters[cluster_id], gateway, {**gateway["spec"], **overrides})
        # A gateway a cluster no longer runs (taken off its clusterIds, or deleted) is removed there,
        # with its Service (and so its load balancer).
        for cluster_id, api in (self.clusters or {"": self.api}).items():
            core = kubernetes.client.CoreV1Api(api)
            for service in core.list_namespaced_service(self.namespace).items:
                made_here = (service.metadata.labels or {}).get(STANDIN_LABEL) == "true"
                if made_here and service.metadata.name not in wanted.get(cluster_id, set()):
                    core.delete_namespaced_service(service.metadata.name, self.namespace)
            apps = kubernetes.client.AppsV1Api(api)
            for deployment in apps.list_namespaced_deployment(self.namespace).items:
                made_here = "asm-standin/generation" in (deployment.metadata.annotations or {})
                if made_here and deployment.metadata.name not in wanted.get(cluster_id, set()):
                    apps.delete_namespaced_deployment(
                        deployment.metadata.name, self.namespace, propagation_policy="Background"
                    )

    def _deploy(
        self, api: kubernetes.client.ApiClient, gateway: dict[str, Any], spec: dict[str, Any]
    ) -> None:
        """Create or update one gateway's Deployment in one cluster, from `spec` as it applies there."""
        name = gateway["metadata"]["name"]
        generation = gateway["metadata"]["generation"]
        apps = kubernetes.client.AppsV1Api(api)
        current = next(
            (d for d in apps.list_namespaced_deployment(self.namespace).items if d.metadata.name == name),
            None,
        )
        self._expose(api, gateway, spec)
        wanted = gateway_deployment({**gateway, "spec": spec})
        wanted["spec"]["strategy"] = _rollout_strategy(spec)
        wanted["metadata"]["annotations"] = {"asm-standin/generation": str(generation)}
        if current is None:
            apps.create_namespaced_deployment(self.namespace, wanted)
        elif (current.metadata.annotations or {}).get("asm-standin/generation") != str(generation):
            if spec.get("autoscaleEnabled", True):
                wanted["spec"]["replicas"] = current.spec.replicas
            apps.replace_namespaced_deployment(
                name,
                self.namespace,
                {
                    **wanted,
                    "metadata": {**wanted["metadata"], "resourceVersion": current.metadata.resource_version},
                },
            )

    def _expose(
        self, api: kubernetes.client.ApiClient, gateway: dict[str, Any], spec: dict[str, Any]
    ) -> None:
        """The gateway's Service, as ASM keeps it: its type, ports and annotations from the spec,
        the same object (uid, cluster IP, load balancer address) across changes."""
        name = gateway["metadata"]["name"]
        core = kubernetes.client.CoreV1Api(api)
        wanted = {
            "metadata": {
                "name": name,
                "labels": {STANDIN_LABEL: "true"},
                "annotations": dict(spec.get("serviceAnnotations") or {}),
            },
            "spec": {
                "type": spec.get("serviceType", "LoadBalancer"),
                "selector": {"app": name, "istio": name},
                "ports": [
                    {"name": p["name"], "port": p["port"], "targetPort": p.get("targetPort", p["port"]),
                     "protocol": p.get("protocol", "TCP") if p.get("protocol") in ("TCP", "UDP") else "TCP"}
                    for p in spec.get("ports", [])
                ],
            },
        }  # fmt: skip
        current = next(
            (svc for svc in core.list_namespaced_service(self.namespace).items if svc.metadata.name == name),
            None,
        )
        if current is None:
            core.create_namespaced_service(self.namespace, wanted)
            if wanted["spec"]["type"] == "LoadBalancer":  # the cloud's part: an address
                core.patch_namespaced_service_status(
                    name,
                    self.namespace,
                    {"status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}}},
                )
            return
        live_ports = [(p.name, p.port) for p in current.spec.ports or []]
        if (
            live_ports != [(p["name"], p["port"]) for p in wanted["spec"]["ports"]]
            or (current.metadata.annotations or {}) != wanted["metadata"]["annotations"]
        ):
            # The same object, its ports and annotations replaced (uid, cluster IP, address kept).
            body = api.sanitize_for_serialization(current)
            body["metadata"]["annotations"] = wanted["metadata"]["annotations"]
            body["spec"]["ports"] = wanted["spec"]["ports"]
            core.replace_namespaced_service(name, self.namespace, body)

    def _play_kubelets(self, api: kubernetes.client.ApiClient) -> None:
        core = kubernetes.client.CoreV1Api(api)
        # The rebalancer's pod, which the stack deploys beside the gateway: a kubelet ends it
        # when it is deleted (its namespace goes with a cluster the stack drops).
        for pod in core.list_namespaced_pod(REBALANCER_NAMESPACE).items:
            if pod.metadata.deletion_timestamp is not None:
                core.delete_namespaced_pod(pod.metadata.name, REBALANCER_NAMESPACE, grace_period_seconds=0)
        for pod in core.list_namespaced_pod(self.namespace).items:
            if pod.metadata.deletion_timestamp is not None:
                core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
            # A kubelet never brings a finished (Failed, Succeeded) pod back.
            elif pod.spec.node_name and pod.status.phase not in ("Running", "Succeeded", "Failed"):
                core.patch_namespaced_pod_status(
                    pod.metadata.name,
                    self.namespace,
                    {
                        "status": {
                            "phase": "Running",
                            "conditions": [
                                {"type": "PodScheduled", "status": "True"},
                                {"type": "Initialized", "status": "True"},
                                {"type": "ContainersReady", "status": "True"},
                                {"type": "Ready", "status": "True"},
                            ],
                        }
                    },
                )
