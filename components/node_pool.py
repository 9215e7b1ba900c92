"""The gateway's dedicated ECS capacity, labelled and tainted.

Two ways to get it, chosen by `ecsCapacity.mode`:
- `GatewayNodePool`: a new ACK node pool that carries the labels and taints, so
  that every node it ever adds has them (the guide's Step 1 and 2, as code);
- `LabelledNodes`: existing, named nodes labelled and tainted through the
  Kubernetes API (`kubectl label` / `kubectl taint` as code).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from components import child_options, type_token
from components.forecast import Inventory, declared_inventory, instance_type_size
from components.node_marks import ADMIT, RESTRICT, NodeMarks
from components.scheduling import NodeGroup, NodeKind, Taint


@dataclass(frozen=True)
class Autoscaling:
    """Bounds for ACK's autoscaler, which then owns the pool's size."""

    min_size: int
    max_size: int


@dataclass(frozen=True)
class NodePoolSpec:
    """A new ACK node pool for the gateway (`ecsCapacity.nodePool`)."""

    name: str
    instance_types: tuple[str, ...]
    vswitch_ids: tuple[str, ...]
    desired_size: int | None
    autoscaling: Autoscaling | None
    system_disk_category: str
    system_disk_size: int
    security_group_ids: tuple[str, ...]


@dataclass(frozen=True)
class EcsCapacity:
    """The gateway's dedicated ECS nodes and what marks them."""

    mode: str  # "nodePool" | "existingNodes" | "none"
    labels: Mapping[str, str]  # what marks the gateway's nodes (the guide's mykey4pod=asmgateway)
    taints: tuple[Taint, ...]  # what keeps other pods off them (the guide's mykey=myvalue)
    node_pool: NodePoolSpec | None = None  # nodePool only
    nodes: tuple[str, ...] = ()  # existingNodes only: the nodes to mark
    # Whether a NoExecute taint the stack adds may evict other owners' pods.
    evict_other_pods: bool = False
    instance_type: str | None = None  # existingNodes only: their type, for the forecast

    def declared_inventory(self) -> Inventory:
        """The ECS nodes as declared (instance types), for a forecast without the cluster."""
        if self.mode == "nodePool" and self.node_pool is not None:
            pool = self.node_pool
            count = pool.desired_size if pool.autoscaling is None else pool.autoscaling.min_size
            why = (
                ""
                if pool.autoscaling is None
                else f" (minSize; the autoscaler may add up to {pool.autoscaling.max_size})"
            )
            names = [f"{pool.name}-{i}" for i in range(count or 0)]
            # ACK may launch any of the types: the largest makes the ECS figures a bound.
            largest = max(pool.instance_types, key=lambda t: instance_type_size(t) or (0, 0), default=None)
            return declared_inventory(largest, names, why)
        if self.mode == "existingNodes":
            return declared_inventory(self.instance_type, self.nodes)
        return Inventory((), "none (ecsCapacity.mode: none)")

    def node_group(self) -> NodeGroup | None:
        return None if self.mode == "none" else NodeGroup(NodeKind.ECS, self.labels, self.taints)


@dataclass
class GatewayNodePoolArgs:
    cluster_id: pulumi.Input[str]
    node_pool_name: str
    labels: Mapping[str, str]
    taints: Sequence[Taint]
    instance_types: Sequence[str]
    vswitch_ids: Sequence[str]
    system_disk_category: str
    system_disk_size: int
    # Exactly one of the two: a fixed size, or autoscaler bounds.
    desired_size: int | None = None
    autoscaling_bounds: tuple[int, int] | None = None
    security_group_ids: Sequence[str] = ()
    protect: bool = False


