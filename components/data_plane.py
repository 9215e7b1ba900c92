"""One ACK cluster of the mesh's data plane: its gateway nodes, node marks and virtual nodes.

A stack has one or more such clusters and one IstioGateway per gateway that
ASM deploys into all of them. Each cluster gets its own providers (its own
kubeconfig), its own node marks and tolerate-before-taint wait, and its own
eci-profile, so that day two holds in every cluster on its own.

Resources of the first cluster (the stack's flat keys) keep the names they
always had; those of a listed cluster carry its id (`asm-gateway-<id>-ecs`),
so that adding or removing a cluster never renames another's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.gateway import Gateway
from components.node_marks import TolerationRollout, node_marks_provider
from components.node_pool import (
    AdoptedNodePool,
    AdoptedNodePoolArgs,
    EcsCapacity,
    GatewayNodePool,
    GatewayNodePoolArgs,
    LabelledNodes,
    LabelledNodesArgs,
    PoolMarks,
    TaintedNodes,
)
from components.providers import kubernetes_provider
from components.rebalancer import GatewayRebalancer, GatewayRebalancerArgs, Rebalancer
from components.resource_policy import GatewayResourcePolicy, GatewayResourcePolicyArgs
from components.rollout import GatewayDisruptionBudget, GatewayDisruptionBudgetArgs
from components.virtual_nodes import VirtualNodeController, VirtualNodeControllerArgs, VirtualNodes


@dataclass(frozen=True)
class DataPlaneCluster:
    """One ACK cluster the gateways run in, and where its keys are in the stack's config."""

    cluster_id: str
    ecs: EcsCapacity  # its dedicated ECS nodes: a new pool, named nodes, or none
    virtual_nodes: VirtualNodes  # its virtual nodes, and its ECI network
    config_path: str = ""  # "" for the stack's flat keys, else "clusters[<n>]."
    kubeconfig: pulumi.Output[str] | None = field(default=None, compare=False)  # secret
    # The gateways are taken out of it; its resources stay until it is removed from the stack.
    retiring: bool = False

    @property
    def is_first(self) -> bool:
        return self.config_path == ""

    @property
    def kubeconfig_key(self) -> str:
        """The config key of its kubeconfig, as an error or a preflight row names it."""
        return f"{self.config_path}clusterKubeconfig"

    @property
    def kubeconfig_source(self) -> str:
        """Where its kubeconfig comes from, in errors: by id, as a provider input that stays the
        same when the list around it changes."""
        return "clusterKubeconfig" if self.is_first else f"the clusterKubeconfig of cluster {self.cluster_id}"

    @property
    def api(self) -> str:
        """How the preflight, the permission documents and the render folders name its API."""
        return "cluster" if self.is_first else f"cluster-{self.cluster_id}"

    def resource_name(self, stack_name: str) -> str:
        """The prefix of its resources' names (the first cluster's are the names they always had)."""
        return stack_name if self.is_first else f"{stack_name}-{self.cluster_id}"

    @property
    def has_both_kinds(self) -> bool:
        """Whether it has ECS nodes and virtual nodes: where a pod may move from one to the other."""
        return self.ecs.mode != "none" and self.virtual_nodes.mode != "none"

    def needs_api(self, ack_resource_policy: bool) -> bool:
        """Whether the stack writes to this cluster's own Kubernetes API."""
        return (
            self.ecs.mode == "existingNodes"
            or ack_resource_policy
            or bool(self.virtual_nodes.eci_vswitch_ids or self.virtual_nodes.eci_security_group_id)
        )


@dataclass(frozen=True)
class DataPlaneArgs:
    """What the stack gives each cluster besides the cluster itself."""

    cluster: DataPlaneCluster
    gateways: Sequence[Gateway]
    resource_policy_units: list[dict[str, Any]] | None  # ACK ResourcePolicy units, when applied
    rollout: Mapping[str, Any]  # the tolerate-before-taint wait's inputs (node_marks.rollout_inputs)
    render_yaml_to: str | None
    protect: bool
    # No gateway of the stack runs in the cluster yet (it joins the mesh's gateways in this
    # `up`): its pool is made before the gateways list it, so their pods land on it.
    joining: bool = False
    rebalancer: Rebalancer | None = None  # the descheduler's settings, where the stack runs it

    @property
    def budgets(self) -> list[Gateway]:
        """The gateways that get a PodDisruptionBudget here (a retiring cluster keeps them, as it
        keeps its capacity, until its entry goes: only the gateway leaves it first)."""
        return [g for g in self.gateways if g.disruption_budget]

    @property
    def runs_rebalancer(self) -> bool:
        return self.rebalancer is not None and self.cluster.has_both_kinds

    @property
    def availability_objects(self) -> bool:
        """Whether the stack has budgets or a rebalancer to put into this cluster's API."""
        return bool(self.budgets) or self.runs_rebalancer


