"""The ASM instance whose control plane the IstioGateway is applied to.

Either the stack creates the mesh (with the ACK cluster in it) and reads its
kubeconfig, or the mesh exists and its kubeconfig comes from secret config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as alicloud

from components import type_token


@dataclass
class ServiceMeshArgs:
    mesh_name: str
    edition: str
    vpc_id: str
    vswitch_id: str
    cluster_ids: Sequence[pulumi.Input[str]]
    version: str | None = None
    protect: bool = False


class ServiceMesh(pulumi.ComponentResource):
    """A new ASM instance with the gateway's ACK cluster added to it."""

    mesh_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]

    def __init__(self, name: str, args: ServiceMeshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(type_token("ServiceMesh"), name, None, opts)
        mesh = alicloud.servicemesh.ServiceMesh(
            f"{name}-mesh",
            service_mesh_name=args.mesh_name,
            edition=args.edition,
            version=args.version,
            cluster_ids=list(args.cluster_ids),
            network=alicloud.servicemesh.ServiceMeshNetworkArgs(
                vpc_id=args.vpc_id, vswitche_list=args.vswitch_id
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=args.protect,
                # The control plane's kubeconfig is a credential: encrypt it in state.
                additional_secret_outputs=["kubeconfig"],
            ),
        )
        self.mesh_id = mesh.id
        self.kubeconfig = pulumi.Output.secret(mesh.kubeconfig.apply(lambda k: k or ""))
        self.register_outputs({"mesh_id": self.mesh_id, "kubeconfig": self.kubeconfig})
