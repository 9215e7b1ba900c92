"""The guide's last step as a command: where did the gateway pods land?

Lists each gateway pod, its node and the node's kind (the gateway's ECS nodes,
a virtual node, or another node), says how many pods are Pending and why, and
exits 1 when a pod runs on a node that the stack's required node affinity does
not admit. What is expected comes from the stack's own `gateways` output (the
rules it applied), so the check cannot drift from the stack either.

    .venv/bin/python placement_check.py --stack prod --kubeconfig ~/.kube/ack-prod.yaml

A stack of several clusters is checked one cluster at a time: `--kubeconfig`
reaches it and `--cluster` names its id, for that cluster's forecast.

`--stack` reads the stack's outputs with the project's `pulumi` (the same
backend and passphrase rules as scripts/pulumi.sh); `--outputs FILE` (or `-`,
stdin) takes them from `pulumi stack output --json` instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

from components.scheduling import VIRTUAL_NODE_LABELS, expression_matches

NodeKindName = str  # "gateway-ecs" | "virtual" | "other"


def term_matches(labels: Mapping[str, str], term: Mapping[str, Any]) -> bool:
    return all(expression_matches(labels, e) for e in term.get("matchExpressions", []))


def required_terms(affinity: Mapping[str, Any]) -> list[dict[str, Any]]:
    required = affinity.get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {})
    return list(required.get("nodeSelectorTerms", []))


def node_kind(labels: Mapping[str, str], affinity: Mapping[str, Any]) -> NodeKindName:
    """Classify a node by the rules: a virtual node, the gateway's ECS nodes, or other."""
    if all(labels.get(k) == v for k, v in VIRTUAL_NODE_LABELS.items()):
        return "virtual"
    if any(term_matches(labels, term) for term in required_terms(affinity)):
        return "gateway-ecs"
    return "other"


def admitted(labels: Mapping[str, str], affinity: Mapping[str, Any]) -> bool:
    return any(term_matches(labels, term) for term in required_terms(affinity))


@dataclass(frozen=True)
class PodPlacement:
    gateway: str
    pod: str
    node: str | None
    kind: NodeKindName | None
    allowed: bool
    pending_reason: str | None = None
    namespace: str = ""
    started: str | None = None  # when the pod started (RFC 3339), if it has


def placements(
    gateway: Mapping[str, Any], pods: Sequence[Any], node_labels: Mapping[str, Mapping[str, str]]
) -> list[PodPlacement]:
    """Where each pod of one gateway is, judged by the gateway's own rules."""
    result = []
    for pod in pods:
        node = pod.spec.node_name
        if node is None:
            reason = next(
                (
                    f"{c.reason}: {c.message}"
                    for c in (pod.status.conditions or [])
                    if c.type == "PodScheduled" and c.status == "False"
                ),
                "not scheduled yet",
            )
            result.append(
                PodPlacement(
                    gateway["name"], pod.metadata.name, None, None, True, reason, gateway["namespace"]
                )
            )
            continue
        labels = node_labels.get(node, {})
        result.append(
            PodPlacement(
                gateway["name"],
                pod.metadata.name,
                node,
                node_kind(labels, gateway["affinity"]),
                admitted(labels, gateway["affinity"]),
                namespace=gateway["namespace"],
                started=pod.status.start_time.isoformat() if pod.status.start_time else None,
            )
        )
    return result


def pod_selector(gateway: Mapping[str, Any], override: str | None) -> str:
    """The stack's own pod labels for the gateway, unless the user names others."""
    if override:
        return override.format(name=gateway["name"])
    return ",".join(f"{k}={v}" for k, v in sorted(gateway["podLabels"].items()))


def node_labels(api: Any) -> dict[str, dict[str, str]]:
    """Every node's labels, by node name."""
    nodes = kubernetes.client.CoreV1Api(api).list_node().items
    return {n.metadata.name: n.metadata.labels or {} for n in nodes}


def check(api: Any, gateways: Sequence[Mapping[str, Any]], selector: str | None = None) -> list[PodPlacement]:
    core = kubernetes.client.CoreV1Api(api)
    labels = node_labels(api)
    found: list[PodPlacement] = []
    for gateway in gateways:
        pods = core.list_namespaced_pod(
            gateway["namespace"], label_selector=pod_selector(gateway, selector)
        ).items
        found.extend(placements(gateway, pods, labels))
    return found


