"""Budgets of other owners over a gateway's pods, read before the stack declares its own.

The Eviction API refuses (500) to evict a pod that two PodDisruptionBudgets
select, so a second budget over the gateway's pods would stall every drain of
its nodes and every move of the rebalancer. Istio's own installs make such a
budget (`istio-ingressgateway`, `minAvailable: 1`); a team may too. The
preflight finds them on the gateway's live pods and refuses, naming the key
that keeps theirs instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes

from components.gateway import GATEWAY_POD_LABEL, Gateway
from components.rollout import disruption_budget_name
from components.scheduling import expression_matches
from preflight.checks import get


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a PodDisruptionBudget's label selector selects a pod with `labels` (policy/v1: an
    empty selector selects every pod of the namespace, none selects none)."""
    if selector is None:
        return False
    wanted = selector.get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items()) and all(
        expression_matches(labels, e) for e in selector.get("matchExpressions") or []
    )


def foreign_budgets(
    budgets: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]], own_name: str
) -> list[str]:
    """The names of budgets other than `own_name` that select any of `pods`."""
    return sorted(
        budget["metadata"]["name"]
        for budget in budgets
        if budget["metadata"]["name"] != own_name
        and any(
            selects(
                (budget.get("spec") or {}).get("selector"), (pod.get("metadata") or {}).get("labels") or {}
            )
            for pod in pods
        )
    )


def budget_conflicts(
    client: kubernetes.client.ApiClient, gateways: Sequence[tuple[int, Gateway]], where: str
) -> list[str]:
    """One line per gateway (with its index in `gateways`) that would get a second budget."""
    problems = []
    for index, gateway in gateways:
        namespace = gateway.namespace
        pods = (
            get(
                client,
                f"/api/v1/namespaces/{namespace}/pods?labelSelector={GATEWAY_POD_LABEL}%3D{gateway.name}",
            ).get("items")
            or []
        )
        if not pods:
            continue  # not running yet: no other budget can be known to select it
        budgets = (
            get(client, f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets").get("items") or []
        )
        names = foreign_budgets(budgets, pods, disruption_budget_name(gateway.name))
        if names:
            problems.append(
                f"gateway {namespace}/{gateway.name}{where}: PodDisruptionBudget {', '.join(names)}"
                f" of another owner already selects its pods, and Kubernetes refuses to evict a pod"
                f" that two budgets select (drains and the rebalancer would stall); set"
                f" gateways[{index}].podDisruptionBudget: false to keep that budget as the gateway's"
            )
    return problems
