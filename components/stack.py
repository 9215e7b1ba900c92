"""The whole stack as one component: capacity, virtual nodes, mesh and gateways.

The gateways' scheduling rules are derived here from the node groups that the
same component declares, so a taint changed on the pool changes the gateways'
tolerations in the same preview.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components import type_token
from components.forecast import Demand, Forecast, Inventory, eci_spec_size, forecast, gateway_key
from components.gateway import Gateway, IstioGateway, IstioGatewayArgs, gateway_pod_selector
from components.mesh import Mesh, MeshControlPlane, MeshControlPlaneArgs, NewMesh
from components.node_marks import TolerationRollout, node_marks_provider, rollout_inputs
from components.node_pool import (
    EcsCapacity,
    GatewayNodePool,
    GatewayNodePoolArgs,
    LabelledNodes,
    LabelledNodesArgs,
    TaintedNodes,
)
from components.providers import kubernetes_provider
from components.resource_policy import GatewayResourcePolicy, GatewayResourcePolicyArgs
from components.scheduling import (
    VIRTUAL_NODES,
    NodeGroup,
    NodeKind,
    Policy,
    Weights,
    derive_rules,
    resource_policy_units,
)
from components.virtual_nodes import VirtualNodeController, VirtualNodeControllerArgs, VirtualNodes


@dataclass(frozen=True)
class ServerlessGatewayArgs:
    """Everything the stack declares, as plain data (no cloud credentials)."""

    cluster_id: str  # the ACK cluster the pool, add-on and gateways belong to
    ecs: EcsCapacity  # the gateway's dedicated ECS nodes: a new pool, named nodes, or none
    virtual_nodes: VirtualNodes  # where the virtual nodes come from, and the ECI network
    mesh: Mesh  # the ASM instance the IstioGateways go to
    policy: Policy  # which kinds of node the gateways may use, the preferred one first
    weights: Weights  # preferred-affinity weights of the preferred and the overflow kind
    gateways: tuple[Gateway, ...]  # one IstioGateway each
    protect: bool  # protect what holds traffic or capacity from deletion
    render_yaml_to: str | None  # without kubeconfigs, write manifests under this folder
    ack_resource_policy: bool  # also apply ACK ResourcePolicy units per gateway
    rollout_timeout_seconds: int  # how long to wait for pods to tolerate a new taint
    # Kubeconfigs (secret Outputs) of the cluster's and an existing mesh's API.
    cluster_kubeconfig: pulumi.Output[str] | None = field(default=None, compare=False)
    mesh_kubeconfig: pulumi.Output[str] | None = field(default=None, compare=False)

    def node_groups(self) -> dict[NodeKind, NodeGroup]:
        groups: dict[NodeKind, NodeGroup] = {}
        ecs = self.ecs.node_group()
        if ecs is not None:
            groups[NodeKind.ECS] = ecs
        if self.virtual_nodes.mode != "none":
            groups[NodeKind.ECI] = VIRTUAL_NODES
        return groups

    def forecast(self, observed: Inventory | None = None) -> Forecast:
        """Where the gateways' pods will land: on the nodes as read (`observed`), else as declared.

        A pool whose nodes are not all there yet (being created, or resized in
        this change) is counted as declared: the live nodes are not what the
        `up` leaves.
        """
        declared = self.ecs.declared_inventory()
        pool_changing = (
            observed is not None
            and self.ecs.mode == "nodePool"
            and declared.nodes is not None
            and len(observed.nodes or ()) != len(declared.nodes)
        )
        if pool_changing:
            observed = None
        notes = [
            f"{gateway_key(g.namespace, g.name)}: the forecast does not count extraSpec.{key}"
            for g in self.gateways
            for key in sorted(FORECAST_BLIND_SPOTS & set(g.extra_spec))
        ]
        return forecast(
            self.policy,
            observed or declared,
            [_demand(g) for g in self.gateways],
            eci=self.virtual_nodes.mode != "none",
            ecs_first=self.ack_resource_policy,
            notes=notes,
        )

    @property
    def needs_cluster_api(self) -> bool:
        """Whether the stack writes to the ACK cluster's own Kubernetes API."""
        return (
            self.ecs.mode == "existingNodes"
            or self.ack_resource_policy
            or bool(self.virtual_nodes.eci_vswitch_ids or self.virtual_nodes.eci_security_group_id)
        )

    @property
    def needs_cloud(self) -> bool:
        return self.ecs.mode == "nodePool" or self.virtual_nodes.mode == "addon" or self.mesh.mode == "create"


