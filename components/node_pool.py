"""The gateway's dedicated ECS capacity, labelled and tainted.

Two ways to get it, chosen by `ecsCapacity.mode`:
- `GatewayNodePool`: a new ACK node pool that carries the labels and taints, so
  that every node it ever adds has them (the guide's Step 1 and 2, as code);
- `LabelledNodes`: existing, named nodes labelled and tainted through the
  Kubernetes API (`kubectl label` / `kubectl taint` as code).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from components import child_options, type_token
from components.forecast import Inventory, declared_inventory, instance_type_size
from components.node_marks import ADMIT, RESTRICT, NodeMarks
from components.scheduling import NodeGroup, NodeKind, Taint
from node_marks_plugin.marks import show, taints_from

# ACK's label on every node of a pool, with the pool's id as its value.
NODE_POOL_ID_LABEL = "alibabacloud.com/nodepool-id"


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
    # Whether a NoExecute taint the stack adds may evict other owners' pods, and DaemonSets'.
    evict_other_pods: bool = False
    evict_daemon_set_pods: bool = False
    instance_type: str | None = None  # existingNodes only: their type, for the forecast
    node_pool_id: str | None = None  # existingNodePool only: the pool adopted

    @property
    def has_pool(self) -> bool:
        """Whether an ACK node pool carries the marks, so that ACK puts them on its nodes."""
        return self.mode in ("nodePool", "existingNodePool")

    @property
    def pool_nodes(self) -> Mapping[str, str]:
        """The labels that find the pool's nodes now: an adopted pool's carry its id before the
        stack's labels (ACK gives every node of a pool that label)."""
        if self.node_pool_id is not None:
            return {NODE_POOL_ID_LABEL: self.node_pool_id}
        return self.labels

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
        if self.mode == "existingNodePool":
            return Inventory(
                None, f"unknown: node pool {self.node_pool_id} is read through clusterKubeconfig"
            )
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


@dataclass(frozen=True)
class PoolMarks:
    """A node pool's labels and taints, as ACK keeps them on the pool and puts them on its nodes."""

    labels: Mapping[str, str]
    taints: tuple[Taint, ...]

    def as_props(self) -> dict[str, Any]:
        return {
            "labels": dict(sorted(self.labels.items())),
            "taints": [t.as_node_taint() for t in sorted(self.taints)],
        }

    @staticmethod
    def from_props(props: Mapping[str, Any] | None) -> PoolMarks:
        props = props or {}
        return PoolMarks(dict(props.get("labels") or {}), taints_from(props.get("taints")))

    @staticmethod
    def of_live_pool(
        labels: Sequence[Mapping[str, Any]] | None, taints: Sequence[Mapping[str, Any]] | None
    ) -> PoolMarks:
        """From the provider's `labels` and `taints` outputs (its output types are mappings too)."""
        return PoolMarks(
            {label["key"]: label.get("value") or "" for label in labels or ()},
            tuple(Taint(t["key"], t.get("value") or "", t.get("effect") or "") for t in taints or ()),
        )


@dataclass(frozen=True)
class AdoptionPlan:
    """What the stack sets on an adopted pool, and what it says about the pool's marks."""

    marks: PoolMarks  # the pool's labels and taints after this `up`
    untolerated: tuple[Taint, ...]  # the pool's own taints the gateway's pods do not tolerate
    labels_left: Mapping[str, str]  # labels neither the pool had when adopted nor the stack declares
    taints_removed: tuple[Taint, ...]  # taints neither the pool had nor the stack declares


