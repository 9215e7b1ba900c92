"""The program's side of node marks: resources of the project's own provider plugin.

What they do to nodes, and why in two stages, is in node_marks_plugin/marks.py;
the plugin itself is node_marks_plugin/server.py. The kubeconfig is the
provider's configuration, given once, so no resource carries it.

The Pulumi dynamic providers that earlier versions used are kept below under
the names their state records, so that an upgrade can delete those resources:
their delete hands the marks over to the new resources and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi.dynamic

from components.providers import require_kubeconfig
from components.scheduling import Taint

PROVIDER_PACKAGE = "asm-node-marks"
NODE_MARKS = f"{PROVIDER_PACKAGE}:index:NodeMarks"
TOLERATION_ROLLOUT = f"{PROVIDER_PACKAGE}:index:TolerationRollout"
ADMIT = "admit"
RESTRICT = "restrict"


def node_marks_provider(
    name: str, kubeconfig: pulumi.Input[str], opts: pulumi.ResourceOptions, source: str = "clusterKubeconfig"
) -> pulumi.ProviderResource:
    """The plugin, configured with a cluster's kubeconfig (kept a secret in state); `source` is
    the config key it comes from, for the plugin's errors."""
    checked = pulumi.Output.from_input(kubeconfig).apply(require_kubeconfig(name, source))
    return pulumi.ProviderResource(
        PROVIDER_PACKAGE,
        name,
        {"kubeconfig": pulumi.Output.secret(checked), "kubeconfigSource": source},
        opts,
    )


def _taints(taints: Sequence[Taint]) -> list[dict[str, str]]:
    return [t.as_node_taint() for t in sorted(taints)]


def rollout_inputs(
    gateway_pods: Sequence[Mapping[str, str]],
    gateway_tolerates: Sequence[Taint],
    rollout_timeout_seconds: int,
    evict_other_pods: bool,
    evict_daemon_set_pods: bool = False,
) -> dict[str, Any]:
    """What the tolerate-before-taint wait needs: whose pods, which taints they are meant to tolerate."""
    inputs = {
        "gatewayPods": [dict(g) for g in gateway_pods],
        "gatewayTolerates": _taints(gateway_tolerates),
        "rolloutTimeoutSeconds": rollout_timeout_seconds,
        "evictOtherPods": evict_other_pods,
    }
    # Only when set: the state of a stack from before the key then diffs as unchanged.
    if evict_daemon_set_pods:
        inputs["evictDaemonSetPods"] = True
    return inputs


class NodeMarks(pulumi.CustomResource):
    """One stage (`admit` or `restrict`) of the declared labels and taints, on every named node.

    Which marks are the stack's is recorded on each node (an annotation the
    provider writes with the marks), so a mark a node carried before the stack
    declared it is never taken off.
    """

    def __init__(
        self,
        name: str,
        *,
        stage: str,
        nodes: Sequence[str],
        labels: Mapping[str, str],
        taints: Sequence[Taint],
        rollout: Mapping[str, Any] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if stage not in (ADMIT, RESTRICT):
            raise ValueError(f"stage must be {ADMIT} or {RESTRICT}, not {stage!r}")
        props: dict[str, Any] = {
            "stage": stage,
            "nodes": list(nodes),
            "labels": dict(sorted(labels.items())),
            "taints": _taints(taints),
            **(rollout or {}),
        }
        super().__init__(NODE_MARKS, name, props, opts)


class TolerationRollout(pulumi.CustomResource):
    """A gate: done once no gateway pod is in the way of `taints`. What taints nodes goes after it.

    For a node pool, whose taints ACK puts on the nodes itself: the pool
    depends on this gate, which depends on the gateways. The pool's nodes are
    found by its labels.
    """

    def __init__(
        self,
        name: str,
        *,
        waits_for: str,
        node_labels: Mapping[str, str],
        taints: Sequence[Taint],
        rollout: Mapping[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            TOLERATION_ROLLOUT,
            name,
            {
                "waitsFor": waits_for,
                "nodeLabels": dict(sorted(node_labels.items())),
                "taints": _taints(taints),
                **rollout,
            },
            opts,
        )


# -- Earlier versions' dynamic providers, kept for upgrades ------------------------------------


class NodeMarksProvider(pulumi.dynamic.ResourceProvider):
    """Earlier versions' per-node marks (their state names this class). Deleting one hands its
    marks over to this version's record on the node, or, where this version has not marked
    the node, takes them back as it always did (node_marks_plugin.marks.handover_patch)."""

    def delete(self, _id: str, props: Any) -> None:
        # Imported here: only the earlier version's dynamic provider process needs them.
        from node_marks_plugin.cluster import Cluster, api_client  # noqa: PLC0415
        from node_marks_plugin.marks import ADMIT, RESTRICT, Marks  # noqa: PLC0415

        stage = props.get("stage", RESTRICT)
        marks = Marks.from_props(props)
        half = Marks(marks.labels, ()) if stage == ADMIT else Marks({}, marks.taints)
        # A failure leaves the resource in state, to be tried again by the next `up`.
        cluster = Cluster(api_client(props["kubeconfig"], "the kubeconfig the earlier version saved"))
        cluster.hand_over(props["node"], half, stage)

    def diff(self, _id: str, _olds: Any, _news: Any) -> pulumi.dynamic.DiffResult:
        return pulumi.dynamic.DiffResult(changes=False)


class TolerationRolloutProvider(pulumi.dynamic.ResourceProvider):
    """Earlier versions' rollout gate; it changed nothing, and deleting it changes nothing."""

    def delete(self, _id: str, _props: Any) -> None:
        return None
