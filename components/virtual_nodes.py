"""The virtual-kubelet controller that makes ECI look like nodes to the scheduler.

On ACK it is the `ack-virtual-node` add-on. Either the stack installs it, or
virtual nodes already exist (ACK Serverless, or an add-on managed elsewhere).
Either way every virtual node carries `type=virtual-kubelet` and the taint
`virtual-kubelet.io/provider=alibabacloud:NoSchedule`, and neither can be
customised, so the scheduling rules read them from `scheduling.VIRTUAL_NODES`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_alicloud as alicloud

from components import type_token

ADDON_NAME = "ack-virtual-node"


def addon_config(
    eci_vswitch_ids: Sequence[str], security_group_id: str, overrides: Mapping[str, object]
) -> str:
    """The add-on's configuration: the vSwitches and security group of ECI pods.

    Serialised with sorted keys so that the same config is always the same text
    and never shows as a diff.
    """
    config: dict[str, object] = {
        "EciVSwitchIds": ",".join(eci_vswitch_ids),
        "EciSecurityGroupId": security_group_id,
        **overrides,
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


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
        if args.mode == "addon":
            addon = alicloud.cs.KubernetesAddon(
                f"{name}-addon",
                cluster_id=args.cluster_id,
                name=ADDON_NAME,
                version=args.addon_version,
                config=addon_config(args.eci_vswitch_ids, args.eci_security_group_id, args.addon_overrides),
                # Removing the add-on must also remove the virtual nodes' cloud
                # resources, or they linger and bill.
                cleanup_cloud_resources=True,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            self.addon_id = addon.id
        else:
            self.addon_id = pulumi.Output.from_input(None)
        self.mode = pulumi.Output.from_input(args.mode)
        self.register_outputs({"mode": self.mode, "addon_id": self.addon_id})