def report(found: Sequence[PodPlacement]) -> str:
    lines = [f"{'GATEWAY':<20} {'POD':<45} {'NODE':<32} KIND"]
    for p in found:
        where = p.node or "-"
        kind = p.kind or f"Pending ({p.pending_reason})"
        flag = "" if p.allowed else "   <-- not allowed by the gateway's rules"
        lines.append(f"{p.gateway:<20} {p.pod:<45} {where:<32} {kind}{flag}")
    kinds = Counter(p.kind or "pending" for p in found)
    lines.append(", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items())) or "no gateway pods")
    return "\n".join(lines)


def stack_outputs(stack: str) -> dict[str, Any]:
    """The stack's outputs, read with the project's own engine set-up."""
    from go_tools import toolchain  # noqa: PLC0415  # only this path needs the engine

    env = toolchain.engine_environment()
    problem = toolchain.secrets_problem(stack, [], env)
    if problem:
        raise SystemExit(f"error: {problem}")
    result = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--stack", stack],
        cwd=Path(__file__).resolve().parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"error: cannot read the outputs of stack '{stack}': {result.stderr.strip()}")
    outputs: dict[str, Any] = json.loads(result.stdout)
    return outputs


def cluster_forecast(outputs: Mapping[str, Any], cluster: str | None) -> tuple[dict[str, Any] | None, str]:
    """The forecast for the cluster checked: the stack's one, or (several clusters) the one named."""
    forecast = outputs.get("placementForecast")
    if not forecast or "clusters" not in forecast:
        return forecast, ""
    clusters = forecast["clusters"]
    if not cluster:
        return (
            None,
            "the stack spans several clusters: name the one checked (--cluster): "
            + ", ".join(sorted(clusters)),
        )
    if cluster not in clusters:
        return None, (
            f"no forecast for cluster {cluster}: the gateways are not deployed there (a retiring cluster, or"
            f" not one of the stack's: {', '.join(sorted(clusters))})"
        )
    return clusters[cluster], ""


def compare_with_forecast(
    api: Any, outputs: Mapping[str, Any], found: Sequence[PodPlacement], cluster: str | None = None
) -> list[str]:
    """What runs against what the stack's last `preview`/`up` forecast (for `cluster`, where the
    stack spans several), and why they differ."""
    # Imported here: only this comparison needs the forecast's arithmetic.
    from components.forecast import PodSize, amounts, gateway_key  # noqa: PLC0415
    from preflight.checks import carries  # noqa: PLC0415
    from preflight.inventory import admits, node_rooms  # noqa: PLC0415
    from stack_config import parse_quantity  # noqa: PLC0415

    forecast, problem = cluster_forecast(outputs, cluster)
    if problem:
        return [problem]
    if not forecast:
        return ["no placementForecast output: `up` with this version of the stack to compare with one"]
    rules = {gateway_key(g["namespace"], g["name"]): g for g in outputs.get("gateways", [])}
    # Every gateway of the stack is placed by the forecast, so none of them counts as taking room.
    ours = [dict(g["podLabels"]) for g in rules.values()]

    @functools.cache
    def nodes() -> list[dict[str, Any]]:
        """Listed only if a difference needs explaining, and then once."""
        listed: list[dict[str, Any]] = api.sanitize_for_serialization(
            kubernetes.client.CoreV1Api(api).list_node().items
        )
        return listed

    where = f" for cluster {cluster}" if cluster else ""
    lines = [f"against the forecast{where} ({forecast.get('ecsFigures', '?')}):"]
    if not forecast.get("live"):
        lines.append("  (it counted the nodes' capacity from the stack's config, not what the cluster held)")
    for predicted in forecast.get("gateways", []):
        key, room = predicted["gateway"], predicted.get("ecsRoom")
        rule = rules.get(key)
        mine = [
            p
            for p in found
            if rule is not None and (p.namespace, p.gateway) == (rule["namespace"], rule["name"])
        ]
        kinds = Counter(p.kind or "pending" for p in mine)
        ecs, eci, pending = kinds["gateway-ecs"], kinds["virtual"], kinds["pending"]
        line = f"  {key}: {len(mine)} pods, {ecs} on ECS, {eci} on ECI, {pending} Pending"
        if room is None or rule is None:
            lines.append(line + "; the forecast did not know the ECS room")
            continue
        if forecast.get("policy") in ("prefer-eci", "eci-only"):
            lines.append(line + f"; {forecast.get('policy')} puts pods on ECI first")
            continue
        expected = min(len(mine), room)
        line += f"; the forecast's ECS room was {room}, so {expected} on ECS at this count"
        if ecs >= expected:
            lines.append(line + ": as forecast")
            continue
        requests = {name: parse_quantity(amount) for name, amount in predicted["podRequests"].items()}
        size = PodSize(requests.pop("cpu"), requests.pop("memory"), amounts(requests))
        group = [
            n
            for n in nodes()
            if node_kind(n["metadata"].get("labels") or {}, rule["affinity"]) == "gateway-ecs"
        ]
        usable = [n for n in group if admits(n, rule.get("tolerations") or [])]
        now = node_rooms(api, usable, lambda pod: any(carries(pod, labels) for labels in ours))
        room_now = sum(r.holds(size) for r in now)
        if eci and forecast.get("policy") == "prefer-ecs":
            # Room with every pod counted where it runs now: what an ECI pod could move into.
            free = sum(r.holds(size) for r in node_rooms(api, usable, lambda pod: False))
            lines += eci_while_ecs_has_room(key, [p for p in mine if p.kind == "virtual"], free, size)
        if room_now < room:
            left_out = len(group) - len(usable)
            why = f"{left_out} of them cordoned or tainted against the gateway, and " if left_out else ""
            lines.append(
                line + f": the ECS nodes hold {room_now} now, not {room} ({why}pods of other owners"
                " requesting more on them since the forecast, or fewer nodes)"
            )
        else:
            lines.append(
                line + f": the ECS nodes still hold {room_now}; default scoring put pods on ECI while ECS had"
                " room (the forecast is exact for ECS-first placement: ackResourcePolicy)"
            )
    return lines


