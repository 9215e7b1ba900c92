"""How a gateway rolls and how far it may be disrupted: its budget, its strategy, its PDB.

The pure part derives, from the availability budget the operator states and
the ECS room the forecast computes, the IstioGateway's `rollingMaxSurge` and
`rollingMaxUnavailable`: a rollout surges only into ECS room it has, and
otherwise replaces pods in place within the budget, so that new pods take
the ECS room the old ones leave instead of going to ECI. The same budget is
the gateway's PodDisruptionBudget, which drains and the rebalancer's
evictions respect (the IstioGateway has no field for one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import type_token
from components.gateway import Gateway, gateway_pod_labels
from components.scheduling import Policy

# ASM's defaults for a gateway's Deployment (Istio's): what runs where neither is set.
ASM_DEFAULT_SURGE = "100%"
ASM_DEFAULT_UNAVAILABLE = "25%"


def _percent(value: int | str) -> int | None:
    """The number of a percentage ("25%" -> 25), None for a count."""
    if isinstance(value, str) and value.endswith("%"):
        return int(value[:-1])
    return None


def scaled(value: int | str, replicas: int, round_up: bool) -> int:
    """A count or percentage as pods of `replicas`, rounded as Kubernetes does for that field."""
    percent = _percent(value)
    if percent is None:
        return int(value)
    exact = replicas * percent / 100
    return math.ceil(exact) if round_up else math.floor(exact)


@dataclass(frozen=True)
class Availability:
    """The gateway's disruption budget: the fewest Ready pods (`min_available`) or the most
    not Ready (`max_unavailable`), each a count or a percentage, as a PodDisruptionBudget has it."""

    min_available: int | str | None = None
    max_unavailable: int | str | None = 1

    def unavailable(self, replicas: int) -> int:
        """Pods of `replicas` that may be down at once, rounded so that a rollout never goes
        below what the PDB keeps (the PDB rounds percentages up, a Deployment's down)."""
        if self.min_available is not None:
            return max(0, replicas - scaled(self.min_available, replicas, round_up=True))
        assert self.max_unavailable is not None
        return min(replicas, scaled(self.max_unavailable, replicas, round_up=False))

    def as_rolling_unavailable(self, replicas: int) -> str:
        """`rollingMaxUnavailable` for this budget: a percentage stays one (it follows the
        autoscaler); a count is worked out at `replicas`."""
        if self.min_available is not None:
            percent = _percent(self.min_available)
            if percent is not None:
                return f"{100 - percent}%"
        elif self.max_unavailable is not None and _percent(self.max_unavailable) is not None:
            return str(self.max_unavailable)
        return str(self.unavailable(replicas))

    def pdb_spec(self, gateway_name: str) -> dict[str, Any]:
        budget = (
            {"minAvailable": self.min_available}
            if self.min_available is not None
            else {"maxUnavailable": self.max_unavailable}
        )
        return {
            **budget,
            "selector": {"matchLabels": gateway_pod_labels(gateway_name)},
            # A pod that is not Ready serves nothing: never let it block a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        }


def fewest_pods(gateway: Gateway) -> int:
    """The fewest pods the gateway runs in any cluster: the HPA's lower bound where it
    autoscales, else replicaCount (a count budget is worked out here, never above)."""
    runs = [gateway] + [gateway.in_cluster(cluster_id) for cluster_id in gateway.cluster_overrides]
    counts = [g.min_replicas if g.autoscale else g.replicas for g in runs]
    return min([c for c in counts if c] or [0])  # a cluster that runs none rolls nothing


def budget_of(gateway: Gateway) -> Availability:
    """The budget a gateway's config states; one pod down at a time where it states none."""
    if gateway.min_available is not None:
        return Availability(min_available=gateway.min_available, max_unavailable=None)
    return Availability(max_unavailable=1 if gateway.max_unavailable is None else gateway.max_unavailable)


@dataclass(frozen=True)
class RollingStrategy:
    """The IstioGateway's `rollingMaxSurge` / `rollingMaxUnavailable`, and why."""

    max_surge: str
    max_unavailable: str
    derived: bool  # from the budget and the ECS room (else as set, or ASM's defaults)
    why: str = ""

    def as_spec(self) -> dict[str, str]:
        return {"rollingMaxSurge": self.max_surge, "rollingMaxUnavailable": self.max_unavailable}

    def pods(self, replicas: int) -> tuple[int, int]:
        """(surge, unavailable) as pods at `replicas`, rounded as a Deployment rounds them."""
        surge = scaled(_intstr(self.max_surge), replicas, round_up=True)
        unavailable = scaled(_intstr(self.max_unavailable), replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            surge = 1  # what a Deployment refuses; ASM's controller would not roll
        return surge, unavailable


def _intstr(text: str) -> int | str:
    return text if text.endswith("%") else int(text)


def rolling_strategy(
    gateway: Gateway, policy: Policy, ecs_surge_room: int | None, pods_now: int | None = None
) -> RollingStrategy:
    """The gateway's rolling update. Under `prefer-ecs` and `ecs-only`: surge only into the ECS
    room the forecast finds beyond every gateway's replicaCount (`ecs_surge_room`, None when
    it is not read from the cluster: no surge), and replace the rest in place within the
    budget; one pod surges where the budget allows none down. Fields set in extraSpec win;
    other policies keep ASM's defaults. `pods_now`: the fewest pods it runs in a cluster now."""
    set_surge = gateway.extra_spec.get("rollingMaxSurge")
    set_unavailable = gateway.extra_spec.get("rollingMaxUnavailable")
    if policy not in (Policy.PREFER_ECS, Policy.ECS_ONLY):
        return RollingStrategy(
            str(set_surge or ASM_DEFAULT_SURGE),
            str(set_unavailable or ASM_DEFAULT_UNAVAILABLE),
            derived=False,
            why=f"{policy.value} keeps ASM's rollout",
        )
    # The rollout an `up` starts replaces the pods running now (read from the clusters: the
    # fewest of them); unread, the fewest the gateway may run.
    fewest = pods_now or fewest_pods(gateway)
    derived_unavailable = budget_of(gateway).as_rolling_unavailable(fewest)
    if scaled(_intstr(derived_unavailable), fewest, round_up=False) >= fewest:
        derived_unavailable = str(max(fewest - 1, 0))  # a rollout never takes every pod down
    unavailable = str(set_unavailable) if set_unavailable is not None else derived_unavailable
    if set_surge is not None:
        return RollingStrategy(
            str(set_surge), unavailable, derived=False, why="rollingMaxSurge set in extraSpec"
        )
    room = min(ecs_surge_room or 0, gateway.replicas)
    down = scaled(_intstr(unavailable), fewest, round_up=False)
    if room:
        why = f"surges into the ECS room for {room} more pod(s)"
    elif down:
        why = "no ECS room to surge into: replaces pods in place"
    elif policy is Policy.ECS_ONLY and fewest > 1 and set_unavailable is None:
        # A surge pod could only wait Pending (no ECI): one pod down is the only way to roll.
        unavailable = "1"
        why = "ecs-only, no ECS room and a budget that rounds to none down: one pod at a time, in place"
    elif policy is Policy.ECS_ONLY:
        # One pod, or none down as extraSpec says: never a pod down that the operator keeps.
        room = 1
        why = "ecs-only, no ECS room, no pod to take down: the new pod waits Pending while the old one serves"
    else:
        room = 1
        why = "the budget allows no pod down and ECS has no room: one pod surges (to ECI, moved back after)"
    return RollingStrategy(str(room), unavailable, derived=True, why=why)


@dataclass
class GatewayDisruptionBudgetArgs:
    gateway: Gateway


def disruption_budget_name(gateway_name: str) -> str:
    """Beside any budget ASM or a chart makes for the gateway, never the same name."""
    return f"asm-serverless-gateway-{gateway_name}"


class GatewayDisruptionBudget(pulumi.ComponentResource):
    """One gateway's PodDisruptionBudget in one cluster: drains and the rebalancer's evictions
    (through the Eviction API) keep its budget of Ready pods."""

    def __init__(
        self, name: str, args: GatewayDisruptionBudgetArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(type_token("GatewayDisruptionBudget"), name, None, opts)
        gateway = args.gateway
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=disruption_budget_name(gateway.name), namespace=gateway.namespace
            ),
            spec=budget_of(gateway).pdb_spec(gateway.name),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
