"""What a stack will do to each Kubernetes API, derived from its inputs alone (pure).

One derivation serves three readers: the preflight asks the API about exactly
these verbs, the generated RBAC grants exactly these, and the
permission documents are generated from it, so none can drift from the stack.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from components.data_plane import DataPlaneCluster
from components.gateway import API_VERSION as ISTIO_GATEWAY_API_VERSION
from components.gateway import KIND as ISTIO_GATEWAY_KIND
from components.rebalancer import NAME as REBALANCER_NAME_BEFORE
from components.rebalancer import descheduler_rules
from components.resource_policy import API_VERSION as RESOURCE_POLICY_API_VERSION
from components.resource_policy import KIND as RESOURCE_POLICY_KIND
from components.scheduling import Taint
from components.stack import ServerlessGatewayArgs
from components.virtual_nodes import ECI_PROFILE_NAME, ECI_PROFILE_NAMESPACE

# What pulumi-kubernetes 4.25 does to an object it manages with server-side
# apply: reads it (refresh, update), applies (the dry run of a preview, create
# and update; an apply that creates is authorised as `create` too), deletes it
# and watches it go (list, watch).
MANAGED_OBJECT_VERBS = ("get", "list", "watch", "create", "patch", "delete")
# What deleting an object the stack made before takes (and watching it go).
REMOVAL_VERBS = ("get", "list", "watch", "delete")
# A Patch resource only reads and applies; the eci-profile's is kept on destroy.
PATCHED_OBJECT_VERBS = ("get", "patch")
# It also watches the events of the namespace of each object it changes.
EVENT_VERBS = ("list", "watch")
PROGRESS = "pulumi-kubernetes' progress reports"


@dataclass(frozen=True, order=True)
class Access:
    """One verb on one kind of object, where the stack does it."""

    verb: str
    resource: str  # plural, as RBAC and access reviews name it
    group: str = ""  # "" is the core API group
    namespace: str | None = None  # None: cluster-scoped, or every namespace
    name: str | None = None  # one object only
    why: str = ""

    def describe(self) -> str:
        kind = f"{self.resource}.{self.group}" if self.group else self.resource
        target = f"{kind}/{self.name}" if self.name else kind
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} {target}{where}"


@dataclass(frozen=True)
class ServedKind:
    """A kind the API must serve (a CRD installed by ACK or ASM)."""

    api_version: str  # group/version
    kind: str
    plural: str


@dataclass(frozen=True)
class ObjectRef:
    """An object that must exist before the stack patches it."""

    namespace: str  # "": a cluster-scoped object
    resource: str
    name: str
    unless: str = ""  # why it may be missing yet (something this stack installs makes it)
    missing: str = "the stack patches it and does not create it"  # why it must exist

    @property
    def path(self) -> str:
        where = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"/api/v1{where}/{self.resource}/{self.name}"

    @property
    def describe(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else f"{self.resource[:-1]} {self.name}"


@dataclass(frozen=True)
class ApiNeeds:
    """Everything the stack needs of one Kubernetes API."""

    api: str  # "cluster" (the first ACK cluster), "cluster-<id>" (a listed one) or "mesh" (ASM's)
    config_key: str  # the config key that holds this API's kubeconfig
    access: tuple[Access, ...]
    nodes: tuple[str, ...] = ()  # nodes that must exist
    # The labels and taints the stack puts on those nodes itself (existingNodes).
    node_marks: tuple[dict[str, str], tuple[Taint, ...]] | None = None
    virtual_nodes: bool = False  # virtual nodes must exist (not made by this stack)
    kinds: tuple[ServedKind, ...] = ()
    objects: tuple[ObjectRef, ...] = ()
    # Namespaces an admin makes once (the generated RBAC holds them): the rebalancer's.
    namespaces: tuple[str, ...] = ()


def _object_access(
    verbs: Iterable[str], resource: str, namespace: str, why: str, *, group: str = "", name: str | None = None
) -> list[Access]:
    return [Access(verb, resource, group, namespace, name, why) for verb in verbs]


def _managed_per_namespace(args: ServerlessGatewayArgs, resource: str, group: str, why: str) -> list[Access]:
    """One managed object per gateway namespace, and that namespace's events."""
    access: list[Access] = []
    for namespace in sorted({g.namespace for g in args.gateways}):
        access += _object_access(MANAGED_OBJECT_VERBS, resource, namespace, why, group=group)
        access += _object_access(EVENT_VERBS, "events", namespace, PROGRESS)
    return access


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def cluster_needs(args: ServerlessGatewayArgs, cluster: DataPlaneCluster) -> ApiNeeds | None:
    """What the stack does to one ACK cluster's API, or None when it does nothing there."""
    access: list[Access] = []
    kinds: list[ServedKind] = []
    objects: list[ObjectRef] = []
    ecs = cluster.ecs
    # With a pool, these are only done when the stack has the cluster's kubeconfig
    # (the wait is skipped without one); the preflight only checks an API it can reach.
    if ecs.mode != "none":
        # The node-marks provider reads each node it marks by name and patches it
        # (node_marks_plugin/cluster.py); lists by label find a pool's nodes, and the
        # nodes that carry the gateway's labels (those that left the list, the forecast's).
        listing = (
            "nodes that carry the gateway's labels"
            if ecs.mode == "existingNodes"
            else "finding the pool's nodes for the tolerate-before-taint wait"
        )
        access.append(Access("list", "nodes", why=listing))
        if ecs.mode == "existingNodes":
            why = "labels and taints on the named nodes"
            access += [Access("get", "nodes", why=why), Access("patch", "nodes", why=why)]
        # The wait reads the gateway's pods, and before a NoExecute taint, the pods
        # on each node (every namespace: another team's pods are what it looks for).
        access.append(Access("list", "pods", why="pods in the way of a taint, in every namespace"))
    virtual = cluster.virtual_nodes
    if virtual.mode == "existing":
        access.append(Access("list", "nodes", why="the preflight finds the virtual nodes"))
    if virtual.eci_vswitch_ids or virtual.eci_security_group_id:
        access += _object_access(
            PATCHED_OBJECT_VERBS,
            "configmaps",
            ECI_PROFILE_NAMESPACE,
            "the ECI network in the eci-profile",
            name=ECI_PROFILE_NAME,
        )
        access += _object_access(EVENT_VERBS, "events", ECI_PROFILE_NAMESPACE, PROGRESS)
        objects.append(
            ObjectRef(
                ECI_PROFILE_NAMESPACE,
                "configmaps",
                ECI_PROFILE_NAME,
                unless="the ack-virtual-node add-on this stack installs makes it"
                if virtual.mode == "addon"
                else "",
            )
        )
    access += _availability_access(args, cluster)
    if args.ack_resource_policy:
        access += _managed_per_namespace(
            args, "resourcepolicies", _group(RESOURCE_POLICY_API_VERSION), "the gateways' ResourcePolicy"
        )
        kinds.append(ServedKind(RESOURCE_POLICY_API_VERSION, RESOURCE_POLICY_KIND, "resourcepolicies"))
    if not access:
        return None
    return ApiNeeds(
        api=cluster.api,
        config_key=cluster.kubeconfig_key,
        access=_unique(access),
        nodes=ecs.nodes if ecs.mode == "existingNodes" else (),
        node_marks=(dict(ecs.labels), ecs.taints) if ecs.mode == "existingNodes" else None,
        virtual_nodes=virtual.mode == "existing",
        kinds=tuple(kinds),
        objects=tuple(objects),
        namespaces=(args.rebalancer.namespace,) if _runs_rebalancer(args, cluster) else (),
    )