def eci_while_ecs_has_room(gateway: str, on_eci: Sequence[PodPlacement], free: int, size: Any) -> list[str]:
    """Pods on ECI (billed per second) that the gateway's ECS nodes have room for now."""
    from components.forecast import Drift  # noqa: PLC0415

    movable = min(len(on_eci), free)
    if not movable:
        return []
    now = datetime.now(UTC)
    ages = [(now - datetime.fromisoformat(p.started)).total_seconds() for p in on_eci if p.started]
    drift = Drift(
        movable, len(on_eci), size.cpu * movable, size.memory * movable, max(ages) if ages else None
    )
    return [
        f"  {gateway}: {drift.describe()} (at its requests; ECI rounds up). The rebalancer moves them"
        " within a few of its intervals where it runs; else a rollout does (see docs/architecture.md)"
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--kubeconfig", help="the ACK cluster's kubeconfig (default: $KUBECONFIG or ~/.kube/config)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="the stack whose outputs say what is allowed")
    source.add_argument("--outputs", help="the stack's outputs as JSON, from a file or - for stdin")
    parser.add_argument(
        "--cluster",
        help="for a stack of several clusters: the id of the cluster --kubeconfig reaches"
        " (one run per cluster)",
    )
    parser.add_argument(
        "--selector",
        help="label selector of a gateway's pods ({name} is the gateway);"
        " default: the pod labels the stack gave the gateway",
    )
    args = parser.parse_args(argv)
    if args.stack:
        outputs = stack_outputs(args.stack)
    else:
        outputs = json.loads(sys.stdin.read() if args.outputs == "-" else Path(args.outputs).read_text())
    if "gateways" not in outputs:
        print("error: the stack has no `gateways` output; has it been `up`-ed?", file=sys.stderr)
        return 2
    gateways = outputs["gateways"]
    api = kubernetes.config.new_client_from_config(config_file=args.kubeconfig)
    found = check(api, gateways, args.selector)
    print(report(found))
    try:
        print("\n".join(compare_with_forecast(api, outputs, found, args.cluster)))
    except (kubernetes.client.ApiException, OSError, ValueError, KeyError) as error:
        # The comparison explains; it never turns a passing check into a failure.
        print(f"could not compare with the forecast: {type(error).__name__}: {error}"[:300])
    return 0 if all(p.allowed for p in found) else 1


if __name__ == "__main__":
    sys.exit(main())
