"""Labels and taints on nodes the stack shares with others, changed key by key.

A Node's `spec.taints` is an atomic list: server-side apply makes one field
manager own all of it, so a stack that applies its taints by SSA removes every
taint it did not declare (Kubernetes' own `not-ready`/`unreachable`, ACK's, a
team's `maintenance`). This module changes nodes the way `kubectl label` and
`kubectl taint` do instead: read the node, add or remove exactly the declared
labels and taints, write it back on the `resourceVersion` that was read, and
start again on a conflict. Everything else on the node is left as it was.

A change is split in two stages so that the gateway is never evicted or
stranded by the stack's own `up`:

- `admit` runs before the gateways change: it adds the declared labels and
  removes the taints the stack no longer declares (both only widen where the
  gateway's pods may run);
- `restrict` runs after the gateways change and their pods have rolled out
  with the new tolerations: it adds the declared taints and removes the labels
  the stack no longer declares.

Destroy runs the stages backwards: `restrict` removes its taints first, then the
gateways go, then `admit` removes its labels.

The merge functions are pure; `NodeMarksProvider` is a Pulumi dynamic provider
on the official Kubernetes client. Its import path is recorded in state (dill
pickles the class by reference), so keep `components.node_marks.NodeMarksProvider`
where it is, or old state cannot be read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi.dynamic

from components.scheduling import Taint

if TYPE_CHECKING:
    import kubernetes

ADMIT = "admit"
RESTRICT = "restrict"
STAGES = (ADMIT, RESTRICT)
FIELD_MANAGER = "asm-serverless-gateway"
CONFLICT_RETRIES = 20

# -- Pure: what to write -------------------------------------------------------------------


@dataclass(frozen=True)
class Marks:
    """The labels and taints the stack declares for a node."""

    labels: Mapping[str, str]
    taints: tuple[Taint, ...]

    @staticmethod
    def from_props(props: Mapping[str, Any]) -> Marks:
        return Marks(
            dict(props.get("labels") or {}),
            tuple(Taint(t["key"], t.get("value") or "", t["effect"]) for t in props.get("taints") or ()),
        )

    def found_on(self, node: Mapping[str, Any]) -> Marks:
        """The part of these marks that the node carries now."""
        labels = node.get("metadata", {}).get("labels") or {}
        taints = node.get("spec", {}).get("taints") or []
        return Marks(
            {k: v for k, v in self.labels.items() if labels.get(k) == v},
            tuple(t for t in self.taints if t.on(taints)),
        )


NO_MARKS = Marks({}, ())


@dataclass(frozen=True)
class NodeChange:
    """One stage's change to one node: labels to set or drop, taints to add or drop."""

    set_labels: Mapping[str, str] = field(default_factory=dict)
    drop_labels: Mapping[str, str] = field(default_factory=dict)
    add_taints: Sequence[Taint] = ()
    drop_taints: Sequence[Taint] = ()


def stage_change(stage: str, old: Marks | None, new: Marks | None) -> NodeChange:
    """What a stage writes when the declared marks go from `old` to `new`.

    `old` is None when the stage's resource is created, `new` when it is
    deleted: then each stage takes back only what it added.
    """
    old = old or NO_MARKS
    if new is None:
        return NodeChange(drop_labels=old.labels) if stage == ADMIT else NodeChange(drop_taints=old.taints)
    if stage == ADMIT:
        dropped = tuple(t for t in old.taints if t not in new.taints)
        return NodeChange(set_labels=new.labels, drop_taints=dropped)
    return NodeChange(
        drop_labels={k: v for k, v in old.labels.items() if k not in new.labels},
        add_taints=new.taints,
    )


