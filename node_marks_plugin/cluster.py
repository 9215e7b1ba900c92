"""The node-marks provider's side of the Kubernetes API, on the official client.

Two guarantees about credentials live here. No part of the kubeconfig ever
reaches a message: every failure to read it is reported by what was wrong,
never by what it held. And no key material is ever written to disk: the client
writes a kubeconfig's inline certificates and keys to temporary files that it
deletes only at a clean exit; here they go to anonymous in-memory files
instead, which vanish with the process however it ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
import urllib3
from kubernetes.config import kube_config

from components.kubeconfig import KubeconfigProblemError, read_kubeconfig
from node_marks_plugin.marks import (
    FIELD_MANAGER,
    Blocker,
    EvictionsAllowed,
    Marks,
    MarksConflict,
    Node,
    Owner,
    Pod,
    Tainting,
    gateway_blockers,
    handover_patch,
    matches,
    others_evicted,
    show,
    stage_patch,
    up_patches,
)

CONFLICT_RETRIES = 20
POLL_SECONDS = 1.0
# Seconds to connect and to read, per API call: a black-holed server fails
# the call instead of hanging the `up`.
REQUEST_TIMEOUT = (10, 60)


class NodeMarksError(Exception):
    """A refusal or failure, worded for the operator: the provider shows it as the error, alone."""


_in_memory_files: dict[str, int] = {}
_in_memory_lock = threading.Lock()


def _in_memory_file(
    content: str | bytes, temp_file_path: str | None = None, force_recreate: bool = False
) -> str:
    """Where the client may read a certificate or key: a memfd, never a file on disk."""
    data = content.encode() if isinstance(content, str) else content
    digest = hashlib.sha256(data).hexdigest()
    with _in_memory_lock:
        if digest not in _in_memory_files:
            fd = os.memfd_create("kubeconfig-part", os.MFD_CLOEXEC)
            os.write(fd, data)
            _in_memory_files[digest] = fd
        return f"/proc/{os.getpid()}/fd/{_in_memory_files[digest]}"


# The client's own writer puts key material in /tmp until a clean exit. Where
# the system has no anonymous in-memory files (not Linux), that stays so.
if hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd"):
    kube_config._create_temp_file_with_content = _in_memory_file


def api_client(kubeconfig: str, source: str) -> kubernetes.client.ApiClient:
    """A client for a kubeconfig's current context; errors say what is wrong, never what it holds."""
    try:
        document = read_kubeconfig(kubeconfig)
    except KubeconfigProblemError as problem:
        raise NodeMarksError(f"{source} {problem}") from None
    try:
        return kubernetes.config.new_client_from_config_dict(document)
    except Exception as error:  # noqa: BLE001 - the client's messages may quote the kubeconfig
        raise NodeMarksError(
            f"{source} cannot be used: the Kubernetes client refused it ({type(error).__name__});"
            " check its current-context, cluster and user entries"
        ) from None


class ApiRefusalError(NodeMarksError):
    """The API server refused a request: its status, and who refused it (`refused_by`)."""

    def __init__(self, message: str, status: int | None, refused_by: str) -> None:
        super().__init__(message)
        self.status = status
        self.refused_by = refused_by


# Who refused a request, as the API server's message tells it.
RBAC = "rbac"  # the authorizer: the identity lacks the verb
ADMISSION = "admission"  # a ValidatingAdmissionPolicy, a webhook, an admission plugin
NO_DRY_RUN = "no-dry-run"  # a webhook with side effects, which refuses every dry run
WEBHOOK_DOWN = "webhook-down"  # a webhook that did not answer
OTHER = "other"

# The authorizer's own words (k8s.io/apiserver's forbidden message); nothing else reads so.
_RBAC_MESSAGE = re.compile(r'forbidden: User "(?:[^"\\]|\\.)*" cannot \S+ (?:resource|path) "')


def refused_by(status: int | None, message: str) -> str:
    """Who refused a request. Only the authorizer's exact phrasing is RBAC: a 403 any other way
    (a policy, a webhook, NodeRestriction) is admission, whatever words its message uses."""
    if "does not support dry run" in message:
        return NO_DRY_RUN
    if "failed calling webhook" in message:
        return WEBHOOK_DOWN
    words = ("ValidatingAdmissionPolicy", "admission webhook", "denied request", "denied the request")
    if status == 403 and _RBAC_MESSAGE.search(message):
        return RBAC
    # The API server's 403 for an object reads `<kind> "<name>" is forbidden: <why>`; past the
    # authorizer, the why is admission's (a policy, a webhook, NodeRestriction).
    if any(w in message for w in words) or (status == 403 and "is forbidden:" in message):
        return ADMISSION
    return OTHER