def plan_adoption(before: PoolMarks, live: PoolMarks, declared: PoolMarks, where: str) -> AdoptionPlan:
    """The pool's marks with the stack's: the pool's own kept, the stack's declared set.

    `before` is what the pool carried when the stack adopted it, `live` what it
    carries now. A mark of the pool's own that it still carries and that the
    stack would change is refused (ValueError naming `where`, the config key):
    the pool's other users rely on it. A taint that is neither the pool's own
    nor declared (an earlier config's, or one added since) is taken off: the
    gateway tolerates only the declared ones, so a stale taint would keep its
    pods off the pool, or evict them. A label of that kind stays, since it keeps
    no pod away; `preview` names it.
    """
    own_labels = {k: v for k, v in before.labels.items() if live.labels.get(k) == v}
    own_taints = {(t.key, t.effect): t for t in before.taints if t in live.taints}
    problems = [
        f"{where}.labels sets {key}={value}, but the node pool's own label is {key}={own_labels[key]}"
        for key, value in sorted(declared.labels.items())
        if own_labels.get(key, value) != value
    ]
    problems += [
        f"{where}.taints sets {show(t)}, but the node pool's own taint is"
        f" {show(own_taints[(t.key, t.effect)])}"
        for t in sorted(declared.taints)
        if own_taints.get((t.key, t.effect), t) != t
    ]
    if problems:
        raise ValueError(
            "; ".join(problems)
            + ". The stack never changes a mark the pool had before it adopted the pool: pick another key,"
            " or change the pool's own mark in the console first"
        )
    declared_pairs = {(t.key, t.effect) for t in declared.taints}
    kept_taints = [t for k, t in own_taints.items() if k not in declared_pairs]
    taints = tuple(sorted({*kept_taints, *declared.taints}))
    labels_left = {k: v for k, v in live.labels.items() if k not in own_labels and k not in declared.labels}
    return AdoptionPlan(
        PoolMarks({**live.labels, **declared.labels}, taints),
        untolerated=tuple(sorted(kept_taints)),
        labels_left=labels_left,
        taints_removed=tuple(sorted(t for t in live.taints if t not in taints)),
    )


def _shown(labels: Mapping[str, str], taints: Sequence[Taint]) -> str:
    return ", ".join([f"{k}={v}" for k, v in sorted(labels.items())] + [show(t) for t in taints])


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def node_pool_inputs_but_marks() -> list[str]:
    """Every input of the provider's NodePool but the marks: what an adopted pool keeps as it is.

    Read from the SDK, so that an input a newer provider adds is left alone too.
    """
    import pulumi_alicloud as alicloud  # noqa: PLC0415

    names = inspect.signature(alicloud.cs.NodePoolArgs.__init__).parameters
    left_out = ("__self__", "cluster_id", *ADOPTED_POOL_SETS, *READ_BACK_TWICE)
    return sorted(_camel(n) for n in names if n not in left_out)


# What the stack sets on an adopted pool: ACK puts the marks on the pool's nodes in place.
ADOPTED_POOL_SETS = ("labels", "taints", "update_nodes")
# Deprecated inputs the provider's read fills beside the current ones (`name` beside
# `node_pool_name`, `node_count` beside `desired_size` and `scaling_config`, `platform`
# beside `image_type`, `security_group_id` beside `security_group_ids`). Kept from the
# import, each pair fails the provider's own checks (exactly one of, conflicts with);
# left out, they are computed, so they keep their value and show no change.
READ_BACK_TWICE = ("name", "node_count", "platform", "security_group_id")


@dataclass
class AdoptedNodePoolArgs:
    cluster_id: str
    node_pool_id: str
    marks: PoolMarks  # the stack's labels and taints
    config_key: str  # where they are set, for messages: `ecsCapacity` or `clusters[i].ecsCapacity`
    protect: bool = False


