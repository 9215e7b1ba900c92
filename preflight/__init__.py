"""What a stack needs of the APIs it talks to, checked before anything changes.

`needs` derives it from the stack's declared inputs (pure data), `permissions`
turns it into the Kubernetes RBAC and the Alibaba Cloud RAM policy to grant,
and `checks` asks each API whether the stack's identity has it. The program
runs the checks before it declares a resource (so `preview` and `up` stop
first); `scripts/preflight.sh` prints every row for a named stack.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pulumi

from components.data_plane import DataPlaneCluster
from components.forecast import Inventory
from components.stack import Observed
from go_tools.toolchain import backend_problem, published_passphrase_problem
from preflight.needs import stack_needs

if TYPE_CHECKING:
    from node_marks_plugin.marks import Owner
    from stack_config import StackConfig


class PreflightError(pulumi.RunError):
    """Shown by the engine as a message, without a traceback, like a config error."""


def require(config: StackConfig) -> Observed:
    """Run the preflight for every API the stack has a kubeconfig for; refuse on a failed row.

    Called by the program before it declares anything, so a failure stops
    `preview` and `up` alike with nothing changed. First of all, a stack whose
    secrets the published passphrase decrypts is refused, however it is run.
    Returns what it read: per cluster id, the gateway's ECS nodes as that
    cluster has them (for the placement forecast), and which clusters the
    gateways run in now (for the order in which a joining cluster's pool is
    made), where the stack can read them.
    """
    # The rules scripts/pulumi.sh applies, for plain `pulumi` too (what the program can see).
    refused = published_passphrase_problem(config.stack, os.environ) or backend_problem(
        config.stack, os.environ
    )
    if refused:
        raise PreflightError(refused)
    needs = [n for n in stack_needs(config.gateway) if n.config_key in config.kubeconfigs]
    if not needs:
        return Observed()
    # Imported here: the Kubernetes client costs ~0.27 s, and stacks without a
    # kubeconfig (local) never need it.
    from preflight.checks import MARKS_ADMITTED, Result, failed, stack_owner, stack_rows, table  # noqa: PLC0415

    seen: dict[str, dict[str, Any]] = {}
    owner = stack_owner(config.stack, pulumi.get_project())
    rows = stack_rows(needs, dict(config.kubeconfigs), seen, owner)
    for row in rows:
        if row.check == MARKS_ADMITTED and row.result is Result.NOT_RUN:
            pulumi.log.warn(f"the node marks were not tried in advance: {row.detail}")
    failures = failed(rows)
    if failures:
        raise PreflightError(
            f"stack {config.stack}: the preflight failed, so nothing was changed:\n{table(failures)}\n"
            f"`scripts/preflight.sh --stack {config.stack}` shows every check;"
            f" `scripts/preflight.sh permissions --stack {config.stack}` writes the RBAC to grant."
        )
    conflicts = _adoption_problems(config, seen.get("mesh", {})) + [
        line
        for c in config.gateway.clusters
        for line in _budget_conflicts(config, c, seen.get(c.api, {}))
        + pool_nodes_marked_by_the_stack(config, c, seen.get(c.api, {}), owner)
    ]
    if conflicts:
        raise PreflightError(
            f"stack {config.stack}: nothing was changed:\n" + "\n".join(f"  {line}" for line in conflicts)
        )
    read = {
        c.cluster_id: _observed_inventory(config, c, seen.get(c.api, {}), owner)
        for c in config.gateway.clusters
        if not c.retiring  # no forecast there
    }
    return Observed(
        {cluster_id: inventory for cluster_id, inventory in read.items() if inventory is not None},
        _serving_clusters(config, seen.get("mesh", {})),
    )


def _adoption_problems(config: StackConfig, seen: dict[str, Any]) -> list[str]:
    """Gateways that exist without `adopt`, or are adopted and do not exist; the fields an
    adopted gateway's other writers hold that the stack takes over are warned about."""
    if "client" not in seen:
        return []
    from kubernetes.client import ApiException  # noqa: PLC0415

    from components.gateway import API_VERSION  # noqa: PLC0415
    from components.scheduling import Policy  # noqa: PLC0415
    from preflight.adoption import adoption, written_fields  # noqa: PLC0415
    from preflight.checks import get  # noqa: PLC0415

    args = config.gateway
    derived = args.policy in (Policy.PREFER_ECS, Policy.ECS_ONLY)
    problems: list[str] = []
    for index, gateway in enumerate(args.gateways):
        path = f"/apis/{API_VERSION}/namespaces/{gateway.namespace}/istiogateways/{gateway.name}"
        try:
            live = get(seen["client"], path)
        except ApiException as error:
            if error.status != 404:
                raise PreflightError(
                    f"stack {config.stack}: could not read IstioGateway {gateway.namespace}/{gateway.name}"
                    f" through meshKubeconfig ({error.status} {error.reason}), so nothing was changed"
                ) from None
            live = None
        verdict = adoption(index, gateway, live, written_fields(gateway, derived, len(args.clusters) > 1))
        problems += verdict.errors
        for warning in verdict.warnings:
            pulumi.log.warn(warning)
    return problems