def node_patch(node: Mapping[str, Any], change: NodeChange) -> dict[str, Any] | None:
    """A JSON merge patch that makes `change` on `node`, or None when it already holds.

    Labels are merged key by key (null deletes one); the taint list is written
    whole, since a merge patch replaces lists, with every taint the change does
    not name kept as it was (its value, its `timeAdded`) and in its place. A
    label is dropped only while it still has the value the stack gave it.
    """
    metadata = node.get("metadata", {})
    labels: Mapping[str, str] = metadata.get("labels") or {}
    label_patch: dict[str, str | None] = {k: v for k, v in change.set_labels.items() if labels.get(k) != v}
    for key, value in change.drop_labels.items():
        if labels.get(key) == value and key not in change.set_labels:
            label_patch[key] = None

    current: list[Mapping[str, Any]] = list(node.get("spec", {}).get("taints") or [])
    taints = [t for t in current if not any(d.on([t]) for d in change.drop_taints)]
    for taint in change.add_taints:
        if taint.on(taints):
            continue
        slot = next((i for i, t in enumerate(taints) if taint.same_slot(t)), None)
        if slot is None:
            taints.append(taint.as_node_taint())
        else:
            # `kubectl taint --overwrite`: one taint per key and effect.
            taints[slot] = taint.as_node_taint()

    handover = released_managed_fields(node, change)
    if not label_patch and taints == current and handover is None:
        return None
    patch: dict[str, Any] = {"metadata": {"resourceVersion": metadata.get("resourceVersion")}}
    if handover is not None:
        patch["metadata"]["managedFields"] = handover
    if label_patch:
        patch["metadata"]["labels"] = label_patch
    if taints != current:
        patch["spec"] = {"taints": taints}
    return patch


# What earlier versions of this stack applied nodes' marks with: the Kubernetes
# provider's NodePatch, by server-side apply under this field manager prefix.
NODE_PATCH_MANAGER_PREFIX = "pulumi-kubernetes-"


def released_managed_fields(node: Mapping[str, Any], change: NodeChange) -> list[Any] | None:
    """The node's managedFields without a NodePatch's claim on the marks this change sets, or None.

    Upgrading replaces the NodePatch of earlier versions; deleting it would
    remove every field it applied, the whole atomic taint list included. Taking
    its claim off first (as a `kubectl` user may edit managedFields) makes that
    delete touch nothing.
    """
    if not change.set_labels and not change.add_taints:
        return None
    entries = list(node.get("metadata", {}).get("managedFields") or [])
    label_fields = {f"f:{key}" for key in change.set_labels}

    def claims_ours(entry: Mapping[str, Any]) -> bool:
        fields = entry.get("fieldsV1") or {}
        labels = fields.get("f:metadata", {}).get("f:labels", {})
        return "f:taints" in fields.get("f:spec", {}) or bool(label_fields & set(labels))

    kept = [
        e
        for e in entries
        if not (
            str(e.get("manager", "")).startswith(NODE_PATCH_MANAGER_PREFIX)
            and e.get("operation") == "Apply"
            and claims_ours(e)
        )
    ]
    if len(kept) == len(entries):
        return None
    # An empty list would leave managedFields as they are; `[{}]` clears them.
    return kept or [{}]


def untolerating_pods(pods: Sequence[Mapping[str, Any]], taints: Sequence[Taint]) -> list[str]:
    """The pods (namespace/name) that lack a toleration for one of `taints`.

    Terminating pods count: a gateway pod that the rollout is replacing still
    drains its connections, and a NoExecute taint would evict it mid-drain.
    """
    lacking = []
    for pod in pods:
        metadata = pod.get("metadata", {})
        tolerations = pod.get("spec", {}).get("tolerations") or []
        if not all(t.tolerated_by(tolerations) for t in taints):
            lacking.append(f"{metadata.get('namespace')}/{metadata.get('name')}")
    return lacking


# -- The dynamic provider: talks to the cluster ---------------------------------------------


class NodeMarksError(Exception):
    pass


def _client(kubeconfig: str) -> kubernetes.client.CoreV1Api:
    # Imported here: the client is large, and only the provider's process needs it.
    import kubernetes  # noqa: PLC0415
    import yaml  # noqa: PLC0415

    document = yaml.safe_load(kubeconfig)
    if not isinstance(document, dict):
        raise NodeMarksError("the kubeconfig is empty or not a kubeconfig")
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config_dict(document))


def _read_json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def _read_node(core: kubernetes.client.CoreV1Api, name: str) -> dict[str, Any] | None:
    import kubernetes  # noqa: PLC0415

    try:
        return _read_json(core.read_node(name, _preload_content=False))
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def change_node(core: kubernetes.client.CoreV1Api, name: str, change: NodeChange) -> bool:
    """Read, patch on the read `resourceVersion`, retry on conflict. False if the node is gone."""
    import kubernetes  # noqa: PLC0415

    for _ in range(CONFLICT_RETRIES):
        node = _read_node(core, name)
        if node is None:
            return False
        patch = node_patch(node, change)
        if patch is None:
            return True
        try:
            core.patch_node(
                name,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json",
            )
            return True
        except kubernetes.client.ApiException as error:
            if error.status != 409:
                raise
    raise NodeMarksError(f"node {name}: still conflicting after {CONFLICT_RETRIES} tries")


