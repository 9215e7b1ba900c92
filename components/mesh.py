"""The ASM control plane that IstioGateways are applied to, and access to it.

Either the stack creates the mesh (with the ACK cluster in it) and reads its
kubeconfig, or the mesh exists and its kubeconfig comes from secret config.
Either way the component hands out one Kubernetes provider for the mesh's API
(or, with no kubeconfig, one that renders YAML to a folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import type_token
from components.providers import kubernetes_provider


@dataclass(frozen=True)
class Mesh:
    """The mesh the gateways go to: one to create, or one that exists."""

    mode: str  # "create" | "existing"
    name: str = ""  # create only: the ASM instance's name
    edition: str = "Pro"  # create only
    version: str | None = None  # create only: None takes ASM's latest
    vpc_id: str = ""  # create only: the mesh's network
    vswitch_id: str = ""  # create only


@dataclass
class NewMesh:
    """What the stack needs to create an ASM instance."""

    mesh_name: str
    edition: str
    vpc_id: str
    vswitch_id: str
    cluster_ids: Sequence[pulumi.Input[str]]
    version: str | None = None


@dataclass
class MeshControlPlaneArgs:
    # Exactly one way in: a mesh to create, a kubeconfig, or a folder to render to.
    new_mesh: NewMesh | None = None
    kubeconfig: pulumi.Output[str] | None = None
    render_directory: str | None = None
    protect: bool = False


class MeshControlPlane(pulumi.ComponentResource):
    """An ASM instance (new or existing) and the provider for its Kubernetes API."""

    provider: k8s.Provider
    mesh_id: pulumi.Output[str | None]

    def __init__(
        self,
        name: str,
        args: MeshControlPlaneArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            type_token("MeshControlPlane"),
            name,
            None,
            pulumi.ResourceOptions.merge(
                # This component was `ServiceMesh` and only existed for a new mesh.
                pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=type_token("ServiceMesh"))]),
                opts,
            ),
        )
        kubeconfig = args.kubeconfig
        self.mesh_id = pulumi.Output.from_input(None)
        if args.new_mesh is not None:
            spec = args.new_mesh
            # Imported lazily: see providers.alicloud_provider.
            import pulumi_alicloud as alicloud  # noqa: PLC0415

            mesh = alicloud.servicemesh.ServiceMesh(
                f"{name}-mesh",
                service_mesh_name=spec.mesh_name,
                edition=spec.edition,
                version=spec.version,
                cluster_ids=list(spec.cluster_ids),
                network=alicloud.servicemesh.ServiceMeshNetworkArgs(
                    vpc_id=spec.vpc_id, vswitche_list=spec.vswitch_id
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=args.protect,
                    # The control plane's kubeconfig is a credential: encrypt it in state.
                    additional_secret_outputs=["kubeconfig"],
                ),
            )
            self.mesh_id = mesh.id
            # The provider refuses it if ASM hands back none (components/providers.py).
            kubeconfig = pulumi.Output.secret(mesh.kubeconfig.apply(lambda k: k or ""))

        # The provider used to be a child of the stack's top component; the
        # alias keeps its URN, so nothing applied through it is replaced.
        moved = pulumi.ResourceOptions(
            parent=self, aliases=[pulumi.Alias(parent=opts.parent if opts else None)]
        )
        source = (
            "the mesh the stack created (mesh.mode: create)"
            if args.new_mesh is not None
            else "meshKubeconfig"
        )
        self.provider = kubernetes_provider(name, kubeconfig, args.render_directory, moved, source)
        self.register_outputs({"mesh_id": self.mesh_id})