def _serving_clusters(config: StackConfig, seen: dict[str, Any]) -> frozenset[str] | None:
    """The clusters the stack's IstioGateways list now, as the mesh serves them; None when unread.

    Read only where it decides something: a pool, which is made before the
    gateways in a cluster they do not run in yet, and after them where they do.
    """
    args = config.gateway
    if "client" not in seen or not any(c.ecs.has_pool for c in args.clusters):
        return None
    from kubernetes.client import ApiException  # noqa: PLC0415

    from components.gateway import API_VERSION  # noqa: PLC0415
    from preflight.checks import get  # noqa: PLC0415

    listed: set[str] = set()
    for gateway in args.gateways:
        path = f"/apis/{API_VERSION}/namespaces/{gateway.namespace}/istiogateways/{gateway.name}"
        try:
            listed.update(get(seen["client"], path).get("spec", {}).get("clusterIds") or [])
        except ApiException as error:
            if error.status != 404:  # a gateway not made yet runs nowhere
                return None
        except Exception:  # noqa: BLE001 - unread: every pool keeps the safe order, after the gateways
            return None
    return frozenset(listed)


def pool_nodes_marked_by_the_stack(
    config: StackConfig, cluster: DataPlaneCluster, seen: dict[str, Any], owner: Owner
) -> list[str]:
    """Nodes of a pool being adopted that this stack marked itself (`existingNodes` before):
    the node marks' delete at the end of the `up` would take off what ACK just put on."""
    pool_id = cluster.ecs.node_pool_id
    if pool_id is None or "client" not in seen:
        return []
    from components.node_pool import NODE_POOL_ID_LABEL  # noqa: PLC0415

    try:
        pool_nodes = seen["node_reads"].selected({NODE_POOL_ID_LABEL: pool_id})
    except Exception as error:  # noqa: BLE001 - unread: said, as the budget check does
        pulumi.log.warn(
            f"could not read node pool {pool_id}'s nodes ({type(error).__name__}): if this stack marked"
            " them itself before (existingNodes), the adopting `up` would take those marks off at its end"
        )
        return []
    marked = sorted(
        node["metadata"]["name"]
        for node in pool_nodes
        if {owner.key, owner.legacy_key} & set(node["metadata"].get("annotations") or {})
    )
    if not marked:
        return []
    return [
        f"{cluster.config_path}ecsCapacity: node(s) {', '.join(marked)} of node pool {pool_id} carry"
        " marks this stack put on them itself (ecsCapacity.nodes); adopting the pool in the same `up`"
        " would take them off again at its end. Hand them to the pool first, keeping the marks:"
        " `scripts/node-marks.sh release --kubeconfig <admin kubeconfig>"
        f" --stack {owner.name} --selector {NODE_POOL_ID_LABEL}={pool_id} --yes`"
    ]


def _budget_conflicts(config: StackConfig, cluster: DataPlaneCluster, seen: dict[str, Any]) -> list[str]:
    """Gateways whose pods another owner's budget selects already, where the stack would add one."""
    budgeted = [(i, g) for i, g in enumerate(config.gateway.gateways) if g.disruption_budget]
    if "client" not in seen or not budgeted:
        return []
    from preflight.budgets import budget_conflicts  # noqa: PLC0415

    where = "" if cluster.is_first else f" in cluster {cluster.cluster_id}"
    try:
        return budget_conflicts(seen["client"], budgeted, where)
    except Exception as error:  # noqa: BLE001 - unread: said, and the stack goes on as before
        pulumi.log.warn(
            f"could not read the gateways' pods and budgets{where} ({type(error).__name__}): a budget of"
            " another owner over them would stall drains and the rebalancer"
        )
        return []


def _observed_inventory(
    config: StackConfig, cluster: DataPlaneCluster, seen: dict[str, Any], owner: Owner
) -> Inventory | None:
    """One cluster's nodes as read through the preflight's client for it (none without one)."""
    if "client" not in seen or cluster.ecs.mode == "none":
        return None
    from preflight.inventory import read_inventory  # noqa: PLC0415

    gateways = [g.in_cluster(cluster.cluster_id) for g in config.gateway.gateways]
    try:
        return read_inventory(seen["client"], cluster.ecs, gateways, seen["node_reads"], owner)
    except Exception as error:  # noqa: BLE001 - the forecast advises; it never stops a preview
        where = "" if cluster.is_first else f" in cluster {cluster.cluster_id}"
        pulumi.log.warn(
            f"placement forecast: could not read the gateway's nodes{where} ({type(error).__name__});"
            " it counts them from the stack's config instead"
        )
        return None
