"""Gateways that exist before the stack: adopted where the config says so, refused where it does not.

A gateway made in ASM's console has a load balancer whose address is in DNS:
recreating it is an outage, and taking it over silently overwrites what its
owner set. The preflight reads each IstioGateway through `meshKubeconfig`
before anything is declared. One that exists, that no Pulumi stack wrote, and
whose entry does not say `adopt: true` stops `preview` and `up`; one that is
adopted gets a warning naming the fields the stack takes over and from whom.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from components.gateway import GUIDE_FIELDS, Gateway

# pulumi-kubernetes' server-side-apply field managers (a suffix per resource).
PULUMI_MANAGER_PREFIX = "pulumi-kubernetes"
ROLLOUT_FIELDS = ("rollingMaxSurge", "rollingMaxUnavailable")


@dataclass(frozen=True)
class Adoption:
    """What the preflight found for one gateway: refusals, and warnings."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _managers(live: Mapping[str, Any]) -> list[tuple[str, set[str]]]:
    """Each field manager of the live object with the spec fields it holds: top-level ones, and
    `affinity.<kind>` for the affinity (server-side apply merges its kinds one by one)."""
    held = []
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        spec = ((entry.get("fieldsV1") or {}).get("f:spec")) or {}
        fields = {key[2:] for key in spec if key.startswith("f:") and key != "f:affinity"}
        affinity = spec.get("f:affinity") or {}
        fields |= {f"affinity.{key[2:]}" for key in affinity if key.startswith("f:")}
        held.append((str(entry.get("manager") or "(unnamed)"), fields))
    return held


def made_by_a_stack(live: Mapping[str, Any]) -> bool:
    """Whether a Pulumi stack created the gateway whole (its manager holds `gatewayType`, which
    only a full IstioGateway writes), not only patched it: an adoption's patch never does."""
    return any(
        name.startswith(PULUMI_MANAGER_PREFIX) and "gatewayType" in fields for name, fields in _managers(live)
    )


def written_fields(gateway: Gateway, derived_rollout: bool, several_clusters: bool) -> set[str]:
    """The top-level spec fields the stack writes on an adopted gateway (gateway.adopted_spec)."""
    fields = (set(GUIDE_FIELDS) - {"affinity"}) | {"affinity.nodeAffinity"} | set(gateway.declared)
    if derived_rollout:
        fields |= set(ROLLOUT_FIELDS)
    if several_clusters:
        fields.add("clusterIds")
    return fields


def adoption(
    index: int,
    gateway: Gateway,
    live: Mapping[str, Any] | None,
    written: Iterable[str],
) -> Adoption:
    """The preflight's verdict on gateway `index` given the live IstioGateway (None: absent)."""
    where = f"IstioGateway {gateway.namespace}/{gateway.name}"
    key = f"gateways[{index}].adopt"
    if live is None:
        missing = (
            f"{key} is true, but {where} does not exist in the mesh; remove it to have the stack make it"
        )
        return Adoption(errors=(missing,) if gateway.adopt else ())
    if not gateway.adopt:
        if made_by_a_stack(live):
            return Adoption()  # made by this stack
        writers = ", ".join(sorted({name for name, _ in _managers(live)})) or "another writer"
        return Adoption(
            errors=(
                f"{where} exists already (written by {writers}), and no Pulumi stack made it: set {key}:"
                " true to bring it under this stack without recreating it (its Service and load balancer"
                " stay), or name another gateway",
            )
        )
    if made_by_a_stack(live):
        # Its IstioGateway resource would go, and with it the live gateway and its load balancer.
        return Adoption(
            errors=(
                f"{key} is true, but a Pulumi stack made {where} (this one, before?): adopting it would"
                " delete it first; keep adopt false, or take it out of that stack's state (`pulumi"
                " state delete <its urn>`) before adopting it",
            )
        )
    return Adoption(warnings=_taken_over(where, live, written))


def _taken_over(where: str, live: Mapping[str, Any], written: Iterable[str]) -> tuple[str, ...]:
    """A warning naming the fields the stack writes that other writers hold now, and whose."""
    taken: dict[str, set[str]] = {}
    wanted = set(written) - {"podLabels"}  # the pod label is one key beside the live ones
    for name, fields in _managers(live):
        if name.startswith(PULUMI_MANAGER_PREFIX):
            continue
        for field in sorted(fields & wanted):
            taken.setdefault(field, set()).add(name)
    if not taken:
        return ()
    listed = "; ".join(f"spec.{field} from {', '.join(sorted(who))}" for field, who in sorted(taken.items()))
    return (
        f"{where} is adopted: `up` takes over {listed} (their live values are replaced, and removed"
        " when the stack releases them; every other field keeps its live value)",
    )
