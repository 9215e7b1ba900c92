"""The whole stack as one component: each cluster's capacity, the mesh and the gateways.

The gateways' scheduling rules are derived here from the node groups that the
same component declares, so a taint changed on the pool changes the gateways'
tolerations in the same preview. Each cluster's own resources are declared by
`components.data_plane`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi

from components import type_token
from components.data_plane import DataPlane, DataPlaneArgs, DataPlaneCluster
from components.forecast import Demand, Forecast, Inventory, eci_spec_size, forecast, gateway_key, surge_rooms
from components.gateway import Gateway, IstioGateway, IstioGatewayArgs, gateway_pod_selector
from components.mesh import Mesh, MeshControlPlane, MeshControlPlaneArgs, NewMesh
from components.node_marks import rollout_inputs
from components.node_pool import EcsCapacity
from components.rebalancer import Rebalancer, moves
from components.rollout import RollingStrategy, rolling_strategy
from components.scheduling import (
    VIRTUAL_NODES,
    NodeGroup,
    NodeKind,
    Policy,
    Weights,
    derive_rules,
    resource_policy_units,
)
from components.virtual_nodes import VirtualNodes


@dataclass(frozen=True)
class ServerlessGatewayArgs:
    """Everything the stack declares, as plain data (no cloud credentials).

    `cluster_id`, `ecs`, `virtual_nodes` and `cluster_kubeconfig` are the first
    ACK cluster; `more_clusters` the mesh's other data-plane clusters.
    """

    cluster_id: str  # the first ACK cluster: its pool and add-on, a new mesh's first member
    ecs: EcsCapacity  # its dedicated ECS nodes: a new pool, named nodes, or none
    virtual_nodes: VirtualNodes  # where its virtual nodes come from, and the ECI network
    mesh: Mesh  # the ASM instance the IstioGateways go to
    policy: Policy  # which kinds of node the gateways may use, the preferred one first
    weights: Weights  # preferred-affinity weights of the preferred and the overflow kind
    gateways: tuple[Gateway, ...]  # one IstioGateway each, deployed to every cluster
    protect: bool  # protect what holds traffic or capacity from deletion
    render_yaml_to: str | None  # without kubeconfigs, write manifests under this folder
    ack_resource_policy: bool  # also apply ACK ResourcePolicy units per gateway
    rollout_timeout_seconds: int  # how long to wait for pods to tolerate a new taint
    # Kubeconfigs (secret Outputs) of the first cluster's and an existing mesh's API.
    cluster_kubeconfig: pulumi.Output[str] | None = field(default=None, compare=False)
    mesh_kubeconfig: pulumi.Output[str] | None = field(default=None, compare=False)
    more_clusters: tuple[DataPlaneCluster, ...] = ()
    # The descheduler that moves pods back onto ECS.
    rebalancer: Rebalancer = field(default_factory=Rebalancer)

    @property
    def rebalances(self) -> bool:
        """Whether the stack runs the rebalancer: it only ever moves pods towards ECS, and only
        of gateways it may move (a descheduler with nothing to do holds rights for nothing)."""
        return (
            self.rebalancer.enabled
            and self.policy is Policy.PREFER_ECS
            and any(moves(gateway) for gateway in self.gateways)
        )

    @property
    def clusters(self) -> tuple[DataPlaneCluster, ...]:
        """Every data-plane cluster, the first one first: the order of the gateways' `clusterIds`."""
        first = DataPlaneCluster(self.cluster_id, self.ecs, self.virtual_nodes, "", self.cluster_kubeconfig)
        return (first, *self.more_clusters)

    @property
    def cluster_ids(self) -> list[str]:
        """The clusters the gateways run in (every gateway's `clusterIds`): all but those retiring."""
        return [c.cluster_id for c in self.clusters if not c.retiring]

    @property
    def mesh_cluster_ids(self) -> list[str]:
        """The clusters a mesh the stack creates holds: a retiring one too, until it is removed."""
        return [c.cluster_id for c in self.clusters]

    def node_groups(self) -> dict[NodeKind, NodeGroup]:
        """The kinds of node the gateways may use. Every cluster's gateway nodes carry the same
        marks (the config refuses others), so one set of rules is right in each."""
        groups: dict[NodeKind, NodeGroup] = {}
        ecs = next((g for c in self.clusters if (g := c.ecs.node_group()) is not None), None)
        if ecs is not None:
            groups[NodeKind.ECS] = ecs
        if any(c.virtual_nodes.mode != "none" for c in self.clusters):
            groups[NodeKind.ECI] = VIRTUAL_NODES
        return groups

    def forecasts(
        self,
        observed: Mapping[str, Inventory] | None = None,
        strategies: Mapping[str, RollingStrategy] | None = None,
    ) -> dict[str, Forecast]:
        """Per cluster id: where the gateways' pods will land there (`observed`: the nodes as read;
        `strategies`: each gateway's rollout, by gateway key, for where a rollout ends)."""
        strategies = strategies if strategies is not None else self.rollout_strategies(observed)
        return {
            c.cluster_id: self._forecast(c, (observed or {}).get(c.cluster_id), strategies)
            for c in self.clusters
            if not c.retiring
        }

    def forecast(self, observed: Inventory | None = None) -> Forecast:
        """The first cluster's forecast."""
        first = self.clusters[0]
        observed_by_id = {first.cluster_id: observed} if observed is not None else {}
        return self._forecast(first, observed, self.rollout_strategies(observed_by_id))

    def rollout_strategies(
        self, observed: Mapping[str, Inventory] | None = None
    ) -> dict[str, RollingStrategy]:
        """Per gateway key: its rolling update, surging only into the ECS room every cluster it
        runs in has beyond the gateways' replicaCount (read from the clusters; unknown: none)."""
        rooms: dict[str, int | None] = {}
        pods_now: dict[str, int | None] = {}
        for cluster in self.clusters:
            if cluster.retiring:
                continue
            gateways = [g.in_cluster(cluster.cluster_id) for g in self.gateways]
            inventory = self._inventory(cluster, (observed or {}).get(cluster.cluster_id))
            for g in gateways:
                key = gateway_key(g.namespace, g.name)
                running = sum(inventory.running.get(key, {}).values()) if inventory.live else 0
                pods_now[key] = _least_known(pods_now, key, running or None)  # none running: unknown
            eci = cluster.virtual_nodes.mode != "none"
            for key, room in surge_rooms(self.policy, inventory, [_demand(g) for g in gateways], eci).items():
                rooms[key] = _least_known(rooms, key, room)
        return {
            gateway_key(g.namespace, g.name): rolling_strategy(
                g,
                self.policy,
                rooms.get(gateway_key(g.namespace, g.name)),
                pods_now.get(gateway_key(g.namespace, g.name)),
            )
            for g in self.gateways
        }

    def _inventory(self, cluster: DataPlaneCluster, observed: Inventory | None) -> Inventory:
        """The nodes as read (`observed`), else as declared.

        A pool whose nodes are not all there yet (being created, or resized in
        this change) is counted as declared: the live nodes are not what the
        `up` leaves.
        """
        declared = cluster.ecs.declared_inventory()
        pool_changing = (
            observed is not None
            and cluster.ecs.has_pool
            and declared.nodes is not None
            and len(observed.nodes or ()) != len(declared.nodes)
        )
        return declared if observed is None or pool_changing else observed

    def _forecast(
        self, cluster: DataPlaneCluster, observed: Inventory | None, strategies: Mapping[str, RollingStrategy]
    ) -> Forecast:
        gateways = [g.in_cluster(cluster.cluster_id) for g in self.gateways]
        notes = [
            f"{gateway_key(g.namespace, g.name)}: the forecast does not count extraSpec.{key}"
            for g in gateways
            for key in sorted(FORECAST_BLIND_SPOTS & set(g.extra_spec))
        ]
        demands = []
        for g in gateways:
            strategy = strategies.get(gateway_key(g.namespace, g.name))
            demands.append(replace(_demand(g), strategy=strategy.pods(g.replicas) if strategy else None))
        return forecast(
            self.policy,
            self._inventory(cluster, observed),
            demands,
            eci=cluster.virtual_nodes.mode != "none",
            ecs_first=self.ack_resource_policy,
            notes=notes,
        )

    @property
    def needs_cloud(self) -> bool:
        return self.mesh.mode == "create" or any(
            c.ecs.has_pool or c.virtual_nodes.mode == "addon" for c in self.clusters
        )


