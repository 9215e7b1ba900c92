"""The virtual-kubelet controller that makes ECI look like nodes to the scheduler.

On ACK it is the `ack-virtual-node` add-on. Either the stack installs it, or
virtual nodes already exist (ACK Serverless, or an add-on managed elsewhere).
Either way the stack can set the ECI pods' network (vSwitches, security group)
in the add-on's documented `kube-system/eci-profile` ConfigMap. And every
virtual node carries `type=virtual-kubelet` and the taint
`virtual-kubelet.io/provider=alibabacloud:NoSchedule`, and neither can be
customised, so the scheduling rules read them from `scheduling.VIRTUAL_NODES`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi

from components import type_token

if TYPE_CHECKING:
    import pulumi_alicloud as alicloud

ADDON_NAME = "ack-virtual-node"


def addon_config(overrides: Mapping[str, object]) -> str | None:
    """The add-on's own configuration: only what the user gives (`virtualNodes.addonConfig`).

    The add-on's config keys are published only as a schema served by ACK's
    add-on metadata API, so the stack guesses none; the ECI network goes into
    the documented `eci-profile` instead. Sorted keys: the same config is
    always the same text and never shows as a diff.
    """
    if not overrides:
        return None
    return json.dumps(dict(overrides), sort_keys=True, separators=(",", ":"))


# ACK's cluster-level ECI settings ("Configure an eci-profile"): ack-virtual-node
# reads them whenever it creates an ECI pod, so a change reaches new pods
# without restarting the add-on.
ECI_PROFILE_NAMESPACE = "kube-system"
ECI_PROFILE_NAME = "eci-profile"
CONFIG_MAP_PATCH = "kubernetes:core/v1:ConfigMapPatch"  # by token: see node_pool.NODE_PATCH


def eci_profile_data(eci_vswitch_ids: Sequence[str], security_group_id: str) -> dict[str, str]:
    """The profile keys the stack sets, in the profile's own format (vSwitches comma-separated)."""
    data = {}
    if eci_vswitch_ids:
        data["vSwitchIds"] = ",".join(eci_vswitch_ids)
    if security_group_id:
        data["securityGroupId"] = security_group_id
    return data


@dataclass(frozen=True)
class VirtualNodes:
    """Where the virtual nodes come from, and the ECI pods' network."""

    mode: str  # "addon" | "existing" | "none"
    eci_vswitch_ids: tuple[str, ...] = ()  # ECI pods' vSwitches, for the eci-profile
    eci_security_group_id: str | None = None  # ECI pods' security group, for the eci-profile
    addon_version: str | None = None  # addon only: pin the add-on's version
    addon_config: Mapping[str, Any] = field(default_factory=dict)  # addon only: its own keys


@dataclass
class VirtualNodeControllerArgs:
    mode: str  # "addon" | "existing"
    cluster_id: pulumi.Input[str] | None = None
    eci_vswitch_ids: Sequence[str] = ()
    eci_security_group_id: str = ""
    addon_version: str | None = None
    addon_overrides: Mapping[str, object] = field(default_factory=dict)
    protect: bool = False


class VirtualNodeController(pulumi.ComponentResource):
    """Virtual nodes for the gateway's ECI overflow."""

    mode: pulumi.Output[str]
    addon_id: pulumi.Output[str | None]

    def __init__(
        self, name: str, args: VirtualNodeControllerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(type_token("VirtualNodeController"), name, None, opts)
        addon: alicloud.cs.KubernetesAddon | None = None
        if args.mode == "addon":
            # Imported lazily: see providers.alicloud_provider.
            import pulumi_alicloud as alicloud  # noqa: PLC0415

            addon = alicloud.cs.KubernetesAddon(
                f"{name}-addon",
                cluster_id=args.cluster_id,
                name=ADDON_NAME,
                version=args.addon_version,
                config=addon_config(args.addon_overrides),
                # Removing the add-on must also remove the virtual nodes' cloud
                # resources, or they linger and bill.
                cleanup_cloud_resources=True,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            self.addon_id = addon.id
        else:
            self.addon_id = pulumi.Output.from_input(None)

        data = eci_profile_data(args.eci_vswitch_ids, args.eci_security_group_id)
        if data:
            # Server-side apply of these keys alone: the rest of the profile,
            # which the add-on owns, stays as it is (a ConfigMap's data is a
            # map, so each key has its own owner). Forced, since the add-on
            # wrote these keys first. Kept on destroy: other ECI workloads of
            # the cluster need a network after this stack is gone.
            pulumi.CustomResource(
                CONFIG_MAP_PATCH,
                f"{name}-eci-profile",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": ECI_PROFILE_NAME,
                        "namespace": ECI_PROFILE_NAMESPACE,
                        "annotations": {"pulumi.com/patchForce": "true"},
                    },
                    "data": data,
                },
                pulumi.ResourceOptions(
                    parent=self, depends_on=[addon] if addon else None, retain_on_delete=True
                ),
            )
        self.mode = pulumi.Output.from_input(args.mode)
        self.register_outputs({"mode": self.mode, "addon_id": self.addon_id})
