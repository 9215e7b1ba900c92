"""ACK's ResourcePolicy: strict ECS-first (or ECI-first) placement for a gateway.

Preferred node affinity is one score among many; kube-scheduler's default
scores can send pods to a virtual node's vast free capacity while the ECS
nodes still have room. On ACK Pro clusters, ACK's scheduler reads a
`ResourcePolicy` (scheduling.alibabacloud.com/v1alpha1) and fills its units in
order. The stack renders one per gateway from the same node groups as the
affinity, so the two cannot disagree. It only takes effect with ACK's
scheduler; elsewhere it is inert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import type_token
from components.gateway import gateway_pod_labels

API_VERSION = "scheduling.alibabacloud.com/v1alpha1"
KIND = "ResourcePolicy"


def resource_policy_spec(gateway_name: str, units: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "selector": gateway_pod_labels(gateway_name),
        # Try the units in order; a pod that fits none stays Pending.
        "strategy": "prefer",
        "units": units,
    }


@dataclass
class GatewayResourcePolicyArgs:
    gateway_name: str
    namespace: str
    units: list[dict[str, Any]]
    labels: Mapping[str, str] | None = None


class GatewayResourcePolicy(pulumi.ComponentResource):
    """One gateway's ResourcePolicy in the ACK cluster that runs its pods."""

    def __init__(
        self, name: str, args: GatewayResourcePolicyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(type_token("GatewayResourcePolicy"), name, None, opts)
        k8s.apiextensions.CustomResource(
            f"{name}-resourcepolicy",
            api_version=API_VERSION,
            kind=KIND,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.gateway_name, namespace=args.namespace),
            spec=resource_policy_spec(args.gateway_name, args.units),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