class AdoptedNodePool(pulumi.ComponentResource):
    """An ACK node pool that exists, given the gateway's labels and taints and nothing else.

    The pool is imported (the `import` resource option, through the stack's own
    Alibaba Cloud provider) with every input but its marks in `ignore_changes`,
    so the first `up` changes the labels and taints only, and no later config
    can replace or resize it. `retain_on_delete` releases it on `destroy` or
    when it leaves the config. What the pool carried when adopted is kept in a
    `Stash`, so that the stack never changes those marks and can say what to
    put back.
    """

    node_pool_id: pulumi.Output[str]
    marks_before: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: AdoptedNodePoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(type_token("AdoptedNodePool"), name, None, opts)
        import pulumi_alicloud as alicloud  # noqa: PLC0415

        # The provider's id for a pool, and what `pulumi import` takes.
        import_id = f"{args.cluster_id}:{args.node_pool_id}"
        live_pool = alicloud.cs.NodePool.get(f"{name}-live", import_id, opts=child_options(self, opts))
        live = pulumi.Output.all(live_pool.labels, live_pool.taints).apply(
            lambda lt: PoolMarks.of_live_pool(lt[0], lt[1])
        )
        # Named by the pool: another pool id is another adoption, with its own record.
        before_stash = pulumi.Stash(
            f"{name}-{args.node_pool_id}-before",
            input=live.apply(PoolMarks.as_props),
            # Only the first value counts; later ones (the stack's marks among them) are no change.
            opts=child_options(self, opts, ignore_changes=["input"]),
        )
        before = before_stash.output.apply(PoolMarks.from_props)
        where = args.config_key

        def planned(marks: list[PoolMarks]) -> AdoptionPlan:
            before, live = marks
            plan = plan_adoption(before, live, args.marks, where)
            pool = f"node pool {args.node_pool_id}"
            # Every run: `destroy` takes the stack's outputs with it, and this is what undoes it.
            pulumi.log.info(
                f"{pool}: its own labels and taints, from before the stack adopted it:"
                f" {_shown(before.labels, before.taints) or 'none'}",
                self,
            )
            if plan.untolerated:
                pulumi.log.warn(
                    f"{pool} has taint(s) of its own that the gateway does not tolerate:"
                    f" {_shown({}, plan.untolerated)}; its pods never run there until {where}.taints"
                    " lists them",
                    self,
                )
            if plan.taints_removed:
                pulumi.log.warn(
                    f"{pool}: the stack takes off {_shown({}, plan.taints_removed)}, which the pool did"
                    f" not carry when adopted and {where}.taints does not declare (an earlier config's, or"
                    " one added since): the gateway does not tolerate it",
                    self,
                )
            if plan.labels_left:
                pulumi.log.info(
                    f"{pool} carries {_shown(plan.labels_left, ())}, which it did not carry when adopted"
                    f" and {where}.labels does not declare: the stack leaves it (it keeps no pod away);"
                    " remove it in the console if an earlier config of this stack put it there",
                    self,
                )
            return plan

        plan = pulumi.Output.all(before, live).apply(planned)
        # Named by the pool: a changed id adopts that pool and releases this one, never a
        # replacement of one by the other. The alias is the pool this stack made under
        # `ecsCapacity.mode: nodePool`: adopting it by its id updates it in place (same id,
        # no import), where a new name would delete it at the end of the `up`.
        parent = opts.parent if opts else None
        made_here = pulumi.create_urn(name, type_token("GatewayNodePool"), parent=parent)
        pool = alicloud.cs.NodePool(
            f"{name}-{args.node_pool_id}",
            cluster_id=args.cluster_id,
            labels=plan.apply(
                lambda p: [
                    alicloud.cs.NodePoolLabelArgs(key=k, value=v) for k, v in sorted(p.marks.labels.items())
                ]
            ),
            taints=plan.apply(
                lambda p: [
                    alicloud.cs.NodePoolTaintArgs(key=t.key, value=t.value, effect=t.effect or None)
                    for t in p.marks.taints
                ]
            ),
            # ACK puts the marks on the pool's nodes in place, not only on nodes it adds later.
            update_nodes=True,
            opts=child_options(
                self,
                opts,
                import_=import_id,
                ignore_changes=node_pool_inputs_but_marks(),
                retain_on_delete=True,
                protect=args.protect,
                aliases=[pulumi.Alias(name=f"{name}-pool", parent=made_here)],
            ),
        )
        self.node_pool_id = pool.id
        self.marks_before = before_stash.output
        self.register_outputs({"node_pool_id": self.node_pool_id, "marks_before": self.marks_before})


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
