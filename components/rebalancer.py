"""The rebalancer: the Kubernetes descheduler, narrowed to the gateway's pods, in each cluster.

Preferred node affinity only steers where a pod starts. After a rollout, a
drained node's return or a burst, gateway pods can stay on ECI (billed per
second) while the ECS nodes have room again. The upstream descheduler's
`RemovePodsViolatingNodeAffinity` plugin, for preferred affinity, evicts a
pod when a node it prefers more exists; its `DefaultEvictor` is set so that
it only does so for the gateway's own pods (namespace and the stack's pod
label), only when one of the gateway's ECS nodes has room for the pod now
(`nodeFit` over those nodes), only through the Eviction API, and only for a
gateway that has a PodDisruptionBudget. `descheduler_policy` is pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import type_token
from components.gateway import GATEWAY_POD_LABEL, Gateway
from components.scheduling import VIRTUAL_NODE_LABELS

PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
NAME = "asm-gateway-rebalancer"
PSA_MODES = ("enforce", "audit", "warn")
# Namespaces that exist in every cluster: the rebalancer has one of its own.
SHARED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def object_name(project: str, stack: str) -> str:
    """The name of one stack's rebalancer objects (account, role, binding, Deployment).

    Per stack, so that stacks sharing a cluster (and its rebalancer namespace) each run their
    own and never write each other's; the hash tells apart stack names that read alike once
    made a DNS label (`prod_a`, `prod.a`). At most 52 characters: it is a label value too.
    """
    stack = stack.rsplit("/", 1)[-1]
    readable = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")[:20].strip("-")
    digest = hashlib.sha256(f"{project}/{stack}".encode()).hexdigest()[:6]
    return "-".join(part for part in (NAME, readable, digest) if part)


@dataclass(frozen=True)
class Rebalancer:
    """How the stack runs the descheduler (the `rebalancer` config section)."""

    enabled: bool = True
    interval_seconds: int = 60
    max_evictions_per_run: int = 2
    namespace: str = NAME  # its own, made once by an admin: the deployer writes nowhere else
    image: str = "registry.k8s.io/descheduler/descheduler:v0.36.0"
    name: str = NAME  # its objects' name: object_name() of the stack


def moves(gateway: Gateway) -> bool:
    """Whether the rebalancer moves the gateway's pods: only within a PodDisruptionBudget, and
    not on the host's network, where `nodeFit` cannot see that an ECS node's ports are taken
    (each run would evict a pod the scheduler can only send back to ECI)."""
    return gateway.disruption_budget and not gateway.extra_spec.get("hostNetwork")


def descheduler_policy(
    gateways: Sequence[Gateway], ecs_labels: Mapping[str, str], max_evictions_per_run: int
) -> dict[str, Any]:
    """A DeschedulerPolicy (descheduler/v1alpha2) with one profile per gateway.

    Each profile evicts only pods in the gateway's namespace with its pod label
    that fit one of the ECS nodes (the pool's labels) other than their own now;
    `maxNoOfPodsToEvictTotal` bounds each run. A gateway without a
    PodDisruptionBudget gets no profile: the descheduler's own `PodsWithoutPDB`
    protection reads budgets through an informer that v0.36.0 never starts, so
    it would refuse every pod; the stack keeps the rule itself.
    """
    ecs_nodes = ",".join(f"{key}={value}" for key, value in sorted(ecs_labels.items()))
    profiles = []
    for gateway in (g for g in gateways if moves(g)):
        pods = {"matchLabels": {GATEWAY_POD_LABEL: gateway.name}}
        profiles.append(
            {
                "name": f"{gateway.namespace}-{gateway.name}",
                "pluginConfig": [
                    {
                        "name": "DefaultEvictor",
                        "args": {
                            "labelSelector": pods,
                            # Only when one of the gateway's ECS nodes has room for it now.
                            "nodeFit": True,
                            "nodeSelector": ecs_nodes,
                            # Never the only pod of its ReplicaSet: that eviction is an outage.
                            "minReplicas": 2,
                            # Envoy's emptyDir volumes hold nothing that outlives the pod.
                            "podProtections": {"defaultDisabled": ["PodsWithLocalStorage"]},
                        },
                    },
                    {
                        "name": "RemovePodsViolatingNodeAffinity",
                        "args": {
                            "nodeAffinityType": [PREFERRED],
                            "namespaces": {"include": [gateway.namespace]},
                            "labelSelector": pods,
                        },
                    },
                ],
                "plugins": {
                    "filter": {"enabled": ["DefaultEvictor"]},
                    "preevictionfilter": {"enabled": ["DefaultEvictor"]},
                    "deschedule": {"enabled": ["RemovePodsViolatingNodeAffinity"]},
                },
            }
        )
    return {
        "apiVersion": "descheduler/v1alpha2",
        "kind": "DeschedulerPolicy",
        "maxNoOfPodsToEvictTotal": max_evictions_per_run,
        "profiles": profiles,
    }


def policy_document(policy: Mapping[str, Any]) -> str:
    """The policy as the descheduler reads it from its file (JSON is YAML)."""
    return json.dumps(policy, indent=2, sort_keys=True)


def descheduler_rules() -> list[dict[str, Any]]:
    """What the descheduler reads and does: the upstream chart's role, less what it does not
    use here (no pod deletion, no leader election, no metrics API)."""
    read = ["get", "list", "watch"]
    return [
        {
            "apiGroups": [""],
            "resources": ["nodes", "namespaces", "pods", "persistentvolumeclaims"],
            "verbs": read,
        },
        {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": read},
        {"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": read},
        # Its event recorder patches a repeated event into a series.
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "update", "patch"]},
    ]


def rebalancer_namespace(namespace: str) -> dict[str, Any]:
    """The rebalancer's namespace, as an admin makes it once: Pod Security admits only
    restricted pods there, so what the deployer may write in it cannot run privileged."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in PSA_MODES},
        },
    }