# IstioGateway fields that change where or how many pods run, which the forecast does not model.
FORECAST_BLIND_SPOTS = frozenset({"overrides", "nodeSelector", "hostNetwork", "sds"})
ECI_SPECS_ANNOTATION = "k8s.aliyun.com/eci-use-specs"


def _demand(gateway: Gateway) -> Demand:
    # Without its autoscaler a gateway runs replicaCount pods, whatever its bounds say.
    bounds = (
        (gateway.min_replicas, gateway.replicas, gateway.max_replicas)
        if gateway.autoscale
        else (gateway.replicas,) * 3
    )
    return Demand(
        gateway_key(gateway.namespace, gateway.name),
        gateway.pod_size,
        *bounds,
        eci_size=eci_spec_size(gateway.pod_annotations.get(ECI_SPECS_ANNOTATION)),
    )


class ServerlessGateway(pulumi.ComponentResource):
    """An ASM ingress gateway on a tainted ECS pool first, bursting onto ECI."""

    node_pool_id: pulumi.Output[str | None]
    node_names: pulumi.Output[list[str]]
    virtual_node_mode: pulumi.Output[str]
    mesh_id: pulumi.Output[str | None]
    gateways: pulumi.Output[list[dict[str, Any]]]
    placement_forecast: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        args: ServerlessGatewayArgs,
        opts: pulumi.ResourceOptions | None = None,
        observed: Inventory | None = None,
    ) -> None:
        """`opts.providers` carries the Alibaba Cloud provider when `args` declares cloud resources;
        `observed` is the gateway's ECS nodes as the cluster has them, for the forecast."""
        super().__init__(type_token("ServerlessGateway"), name, None, opts)
        # Pure and raising on a bad combination: done before any child exists.
        groups = args.node_groups()
        rules = derive_rules(args.policy, groups, args.weights)
        units = resource_policy_units(args.policy, groups)
        placement = args.forecast(observed)
        # On the stack itself, not this component: `preview --diff` shows the stack's
        # messages even when nothing changes.
        pulumi.log.info(placement.table())
        for warning in placement.warnings:
            pulumi.log.warn(f"placement forecast: {warning}")
        self.placement_forecast = pulumi.Output.from_input(placement.as_output())

        def render_directory(api: str) -> str | None:
            """Where a provider without a kubeconfig writes the manifests for one API."""
            return os.path.join(args.render_yaml_to, api) if args.render_yaml_to else None

        cluster = (
            kubernetes_provider(
                f"{name}-cluster",
                args.cluster_kubeconfig,
                render_directory("cluster"),
                pulumi.ResourceOptions(parent=self),
                source="clusterKubeconfig",
            )
            if args.needs_cluster_api
            else None
        )

        # Node marks and the rollout gate are the project's own provider's
        # (node_marks_plugin/), configured once with the cluster's kubeconfig.
        marks_provider = (
            node_marks_provider(
                f"{name}-node-marks", args.cluster_kubeconfig, pulumi.ResourceOptions(parent=self)
            )
            if args.cluster_kubeconfig is not None and args.ecs.mode != "none"
            else None
        )

        ecs = args.ecs
        self.node_pool_id = pulumi.Output.from_input(None)
        self.node_names = pulumi.Output.from_input([])
        # What the tolerate-before-taint wait watches: the gateways' pods, and the
        # ECS taints their rules tolerate (none under eci-only: no wait for those).
        rollout = rollout_inputs(
            gateway_pods=[gateway_pod_selector(g.namespace, g.name) for g in args.gateways],
            gateway_tolerates=[t for t in ecs.taints if t.tolerated_by(rules.tolerations)],
            rollout_timeout_seconds=args.rollout_timeout_seconds,
            evict_other_pods=ecs.evict_other_pods,
        )
        labelled_nodes: LabelledNodes | None = None
        if ecs.mode == "existingNodes":
            # Labels (and dropped taints) before the gateways change, taints after:
            # see node_marks_plugin/marks.py.
            labelled_args = LabelledNodesArgs(
                node_names=ecs.nodes,
                labels=ecs.labels,
                taints=ecs.taints,
                on_cluster=marks_provider is not None,
                rollout=rollout,
            )
            labelled_nodes = LabelledNodes(
                f"{name}-ecs",
                labelled_args,
                pulumi.ResourceOptions(
                    parent=self, providers=[p for p in (cluster, marks_provider) if p is not None]
                ),
            )
            self.node_names = labelled_nodes.node_names

        virtual = args.virtual_nodes
        controller = VirtualNodeController(
            f"{name}-virtual-nodes",
            VirtualNodeControllerArgs(
                mode=virtual.mode,
                cluster_id=args.cluster_id,
                eci_vswitch_ids=virtual.eci_vswitch_ids,
                eci_security_group_id=virtual.eci_security_group_id or "",
                addon_version=virtual.addon_version,
                addon_overrides=virtual.addon_config,
                protect=args.protect,
            ),
            # The add-on on the cloud's provider (inherited), the eci-profile on the cluster's.
            pulumi.ResourceOptions(parent=self, providers=[cluster] if cluster is not None else None),
        )
        self.virtual_node_mode = controller.mode

        mesh = MeshControlPlane(
            f"{name}-mesh",
            MeshControlPlaneArgs(
                new_mesh=(
                    NewMesh(
                        mesh_name=args.mesh.name,
                        edition=args.mesh.edition,
                        version=args.mesh.version,
                        vpc_id=args.mesh.vpc_id,
                        vswitch_id=args.mesh.vswitch_id,
                        cluster_ids=[args.cluster_id],
                    )
                    if args.mesh.mode == "create"
                    else None
                ),
                kubeconfig=args.mesh_kubeconfig,
                render_directory=render_directory("mesh"),
                protect=args.protect,
            ),
            # A new mesh is on the cloud provider this component's `providers` hand down.
            pulumi.ResourceOptions(parent=self),
        )
        self.mesh_id = mesh.mesh_id

        summaries = []
        gateway_components: list[pulumi.Resource] = []
        for gateway in args.gateways:
            gateway_name = f"{name}-{gateway.namespace}-{gateway.name}"
            if args.ack_resource_policy:
                GatewayResourcePolicy(
                    f"{gateway_name}-policy",
                    GatewayResourcePolicyArgs(gateway.name, gateway.namespace, units),
                    pulumi.ResourceOptions(parent=self, provider=cluster),
                )
            component = IstioGateway(
                gateway_name,
                IstioGatewayArgs(gateway=gateway, rules=rules, cluster_id=args.cluster_id),
                pulumi.ResourceOptions(
                    parent=self,
                    provider=mesh.provider,
                    protect=args.protect,
                    depends_on=[labelled_nodes] if labelled_nodes is not None else None,
                ),
            )
            summaries.append(component.summary)
            gateway_components.append(component)
        self.gateways = pulumi.Output.from_input(summaries)

        # Tolerate before taint, for a pool too: ACK puts the pool's taints on
        # its nodes, so the pool changes after the gateways (and, where the
        # stack can see the cluster, after their pods tolerate the taints).
        pool_waits_for: list[pulumi.Resource] = list(gateway_components)
        if ecs.mode == "nodePool" and marks_provider is not None:
            pool_waits_for = [
                TolerationRollout(
                    f"{name}-ecs-rollout",
                    waits_for="the gateway's node pool",
                    node_labels=ecs.labels,
                    taints=ecs.taints,
                    rollout=rollout,
                    opts=pulumi.ResourceOptions(
                        parent=self, provider=marks_provider, depends_on=gateway_components
                    ),
                )
            ]
        if ecs.mode == "nodePool" and ecs.node_pool is not None:
            spec = ecs.node_pool
            pool = GatewayNodePool(
                f"{name}-ecs",
                GatewayNodePoolArgs(
                    cluster_id=args.cluster_id,
                    node_pool_name=spec.name,
                    labels=ecs.labels,
                    taints=ecs.taints,
                    instance_types=spec.instance_types,
                    vswitch_ids=spec.vswitch_ids,
                    system_disk_category=spec.system_disk_category,
                    system_disk_size=spec.system_disk_size,
                    desired_size=spec.desired_size,
                    autoscaling_bounds=(
                        (spec.autoscaling.min_size, spec.autoscaling.max_size) if spec.autoscaling else None
                    ),
                    security_group_ids=spec.security_group_ids,
                    protect=args.protect,
                ),
                pulumi.ResourceOptions(parent=self, depends_on=pool_waits_for),
            )
            self.node_pool_id = pool.node_pool_id
        if labelled_nodes is not None and marks_provider is not None:
            TaintedNodes(
                f"{name}-ecs-taints",
                labelled_args,
                pulumi.ResourceOptions(
                    parent=self, providers=[marks_provider], depends_on=gateway_components
                ),
            )

        self.register_outputs(
            {
                "node_pool_id": self.node_pool_id,
                "node_names": self.node_names,
                "virtual_node_mode": self.virtual_node_mode,
                "mesh_id": self.mesh_id,
                "gateways": self.gateways,
                "placement_forecast": self.placement_forecast,
            }
        )