def _availability_access(args: ServerlessGatewayArgs, cluster: DataPlaneCluster) -> list[Access]:
    """The gateways' PodDisruptionBudgets and the rebalancer (components/rebalancer.py), where the
    stack can reach the cluster's API (else it warns and declares neither). Taking either away
    (an opt-out, another policy) deletes what an earlier `up` made: those rights stay."""
    if cluster.kubeconfig is None and not args.render_yaml_to:
        return []
    access: list[Access] = []
    for namespace in sorted({g.namespace for g in args.gateways}):
        if any(g.disruption_budget for g in args.gateways if g.namespace == namespace):
            access += _object_access(
                MANAGED_OBJECT_VERBS,
                "poddisruptionbudgets",
                namespace,
                "the gateways' budgets",
                group="policy",
            )
            # The preflight looks for another owner's budget over the gateways' live pods.
            why = "budgets of other owners over the gateways' pods"
            access.append(Access("list", "pods", namespace=namespace, why=why))
        else:
            removing = "removing budgets of an earlier config"
            access += _object_access(
                REMOVAL_VERBS, "poddisruptionbudgets", namespace, removing, group="policy"
            )
        access += _object_access(EVENT_VERBS, "events", namespace, PROGRESS)
    rbac = "rbac.authorization.k8s.io"
    if _runs_rebalancer(args, cluster):
        access += _rebalancer_access(args)
    removing = "removing a rebalancer an earlier `up` made (this stack's, or the one of earlier versions)"
    for resource in ("clusterroles", "clusterrolebindings"):
        access += [Access(verb, resource, rbac, why=removing) for verb in ("list", "watch")]
        for name in (args.rebalancer.name, REBALANCER_NAME_BEFORE):
            access += [Access(verb, resource, rbac, name=name, why=removing) for verb in ("get", "delete")]
    return access