class DataPlane:
    """The resources of one cluster, children of the stack's component, declared in two steps.

    `before_gateways` declares what the gateways' pods need first (labels on
    the nodes, virtual nodes, ResourcePolicies, and the pool of a cluster that
    joins); `after_gateways` what must wait for them (taints, and the pool of
    a cluster they run in: ACK puts its taints on its nodes). `ready_first` is
    what the gateways wait for.
    """

    def __init__(self, stack_name: str, args: DataPlaneArgs, parent: pulumi.Resource) -> None:
        self.args = args
        self.parent = parent
        self.name = args.cluster.resource_name(stack_name)
        self.labelled_nodes: LabelledNodes | None = None
        self.ready_first: list[pulumi.Resource] = []
        self._pool_made = False
        self._labelled_args: LabelledNodesArgs | None = None
        self.node_pool_id: pulumi.Output[str | None] = pulumi.Output.from_input(None)
        self.node_names: pulumi.Output[list[str]] = pulumi.Output.from_input([])
        # An adopted pool's labels and taints before the stack's: what to put back to undo.
        self.pool_marks_before: pulumi.Output[dict[str, Any] | None] = pulumi.Output.from_input(None)

    def _child(self, **options: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self.parent, **options)

    def before_gateways(self) -> VirtualNodeController:
        args, cluster = self.args, self.args.cluster
        kubeconfig = cluster.kubeconfig
        reachable = kubeconfig is not None or bool(args.render_yaml_to)
        self.cluster_provider = (
            kubernetes_provider(
                f"{self.name}-cluster",
                kubeconfig,
                self._render_directory(),
                self._child(),
                source=cluster.kubeconfig_source,
            )
            if cluster.needs_api(args.resource_policy_units is not None)
            or (args.availability_objects and reachable)
            else None
        )
        if args.availability_objects and self.cluster_provider is None:
            pulumi.log.warn(
                f"cluster {cluster.cluster_id}: without {cluster.kubeconfig_key} the stack declares no"
                " PodDisruptionBudget and no rebalancer there: gateway pods a rollout, a drain or a"
                " burst leaves on ECI stay there while ECS has room"
            )
        # Node marks and the rollout gate are the project's own provider's
        # (node_marks_plugin/), configured once with the cluster's kubeconfig.
        self.marks_provider = (
            node_marks_provider(
                f"{self.name}-node-marks", kubeconfig, self._child(), cluster.kubeconfig_source
            )
            if kubeconfig is not None and cluster.ecs.mode != "none"
            else None
        )
        ecs = cluster.ecs
        if ecs.mode == "existingNodes":
            # Labels (and dropped taints) before the gateways change, taints after:
            # see node_marks_plugin/marks.py.
            self._labelled_args = LabelledNodesArgs(
                node_names=ecs.nodes,
                labels=ecs.labels,
                taints=ecs.taints,
                on_cluster=self.marks_provider is not None,
                rollout=args.rollout,
            )
            providers = [p for p in (self.cluster_provider, self.marks_provider) if p is not None]
            self.labelled_nodes = LabelledNodes(
                f"{self.name}-ecs", self._labelled_args, self._child(providers=providers)
            )
            self.node_names = self.labelled_nodes.node_names
            self.ready_first.append(self.labelled_nodes)
        if args.availability_objects and self.cluster_provider is not None:
            # After the labels: the rebalancer's pod keeps off the nodes they mark.
            self._availability(self.cluster_provider)
        if ecs.has_pool and args.joining:
            self.ready_first.append(self._pool(waits_for=[]))
        if cluster.retiring:
            # The gateways leave it: nothing there holds up their changes in the other clusters.
            self.ready_first = []

        virtual = cluster.virtual_nodes
        controller = VirtualNodeController(
            f"{self.name}-virtual-nodes",
            VirtualNodeControllerArgs(
                mode=virtual.mode,
                cluster_id=cluster.cluster_id,
                eci_vswitch_ids=virtual.eci_vswitch_ids,
                eci_security_group_id=virtual.eci_security_group_id or "",
                addon_version=virtual.addon_version,
                addon_overrides=virtual.addon_config,
                protect=args.protect,
            ),
            # The add-on on the cloud's provider (inherited), the eci-profile on the cluster's.
            self._child(providers=[self.cluster_provider] if self.cluster_provider is not None else None),
        )
        if args.resource_policy_units is not None:
            for gateway in args.gateways:
                GatewayResourcePolicy(
                    f"{self.name}-{gateway.namespace}-{gateway.name}-policy",
                    GatewayResourcePolicyArgs(gateway.name, gateway.namespace, args.resource_policy_units),
                    self._child(provider=self.cluster_provider),
                )
        return controller

    def _availability(self, provider: pulumi.ProviderResource) -> None:
        """Each gateway's disruption budget, and the rebalancer, in this cluster's API."""
        args = self.args
        for gateway in args.budgets:
            GatewayDisruptionBudget(
                f"{self.name}-{gateway.namespace}-{gateway.name}-budget",
                GatewayDisruptionBudgetArgs(gateway.in_cluster(args.cluster.cluster_id)),
                self._child(provider=provider),
            )
        if args.runs_rebalancer:
            assert args.rebalancer is not None
            GatewayRebalancer(
                f"{self.name}-rebalancer",
                GatewayRebalancerArgs(args.gateways, args.cluster.ecs.labels, args.rebalancer),
                # Its pod must not start on an ECS node the stack is about to label (and taint:
                # a NoExecute taint would stop at it as another owner's pod).
                self._child(provider=provider, depends_on=[n for n in (self.labelled_nodes,) if n]),
            )

    def after_gateways(self, gateways: Sequence[pulumi.Resource]) -> None:
        """What waits for the gateways to tolerate the cluster's taints: the pool, and the taints."""
        if self.args.cluster.ecs.has_pool and not self._pool_made:
            self._pool(waits_for=gateways)
        if self._labelled_args is not None and self.marks_provider is not None:
            TaintedNodes(
                f"{self.name}-ecs-taints",
                self._labelled_args,
                self._child(providers=[self.marks_provider], depends_on=list(gateways)),
            )

    def _pool(self, waits_for: Sequence[pulumi.Resource]) -> GatewayNodePool | AdoptedNodePool:
        """The cluster's pool, after the gateways it waits for tolerate its taints.

        Tolerate before taint, for a pool too: ACK puts the pool's taints on
        its nodes, so the pool changes after the gateways (and, where the stack
        can see the cluster, after their pods tolerate the taints). The wait
        runs for a joining cluster too: a gateway pod left there by an earlier
        run is still not evicted.
        """
        args, ecs = self.args, self.args.cluster.ecs
        pool_waits_for = list(waits_for)
        if self.marks_provider is not None:
            pool_waits_for = [
                TolerationRollout(
                    f"{self.name}-ecs-rollout",
                    waits_for="the gateway's node pool",
                    node_labels=ecs.pool_nodes,
                    taints=ecs.taints,
                    rollout=args.rollout,
                    opts=self._child(provider=self.marks_provider, depends_on=list(waits_for) or None),
                )
            ]
        pool_options = self._child(depends_on=pool_waits_for or None)
        pool: GatewayNodePool | AdoptedNodePool
        if ecs.node_pool_id is not None:
            pool = AdoptedNodePool(
                f"{self.name}-ecs",
                AdoptedNodePoolArgs(
                    args.cluster.cluster_id,
                    ecs.node_pool_id,
                    PoolMarks(ecs.labels, ecs.taints),
                    f"{args.cluster.config_path}ecsCapacity",
                    args.protect,
                ),
                pool_options,
            )
            self.pool_marks_before = pool.marks_before
        else:
            pool = _node_pool(f"{self.name}-ecs", args.cluster, args.protect, pool_options)
        self.node_pool_id = pool.node_pool_id
        self._pool_made = True
        return pool

    def _render_directory(self) -> str | None:
        """Where a provider without a kubeconfig writes this cluster's manifests."""
        if not self.args.render_yaml_to:
            return None
        # One folder per cluster, named as the preflight names its API.
        return os.path.join(self.args.render_yaml_to, self.args.cluster.api)


def _node_pool(
    name: str, cluster: DataPlaneCluster, protect: bool, opts: pulumi.ResourceOptions
) -> GatewayNodePool:
    ecs = cluster.ecs
    assert ecs.node_pool is not None
    spec = ecs.node_pool
    return GatewayNodePool(
        name,
        GatewayNodePoolArgs(
            cluster_id=cluster.cluster_id,
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
            protect=protect,
        ),
        opts,
    )