def away_from(ecs_labels: Mapping[str, str]) -> dict[str, Any]:
    """Node affinity that keeps the descheduler off the gateway's ECS nodes and off ECI."""
    (virtual_key, virtual_value), *_ = VIRTUAL_NODE_LABELS.items()
    not_virtual = {"key": virtual_key, "operator": "NotIn", "values": [virtual_value]}
    terms = [
        {"matchExpressions": [{"key": key, "operator": "NotIn", "values": [value]}, not_virtual]}
        for key, value in sorted(ecs_labels.items())
    ] or [{"matchExpressions": [not_virtual]}]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


@dataclass
class GatewayRebalancerArgs:
    gateways: Sequence[Gateway]
    ecs_labels: Mapping[str, str]
    settings: Rebalancer


class GatewayRebalancer(pulumi.ComponentResource):
    """The descheduler in one cluster: its account and role, its policy, and its Deployment."""

    def __init__(
        self, name: str, args: GatewayRebalancerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(type_token("GatewayRebalancer"), name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        namespace, own = settings.namespace, settings.name
        labels = {
            "app.kubernetes.io/name": NAME,
            "app.kubernetes.io/instance": own,
            "app.kubernetes.io/managed-by": "asm-serverless-gateway",
        }
        # Its own namespace is made once by an admin (rebalancer_namespace, in the generated
        # RBAC), Pod Security `restricted`: the deployer writes there and cannot relabel it.
        meta = k8s.meta.v1.ObjectMetaArgs(name=own, namespace=namespace, labels=labels)
        account = k8s.core.v1.ServiceAccount(f"{name}-account", metadata=meta, opts=child)
        role = k8s.rbac.v1.ClusterRole(
            f"{name}-role",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=own, labels=labels),
            rules=descheduler_rules(),
            opts=child,
        )
        binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-binding",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=own, labels=labels),
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": own},
            subjects=[{"kind": "ServiceAccount", "name": own, "namespace": namespace}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role, account]),
        )
        document = policy_document(
            descheduler_policy(args.gateways, args.ecs_labels, settings.max_evictions_per_run)
        )
        # Named by Pulumi (a suffix): the provider replaces a ConfigMap whose data changes, and a
        # new name is made before the old one goes; the Deployment's new reference restarts the
        # descheduler, which reads its policy once, at start.
        policy = k8s.core.v1.ConfigMap(
            f"{name}-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=namespace, labels=labels),
            data={"policy.yaml": document},
            opts=child,
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=own,
                namespace=namespace,
                labels=labels,
                annotations={
                    # Not on the gateway's path: an `up` does not wait for its pod (an image the
                    # cluster cannot pull would hold every `up`); the placement check shows drift.
                    "pulumi.com/skipAwait": "true",
                    # Gone at once when removed (its pod ends behind it), so that turning it back
                    # on in the next `up` finds no Deployment still waiting for its pod.
                    "pulumi.com/deletionPropagationPolicy": "background",
                },
            ),
            spec={
                "replicas": 1,
                # Never two at once (a new policy, a new name): each would evict its own bound.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": own,
                        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                        "affinity": away_from(args.ecs_labels),
                        "containers": [
                            {
                                "name": "descheduler",
                                "image": settings.image,
                                "command": ["/bin/descheduler"],
                                "args": [
                                    "--policy-config-file=/policy/policy.yaml",
                                    f"--descheduling-interval={settings.interval_seconds}s",
                                    "--v=1",
                                ],
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "128Mi"},
                                    "limits": {"memory": "512Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True,
                                    "runAsUser": 1000,
                                },
                                "volumeMounts": [
                                    {"name": "policy", "mountPath": "/policy", "readOnly": True}
                                ],
                            }
                        ],
                        "volumes": [{"name": "policy", "configMap": {"name": policy.metadata.name}}],
                    },
                },
            },
            # Started with its account, its rights and its policy in place; removed before them.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy, account, binding]),
        )
        self.register_outputs({})