def wait_until_tolerated(
    core: kubernetes.client.CoreV1Api,
    gateway_pods: Sequence[Mapping[str, str]],
    taints: Sequence[Taint],
    timeout: float,
    where: str,
) -> None:
    """Wait until every gateway pod tolerates `taints`: the gateways have rolled out, old pods gone."""
    deadline = time.monotonic() + timeout
    while True:
        pods: list[dict[str, Any]] = []
        for selector in gateway_pods:
            listing = _read_json(
                core.list_namespaced_pod(
                    selector["namespace"], label_selector=selector["labelSelector"], _preload_content=False
                )
            )
            pods.extend(listing.get("items") or [])
        lacking = untolerating_pods(pods, taints)
        if not lacking:
            return
        if time.monotonic() >= deadline:
            shown = ", ".join(f"{t.key}={t.value}:{t.effect}" for t in taints)
            raise NodeMarksError(
                f"{where}: gateway pods {', '.join(sorted(lacking))} still lack a toleration for"
                f" {shown} after {timeout:.0f}s (rolloutTimeoutSeconds); the taint was not added, so"
                " nothing was evicted. Run `up` again once the mesh has rolled the gateway out."
            )
        time.sleep(1)


class NodeMarksProvider(pulumi.dynamic.ResourceProvider):
    """Adds and removes exactly the declared labels and taints of one node, in one stage."""

    def _apply(self, props: Mapping[str, Any], change: NodeChange) -> None:
        core = _client(props["kubeconfig"])
        name = props["node"]
        node = _read_node(core, name)
        if node is None:
            raise NodeMarksError(f"node {name} does not exist in the cluster (ecsCapacity.nodes)")
        present = node.get("spec", {}).get("taints") or []
        missing = [t for t in change.add_taints if not t.on(present)]
        if missing:
            # Tolerate before taint: the gateways' pods must carry the new
            # tolerations before any node does, or a NoExecute taint evicts them.
            timeout = float(props["rolloutTimeoutSeconds"])
            wait_until_tolerated(core, props.get("gatewayPods") or [], missing, timeout, f"node {name}")
        change_node(core, name, change)

    def create(self, props: Any) -> pulumi.dynamic.CreateResult:
        self._apply(props, stage_change(props["stage"], None, Marks.from_props(props)))
        return pulumi.dynamic.CreateResult(id_=f"{props['node']}/{props['stage']}", outs=dict(props))

    def update(self, _id: str, olds: Any, news: Any) -> pulumi.dynamic.UpdateResult:
        self._apply(news, stage_change(news["stage"], Marks.from_props(olds), Marks.from_props(news)))
        return pulumi.dynamic.UpdateResult(outs=dict(news))

    def delete(self, _id: str, props: Any) -> None:
        change_node(
            _client(props["kubeconfig"]),
            props["node"],
            stage_change(props["stage"], Marks.from_props(props), None),
        )

    def read(self, id_: str, props: Any) -> pulumi.dynamic.ReadResult:
        """What of the declared marks the node carries now: a mark removed by hand shows as a diff."""
        node = _read_node(_client(props["kubeconfig"]), props["node"])
        if node is None:
            return pulumi.dynamic.ReadResult(id_="", outs={})
        found = Marks.from_props(props).found_on(node)
        return pulumi.dynamic.ReadResult(
            id_=id_,
            outs={
                **props,
                "labels": dict(found.labels),
                "taints": [t.as_node_taint() for t in found.taints],
            },
        )

    def diff(self, _id: str, olds: Any, news: Any) -> pulumi.dynamic.DiffResult:
        changed = _changed(
            olds, news, ("labels", "taints", "gatewayPods", "rolloutTimeoutSeconds", "kubeconfig")
        )
        replaces = [k for k in ("node", "stage") if olds.get(k) != news.get(k)]
        if not changed and not replaces and self._drifted(news):
            changed = ["taints" if news["stage"] == RESTRICT else "labels"]
        return pulumi.dynamic.DiffResult(
            changes=bool(changed or replaces), replaces=replaces, delete_before_replace=True
        )

    def _drifted(self, props: Mapping[str, Any]) -> bool:
        """Whether a mark this stage puts on the node was taken off behind the stack's back.

        Checked on every preview, so a plain `up` puts it back (as
        `preview --refresh` shows it); a node that is gone is not drift here.
        """
        if not isinstance(props.get("kubeconfig"), str):
            return False  # not known yet in this preview
        node = _read_node(_client(props["kubeconfig"]), props["node"])
        if node is None:
            return False
        declared = Marks.from_props(props)
        found = declared.found_on(node)
        if props["stage"] == RESTRICT:
            return found.taints != declared.taints
        return dict(found.labels) != dict(declared.labels)