_HINTS = {
    RBAC: "; the kubeconfig's identity lacks this permission"
    " (`scripts/preflight.sh permissions --stack <stack>` writes the RBAC the stack needs)",
    ADMISSION: "; the cluster's admission control (a ValidatingAdmissionPolicy, a webhook or an admission"
    " plugin) refused it, not RBAC: ask its owner to allow the stack's marks, or declare marks it allows",
    NO_DRY_RUN: "; a webhook that declares side effects refuses every dry run, so what it would say to"
    " `up` cannot be known in advance",
    WEBHOOK_DOWN: "; an admission webhook of the cluster did not answer: it refuses every change it"
    " covers until it does (its Service and pods)",
}


def api_error(error: kubernetes.client.ApiException, doing: str) -> ApiRefusalError:
    """An API error as one line: what was being done, the status, the server's own message, and
    what to do, by who refused it."""
    message = ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(error.body or "{}").get("message", "")
    who = refused_by(error.status, message)
    hint = _HINTS.get(who, "")
    if error.status == 401:
        hint = (
            "; the kubeconfig's credentials were refused (rotated or expired?): set the new one"
            " (`pulumi config set --secret clusterKubeconfig`) and run `pulumi up`; `destroy` uses the"
            " kubeconfig the last `up` saved"
        )
    return ApiRefusalError(
        f"{doing}: {error.status} {error.reason}{': ' + message if message else ''}{hint}", error.status, who
    )


def unreachable(error: Exception, doing: str) -> NodeMarksError:
    return NodeMarksError(
        f"{doing}: the cluster's API cannot be reached ({type(error).__name__}); check the kubeconfig's"
        " server address and the network path to it"
    )


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