def _rebalancer_access(args: ServerlessGatewayArgs) -> list[Access]:
    namespace, why = args.rebalancer.namespace, "the rebalancer (the descheduler)"
    access: list[Access] = []
    for resource, group in (("serviceaccounts", ""), ("configmaps", ""), ("deployments", "apps")):
        access += _object_access(MANAGED_OBJECT_VERBS, resource, namespace, why, group=group)
    access += _object_access(EVENT_VERBS, "events", namespace, PROGRESS)
    rbac = "rbac.authorization.k8s.io"
    for resource in ("clusterroles", "clusterrolebindings"):
        # Creating cannot be limited to a name in RBAC; changing and deleting are, to its own.
        access += [Access(verb, resource, rbac, why=why) for verb in ("create", "list", "watch")]
        own = args.rebalancer.name
        access += [Access(verb, resource, rbac, name=own, why=why) for verb in ("get", "patch", "delete")]
    # RBAC lets an identity grant only what it holds itself (no `escalate` or `bind`, which
    # would let it grant anything): the deployer holds every right of the descheduler's role.
    granting = f"{why}: granting its role, which RBAC allows only with the same rights"
    for rule in descheduler_rules():
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                access += [Access(verb, resource, group, why=granting) for verb in rule["verbs"]]
    return access


def _runs_rebalancer(args: ServerlessGatewayArgs, cluster: DataPlaneCluster) -> bool:
    reachable = cluster.kubeconfig is not None or bool(args.render_yaml_to)
    return reachable and args.rebalances and cluster.has_both_kinds


def mesh_needs(args: ServerlessGatewayArgs) -> ApiNeeds | None:
    """What the stack does to the mesh's API. None for a mesh it creates: ASM's kubeconfig
    for a new mesh is its creator's, and there is nothing to check before it exists."""
    if args.mesh.mode == "create" or not args.gateways:
        return None
    access = _managed_per_namespace(
        args, "istiogateways", _group(ISTIO_GATEWAY_API_VERSION), "the IstioGateways"
    )
    return ApiNeeds(
        api="mesh",
        config_key="meshKubeconfig",
        access=_unique(access),
        kinds=(ServedKind(ISTIO_GATEWAY_API_VERSION, ISTIO_GATEWAY_KIND, "istiogateways"),),
    )


def stack_needs(args: ServerlessGatewayArgs) -> tuple[ApiNeeds, ...]:
    """Per API the stack talks to (each cluster's, then the mesh's): what it will do there."""
    needs = [cluster_needs(args, cluster) for cluster in args.clusters] + [mesh_needs(args)]
    return tuple(n for n in needs if n is not None)


def _unique(access: Iterable[Access]) -> tuple[Access, ...]:
    """One entry per verb and object, the first reason kept; none for one namespace or one name
    where the same verb is needed on every object of the kind (it could never fail alone)."""
    seen: dict[tuple[str, str, str, str | None, str | None], Access] = {}
    for entry in access:
        seen.setdefault((entry.verb, entry.resource, entry.group, entry.namespace, entry.name), entry)
    return tuple(
        entry
        for key, entry in seen.items()
        if not ((entry.namespace or entry.name) and (*key[:3], None, None) in seen)
    )