@dataclass(frozen=True)
class Observed:
    """What the preflight read of the live clusters and mesh, before anything is declared."""

    # Per cluster id: the gateway's ECS nodes as that cluster has them, for the forecast.
    inventories: Mapping[str, Inventory] = field(default_factory=dict)
    # The clusters some gateway of the stack lists now; None when the mesh was not read.
    serving_clusters: frozenset[str] | None = None

    def joining(self, cluster_id: str) -> bool:
        """Whether no gateway of the stack runs in the cluster yet (known only from the mesh)."""
        return self.serving_clusters is not None and cluster_id not in self.serving_clusters


# IstioGateway fields that change where or how many pods run, which the forecast does not model.
FORECAST_BLIND_SPOTS = frozenset({"overrides", "nodeSelector", "hostNetwork", "sds"})
ECI_SPECS_ANNOTATION = "k8s.aliyun.com/eci-use-specs"


def _rollout_fields(strategy: RollingStrategy) -> dict[str, str] | None:
    """What the stack writes into the spec: a derived strategy (a field set in extraSpec is
    written from there; under other policies ASM's own defaults stay, unwritten)."""
    return strategy.as_spec() if strategy.derived else None


def _least_known(seen: Mapping[str, int | None], key: str, value: int | None) -> int | None:
    """The least of `value` and what `seen` holds for `key` over the clusters so far; None
    (unknown) once any cluster's is unknown."""
    known = seen.get(key, value)
    return None if value is None or known is None else min(value, known)


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
    """An ASM ingress gateway on a tainted ECS pool first, bursting onto ECI, in each cluster of a mesh."""

    node_pool_id: pulumi.Output[str | None]
    pool_marks_before: pulumi.Output[dict[str, Any] | None]
    node_names: pulumi.Output[list[str]]
    virtual_node_mode: pulumi.Output[str]
    mesh_id: pulumi.Output[str | None]
    gateways: pulumi.Output[list[dict[str, Any]]]
    placement_forecast: pulumi.Output[dict[str, Any]]
    clusters: pulumi.Output[dict[str, Any]] | None  # per cluster id, with more than one

    def __init__(
        self,
        name: str,
        args: ServerlessGatewayArgs,
        opts: pulumi.ResourceOptions | None = None,
        observed: Observed | None = None,
    ) -> None:
        """`opts.providers` carries the Alibaba Cloud provider when `args` declares cloud resources;
        `observed` is what the preflight read of the clusters (their nodes, for the forecast)
        and of the mesh (which clusters the gateways run in, for the order of changes)."""
        super().__init__(type_token("ServerlessGateway"), name, None, opts)
        # Pure and raising on a bad combination: done before any child exists.
        groups = args.node_groups()
        rules = derive_rules(args.policy, groups, args.weights)
        units = resource_policy_units(args.policy, groups)
        observed = observed or Observed()
        for cluster in args.clusters:
            no_execute = any(t.effect == "NoExecute" for t in cluster.ecs.taints)
            if cluster.ecs.has_pool and cluster.kubeconfig is None and no_execute:
                # ACK puts a pool's taints on its nodes itself: only the wait holds them back.
                pulumi.log.warn(
                    f"cluster {cluster.cluster_id}: without {cluster.kubeconfig_key} the stack cannot"
                    " wait for the gateway's pods to tolerate the pool's NoExecute taint before ACK"
                    " puts it on the nodes, where it evicts the pods that do not yet"
                )
        for gateway in args.gateways if args.rebalances else ():
            if not moves(gateway):
                why = "has no PodDisruptionBudget"
                if gateway.disruption_budget:
                    why = "runs on the host's network"
                pulumi.log.warn(
                    f"gateway {gateway_key(gateway.namespace, gateway.name)} {why}: the rebalancer never"
                    " moves its pods, so those a rollout, a drain or a burst leaves on ECI stay there"
                )
        strategies = args.rollout_strategies(observed.inventories)
        placements = args.forecasts(observed.inventories, strategies)
        several = len(args.clusters) > 1  # one output shape for a stack of several, a cluster retiring or not
        tolerations = rules.tolerations
        for cluster_id, placement in placements.items():
            # On the stack itself, not this component: `preview --diff` shows the stack's
            # messages even when nothing changes.
            pulumi.log.info(placement.table(cluster_id if several else None))
            where = f" in cluster {cluster_id}" if several else ""
            for warning in placement.warnings:
                pulumi.log.warn(f"placement forecast{where}: {warning}")
        self.placement_forecast = pulumi.Output.from_input(
            {"clusters": {c: f.as_output() for c, f in placements.items()}}
            if several
            else placements[args.cluster_id].as_output()
        )

        planes = [
            DataPlane(
                name,
                DataPlaneArgs(
                    cluster=cluster,
                    gateways=args.gateways,
                    resource_policy_units=units if args.ack_resource_policy else None,
                    # What the tolerate-before-taint wait watches: the gateways' pods, and the
                    # ECS taints their rules tolerate (none under eci-only: no wait for those).
                    rollout=rollout_inputs(
                        gateway_pods=[gateway_pod_selector(g.namespace, g.name) for g in args.gateways],
                        gateway_tolerates=[t for t in cluster.ecs.taints if t.tolerated_by(tolerations)],
                        rollout_timeout_seconds=args.rollout_timeout_seconds,
                        evict_other_pods=cluster.ecs.evict_other_pods,
                        evict_daemon_set_pods=cluster.ecs.evict_daemon_set_pods,
                    ),
                    render_yaml_to=args.render_yaml_to,
                    protect=args.protect,
                    joining=observed.joining(cluster.cluster_id) and not cluster.retiring,
                    rebalancer=args.rebalancer if args.rebalances else None,
                ),
                self,
            )
            for cluster in args.clusters
        ]
        controllers = [plane.before_gateways() for plane in planes]
        self.virtual_node_mode = controllers[0].mode

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
                        cluster_ids=args.mesh_cluster_ids,
                    )
                    if args.mesh.mode == "create"
                    else None
                ),
                kubeconfig=args.mesh_kubeconfig,
                render_directory=os.path.join(args.render_yaml_to, "mesh") if args.render_yaml_to else None,
                protect=args.protect,
            ),
            # A new mesh is on the cloud provider this component's `providers` hand down.
            pulumi.ResourceOptions(parent=self),
        )
        self.mesh_id = mesh.mesh_id

        # Every cluster's nodes carry the gateway's labels (and a joining cluster has its
        # pool) before a gateway lists it.
        ready_first = [r for p in planes for r in p.ready_first]
        gateway_components = [
            IstioGateway(
                f"{name}-{gateway.namespace}-{gateway.name}",
                IstioGatewayArgs(
                    gateway=gateway,
                    rules=rules,
                    cluster_ids=args.cluster_ids,
                    rollout=_rollout_fields(strategies[gateway_key(gateway.namespace, gateway.name)]),
                ),
                pulumi.ResourceOptions(
                    parent=self, provider=mesh.provider, protect=args.protect, depends_on=ready_first or None
                ),
            )
            for gateway in args.gateways
        ]
        self.gateways = pulumi.Output.from_input([g.summary for g in gateway_components])
        for plane in planes:
            plane.after_gateways(gateway_components)

        self.node_pool_id = planes[0].node_pool_id
        self.node_names = planes[0].node_names
        # An adopted pool's own labels and taints, from before the stack's: what to put back to undo.
        self.pool_marks_before = planes[0].pool_marks_before
        self.clusters = (
            pulumi.Output.from_input(
                {
                    p.args.cluster.cluster_id: {
                        "nodePoolId": p.node_pool_id,
                        "nodeNames": p.node_names,
                        **(
                            {"poolMarksBefore": p.pool_marks_before}
                            if p.args.cluster.ecs.node_pool_id
                            else {}
                        ),
                    }
                    for p in planes
                }
            )
            if several
            else None
        )
        self.register_outputs(
            {
                "node_pool_id": self.node_pool_id,
                "node_names": self.node_names,
                "pool_marks_before": self.pool_marks_before,
                "virtual_node_mode": self.virtual_node_mode,
                "mesh_id": self.mesh_id,
                "gateways": self.gateways,
                "placement_forecast": self.placement_forecast,
                **({"clusters": self.clusters} if self.clusters is not None else {}),
            }
        )