def _changed(olds: Mapping[str, Any], news: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The inputs among `keys` whose values differ (maps compared regardless of key order)."""
    return [
        k for k in keys if json.dumps(olds.get(k), sort_keys=True) != json.dumps(news.get(k), sort_keys=True)
    ]


def _rollout_inputs(
    taints: Sequence[Taint],
    kubeconfig: pulumi.Input[str],
    gateway_pods: Sequence[Mapping[str, str]],
    rollout_timeout_seconds: int,
) -> dict[str, Any]:
    """The inputs both dynamic resources share: the taints, the cluster, and whose rollout to wait for."""
    return {
        "taints": [t.as_node_taint() for t in sorted(taints)],
        "kubeconfig": pulumi.Output.secret(kubeconfig),
        "gatewayPods": [dict(g) for g in gateway_pods],
        "rolloutTimeoutSeconds": rollout_timeout_seconds,
    }


def _with_secret_kubeconfig(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    # The dynamic provider does not take secrets; its outputs say which are.
    return pulumi.ResourceOptions.merge(
        pulumi.ResourceOptions(additional_secret_outputs=["kubeconfig"]), opts
    )


class NodeMarks(pulumi.dynamic.Resource, module="asm-serverless-gateway", name="NodeMarks"):
    """One node's declared labels and taints, in one stage (`admit` or `restrict`)."""

    def __init__(
        self,
        name: str,
        *,
        node: str,
        stage: str,
        labels: Mapping[str, str],
        taints: Sequence[Taint],
        kubeconfig: pulumi.Input[str],
        gateway_pods: Sequence[Mapping[str, str]],
        rollout_timeout_seconds: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        super().__init__(
            NodeMarksProvider(),
            name,
            {
                "node": node,
                "stage": stage,
                "labels": dict(sorted(labels.items())),
                **_rollout_inputs(taints, kubeconfig, gateway_pods, rollout_timeout_seconds),
            },
            _with_secret_kubeconfig(opts),
        )


class TolerationRolloutProvider(pulumi.dynamic.ResourceProvider):
    """Waits until every gateway pod tolerates the declared taints; changes nothing."""

    def _wait(self, props: Mapping[str, Any]) -> None:
        wait_until_tolerated(
            _client(props["kubeconfig"]),
            props.get("gatewayPods") or [],
            Marks.from_props(props).taints,
            float(props["rolloutTimeoutSeconds"]),
            props["waitsFor"],
        )

    def create(self, props: Any) -> pulumi.dynamic.CreateResult:
        self._wait(props)
        return pulumi.dynamic.CreateResult(id_=props["waitsFor"], outs=dict(props))

    def update(self, _id: str, olds: Any, news: Any) -> pulumi.dynamic.UpdateResult:
        self._wait(news)
        return pulumi.dynamic.UpdateResult(outs=dict(news))

    def diff(self, _id: str, olds: Any, news: Any) -> pulumi.dynamic.DiffResult:
        changed = _changed(
            olds, news, ("taints", "gatewayPods", "rolloutTimeoutSeconds", "kubeconfig", "waitsFor")
        )
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=[])


class TolerationRollout(pulumi.dynamic.Resource, module="asm-serverless-gateway", name="TolerationRollout"):
    """A gate: done once every gateway pod tolerates `taints`. What taints nodes goes after it.

    For a node pool, whose taints ACK puts on the nodes itself: the pool
    depends on this gate, which depends on the gateways.
    """

    def __init__(
        self,
        name: str,
        *,
        waits_for: str,
        taints: Sequence[Taint],
        kubeconfig: pulumi.Input[str],
        gateway_pods: Sequence[Mapping[str, str]],
        rollout_timeout_seconds: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            TolerationRolloutProvider(),
            name,
            {
                "waitsFor": waits_for,
                **_rollout_inputs(taints, kubeconfig, gateway_pods, rollout_timeout_seconds),
            },
            _with_secret_kubeconfig(opts),
        )