class GatewayNodePool(pulumi.ComponentResource):
    """An ACK node pool whose nodes only the gateway's pods tolerate."""

    node_pool_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: GatewayNodePoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(type_token("GatewayNodePool"), name, None, opts)
        autoscaled = args.autoscaling_bounds is not None
        # Imported lazily: see providers.alicloud_provider.
        import pulumi_alicloud as alicloud  # noqa: PLC0415

        pool = alicloud.cs.NodePool(
            f"{name}-pool",
            cluster_id=args.cluster_id,
            node_pool_name=args.node_pool_name,
            instance_types=list(args.instance_types),
            vswitch_ids=list(args.vswitch_ids),
            security_group_ids=list(args.security_group_ids) or None,
            system_disk_category=args.system_disk_category,
            system_disk_size=args.system_disk_size,
            labels=[
                alicloud.cs.NodePoolLabelArgs(key=key, value=value)
                for key, value in sorted(args.labels.items())
            ],
            taints=[
                alicloud.cs.NodePoolTaintArgs(key=t.key, value=t.value, effect=t.effect)
                for t in sorted(args.taints)
            ],
            # Without it a label or taint change reaches only nodes added later.
            update_nodes=True,
            # The provider takes the size as text.
            desired_size=None if autoscaled or args.desired_size is None else str(args.desired_size),
            scaling_config=(
                alicloud.cs.NodePoolScalingConfigArgs(
                    enable=True,
                    min_size=args.autoscaling_bounds[0],
                    max_size=args.autoscaling_bounds[1],
                )
                if args.autoscaling_bounds is not None
                else None
            ),
            opts=child_options(
                self,
                opts,
                protect=args.protect,
                # The autoscaler owns the size; a scaled pool is not drift.
                ignore_changes=["desiredSize"] if autoscaled else None,
            ),
        )
        self.node_pool_id = pool.id
        self.register_outputs({"node_pool_id": self.node_pool_id})


@dataclass
class LabelledNodesArgs:
    node_names: Sequence[str]
    labels: Mapping[str, str]
    taints: Sequence[Taint]
    # The ACK cluster's kubeconfig (a secret) is the node-marks provider's, in
    # the component's options; without one, the marks are rendered as YAML
    # through the Kubernetes provider there instead.
    on_cluster: bool
    # What the tolerate-before-taint wait needs (node_marks.rollout_inputs).
    rollout: Mapping[str, Any]


# The Kubernetes provider's NodePatch, registered by its type token with the
# schema's (camelCase) inputs rather than through `pulumi_kubernetes.core.v1`:
# importing that package loads every core/v1 type and costs about 0.18 s of
# each preview, a third of the engine's own floor (benchmarks/engine_preview.py).
NODE_PATCH = "kubernetes:core/v1:NodePatch"


class LabelledNodes(pulumi.ComponentResource):
    """Existing nodes given the gateway's labels, before the gateways change.

    On a cluster, one `NodeMarks` in the `admit` stage for all the nodes
    (components/node_marks.py): it adds the declared labels and removes the
    taints the stack no longer declares, leaving every other label and taint
    alone. `TaintedNodes` adds the taints after the gateways have rolled out.
    Without a cluster, the marks are rendered as NodePatch manifests for review.
    """

    node_names: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: LabelledNodesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(type_token("LabelledNodes"), name, None, opts)
        if args.on_cluster:
            NodeMarks(
                f"{name}-marks",
                stage=ADMIT,
                nodes=args.node_names,
                labels=args.labels,
                taints=args.taints,
                opts=child_options(self, opts),
            )
        else:
            for node_name in args.node_names:
                pulumi.CustomResource(
                    NODE_PATCH,
                    f"{name}-{node_name}",
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {
                            "name": node_name,
                            "labels": dict(sorted(args.labels.items())),
                            "annotations": {"pulumi.com/patchForce": "true"},
                        },
                        "spec": {"taints": [t.as_node_taint() for t in sorted(args.taints)]},
                    },
                    child_options(self, opts),
                )
        self.node_names = pulumi.Output.from_input(list(args.node_names))
        self.register_outputs({"node_names": self.node_names})


class TaintedNodes(pulumi.ComponentResource):
    """The same nodes given the gateway's taints, after the gateways have rolled out.

    One `NodeMarks` in the `restrict` stage for all the nodes: it waits once,
    until no gateway pod is in the way of a taint, before adding the taints,
    and removes the labels the stack no longer declares. Give it the gateways
    in `depends_on`.
    """

    def __init__(
        self, name: str, args: LabelledNodesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(type_token("TaintedNodes"), name, None, opts)
        NodeMarks(
            f"{name}-marks",
            stage=RESTRICT,
            nodes=args.node_names,
            labels=args.labels,
            taints=args.taints,
            rollout=args.rollout,
            opts=child_options(self, opts),
        )
        self.register_outputs({})