class Cluster:
    """The calls the provider makes: nodes by name, pods by selector or node, node patches."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(client)

    def _call(self, doing: str, call: Callable[[], Any], missing_ok: bool = False) -> dict[str, Any]:
        try:
            return _json(call())
        except kubernetes.client.ApiException as error:
            if missing_ok and error.status == 404:
                return {}
            raise api_error(error, doing) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise unreachable(error, doing) from None

    def nodes(
        self, names: Iterable[str] | None = None, label_selector: str = "", *, cached: bool = True
    ) -> dict[str, Node]:
        """The named nodes that exist, each read by name (the cost of a few nodes, not of the
        cluster's); else those the selector matches (every node without one), in one list, from
        the API server's cache (`resourceVersion=0`) unless not `cached`. Every patch reads its
        node afresh."""
        if names is not None:
            wanted = list(dict.fromkeys(names))
            with ThreadPoolExecutor(max_workers=8) as pool:
                read = list(pool.map(self.node, wanted))
            return {name: node for name, node in zip(wanted, read, strict=True) if node}
        listing = self._call(
            "listing nodes",
            lambda: self.core.list_node(
                label_selector=label_selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
                **({"resource_version": "0"} if cached else {}),
            ),
        )
        return {n["metadata"]["name"]: n for n in listing.get("items") or []}

    def node(self, name: str) -> Node:
        """One node as it is now; empty if it does not exist."""
        return self._call(
            f"reading node {name}",
            lambda: self.core.read_node(name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT),
            missing_ok=True,
        )

    def pods(
        self,
        namespace: str | None = None,
        label_selector: str = "",
        node: str | None = None,
        *,
        cached: bool = False,
    ) -> list[Pod]:
        """Pods by namespace and label, or on one node (a field selector, any namespace).
        `cached`: from the API server's cache (`resourceVersion=0`), for a look that a fresh
        read confirms before anything changes."""
        field_selector = f"spec.nodeName={node}" if node else ""
        version = {"resource_version": "0"} if cached else {}
        if namespace:
            listing = self._call(
                f"listing pods in {namespace}",
                lambda: self.core.list_namespaced_pod(
                    namespace,
                    label_selector=label_selector,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                    **version,
                ),
            )
        else:
            listing = self._call(
                f"listing pods on node {node}",
                lambda: self.core.list_pod_for_all_namespaces(
                    label_selector=label_selector,
                    field_selector=field_selector,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                    **version,
                ),
            )
        return list(listing.get("items") or [])

    def hand_over(self, name: str, marks: Marks, stage: str) -> None:
        """An earlier version's resource leaving: marks.handover_patch, on the node as read."""
        self.patch_node(name, lambda node: handover_patch(node, marks, stage), "handing the marks over")

    def mark_node(self, name: str, stage: str, declared: Marks | None, owner: Owner) -> bool:
        """Bring one node to one stage's half of `declared` (marks.stage_patch). False if the node is gone.

        Each try reads the node afresh, so a value another writer put in a
        declared mark's slot meanwhile is refused, not overwritten.
        """
        return self.patch_node(
            name, _refusing_conflicts(lambda node: stage_patch(node, stage, declared, owner)), "patching"
        )

    def dry_run_marks(self, node: Node, declared: Marks | None, owner: Owner) -> None:
        """Send what `up` would do to `node` (marks.up_patches, on the node as read) as server-side
        dry runs: admission judges each, the server keeps nothing."""
        name = node["metadata"]["name"]

        def step(index: int) -> Callable[[Node], dict[str, Any] | None]:
            def patch(read: Node) -> dict[str, Any] | None:
                try:
                    patches = up_patches(read, declared, owner)
                except MarksConflict as conflict:
                    raise NodeMarksError(f"node {name}: {conflict}") from None
                return patches[index] if index < len(patches) else None

            return patch

        for index in range(2):
            self.patch_node(name, step(index), "patching (dry run)", dry_run=True, first_read=node)

    def patch_node(
        self,
        name: str,
        make_patch: Callable[[Node], dict[str, Any] | None],
        doing: str,
        *,
        dry_run: bool = False,
        first_read: Node | None = None,
    ) -> bool:
        """Read the node, write `make_patch`'s merge patch on the `resourceVersion` read, and start
        again on a conflict. False if the node is gone. `dry_run`: admitted and discarded;
        `first_read`: the node as just read, for the first try."""
        for attempt in range(CONFLICT_RETRIES):
            node = first_read if attempt == 0 and first_read else self.node(name)
            if not node:
                return False
            patch = make_patch(node)
            if patch is None:
                return True
            try:
                self.core.patch_node(
                    name,
                    patch,
                    field_manager=FIELD_MANAGER,
                    **({"dry_run": "All"} if dry_run else {}),
                    _content_type="application/merge-patch+json",
                    _request_timeout=REQUEST_TIMEOUT,
                )
                return True
            except kubernetes.client.ApiException as error:
                if error.status != 409:
                    raise api_error(error, f"{doing} node {name}") from None
            except urllib3.exceptions.HTTPError as error:
                raise unreachable(error, f"{doing} node {name}") from None
        raise NodeMarksError(
            f"node {name}: still conflicting with other writers after {CONFLICT_RETRIES} tries"
        )


def _refusing_conflicts(
    make_patch: Callable[[Node], dict[str, Any] | None],
) -> Callable[[Node], dict[str, Any] | None]:
    """A patch maker whose conflict with another writer's mark is the operator's error."""

    def patch(node: Node) -> dict[str, Any] | None:
        try:
            return make_patch(node)
        except MarksConflict as conflict:
            raise NodeMarksError(f"{conflict}. Nothing more was changed.") from None

    return patch


GatewaySelector = Mapping[str, str]  # {"namespace": ..., "labelSelector": ...}


def is_gateway_pod(selectors: Sequence[GatewaySelector]) -> Callable[[Pod], bool]:
    def check(pod: Pod) -> bool:
        metadata = pod.get("metadata", {})
        return any(
            metadata.get("namespace") == s["namespace"]
            and matches(s["labelSelector"], metadata.get("labels") or {})
            for s in selectors
        )

    return check


def other_owners_evicted(
    cluster: Cluster, selectors: Sequence[GatewaySelector], tainting: Tainting, *, cached: bool = False
) -> list[Blocker]:
    """Pods not of the gateway, on nodes about to get a NoExecute taint, that it would evict.
    `cached`: read from the API server's cache, for a first look or a preview."""
    pods = [
        pod
        for node in tainting.adds
        if tainting.evicting(node)
        for pod in cluster.pods(node=node, cached=cached)
    ]
    return others_evicted(pods, is_gateway_pod(selectors), tainting)


def evictions_refused(blockers: Sequence[Blocker], allowed: EvictionsAllowed) -> str:
    """What a NoExecute taint would evict that the config does not allow, and what to do; "" if none.

    A DaemonSet's pods are named apart, as `kubectl drain` does: evicted, they
    stay off the node (their controller respects the taint), which is another
    decision than moving a Deployment's pod.
    """
    refused = [b for b in blockers if not allowed.allows(b)]
    sentences = []
    others = [str(b) for b in refused if not b.daemon_set]
    if others:
        sentences.append(
            f"It would evict pods the stack does not own: {'; '.join(others)}. Give those pods the"
            " toleration, move them off the gateway's nodes, or set ecsCapacity.evictOtherPods: true"
            " to let the taint evict them."
        )
    daemons = [b for b in refused if b.daemon_set]
    if daemons:
        sets = ", ".join(sorted({b.daemon_set or "" for b in daemons}))
        sentences.append(
            "It would evict DaemonSet pods, which would then stay off these nodes:"
            f" {'; '.join(str(b) for b in daemons)}. Add the toleration to {sets} (its pods keep"
            " running there), or set ecsCapacity.evictDaemonSetPods: true to let the taint keep them"
            " off the gateway's nodes (evictOtherPods does not cover DaemonSets' pods)."
        )
    return " ".join(sentences)


def refuse_evicting_others(
    blockers: Sequence[Blocker], allowed: EvictionsAllowed, *, first: bool = True
) -> None:
    """Stop before a NoExecute taint that would evict pods the config does not let it evict.
    `first`: before any node was tainted (else the caller says which were)."""
    refused = evictions_refused(blockers, allowed)
    if refused:
        done = " Nothing was tainted." if first else ""
        raise NodeMarksError(f"a NoExecute taint the stack is about to add was not added.{done} {refused}")


def wait_for_rollout(
    cluster: Cluster,
    selectors: Sequence[GatewaySelector],
    tainting: Tainting,
    *,
    timeout: float,
    allowed: EvictionsAllowed,
    cancelled: threading.Event,
    log: Callable[[str], None],
) -> None:
    """Tolerate before taint, once for all nodes: return when the taints may go on.

    Refuses at once if a NoExecute taint would evict another owner's pod (unless
    allowed). Then waits until no gateway pod is in the way (`gateway_blockers`),
    for at most `timeout` seconds in all, however many nodes there are.
    """
    if not tainting:
        return
    if not allowed.every_pod:
        # A first look from the cache; what it would refuse is read again, fresh, before it does.
        first_look = other_owners_evicted(cluster, selectors, tainting, cached=True)
        if evictions_refused(first_look, allowed):
            refuse_evicting_others(other_owners_evicted(cluster, selectors, tainting), allowed)
    deadline = time.monotonic() + timeout
    while True:
        pods = [pod for s in selectors for pod in cluster.pods(s["namespace"], s["labelSelector"])]
        if not pods and selectors:
            log(
                "no pod carries the gateway's label "
                + ", ".join(f"{s['labelSelector']} (in {s['namespace']})" for s in selectors)
                + ": nothing to wait for. If the gateway runs, its pods lack the label the stack gives"
                " them (podLabels), and the taints go on without knowing where they are."
            )
        blockers = gateway_blockers(pods, tainting)
        if not blockers:
            break
        if time.monotonic() >= deadline:
            raise NodeMarksError(rollout_timed_out(blockers, selectors, timeout))
        if cancelled.wait(POLL_SECONDS):
            raise NodeMarksError("cancelled while waiting for the gateway's rollout; nothing was tainted")
    if not allowed.every_pod:
        # Pods may have arrived on the nodes during the wait.
        refuse_evicting_others(other_owners_evicted(cluster, selectors, tainting), allowed)


def rollout_timed_out(
    blockers: Sequence[Blocker], selectors: Sequence[GatewaySelector], timeout: float
) -> str:
    shown = "; ".join(str(b) for b in blockers[:10])
    more = f" and {len(blockers) - 10} more" if len(blockers) > 10 else ""
    where = ", ".join(
        f"kubectl -n {s['namespace']} get pods -l {s['labelSelector']} -o wide" for s in selectors
    )
    taints = sorted({show(t) for b in blockers for t in b.taints})
    return (
        f"after {timeout:.0f}s (rolloutTimeoutSeconds) gateway pods are still in the way of"
        f" {', '.join(taints)}: {shown}{more}. Nothing was tainted and nothing evicted. These pods"
        " must be replaced by the mesh's rollout of the updated IstioGateway (or, under eci-only, move off"
        f" the tainted nodes) before the taint can go on: see `{where}`. If the rollout is progressing,"
        " run `pulumi up` again or raise rolloutTimeoutSeconds; if it is stuck, look at the gateway's"
        " Deployment (`kubectl rollout status`) and the mesh's events."
    )
