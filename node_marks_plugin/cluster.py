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
    """The API server refused a request: by its status, and whether admission (not RBAC) did."""

    def __init__(self, message: str, status: int | None, by_admission: bool) -> None:
        super().__init__(message)
        self.status = status
        self.by_admission = by_admission


def api_error(error: kubernetes.client.ApiException, doing: str) -> ApiRefusalError:
    """An API error as one line: what was being done, the status, and the server's own message."""
    message = ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(error.body or "{}").get("message", "")
    hint = ""
    by_admission = admission_denied(error.status, message)
    if error.status == 401:
        hint = (
            "; the kubeconfig's credentials were refused (rotated or expired?): set the new one"
            " (`pulumi config set --secret clusterKubeconfig`) and run `pulumi up`; `destroy` uses the"
            " kubeconfig the last `up` saved"
        )
    elif by_admission:
        hint = (
            "; the cluster's admission control (a ValidatingAdmissionPolicy or a webhook) refused it, not"
            " RBAC: ask its owner to allow the stack's marks, or declare marks the policy allows"
        )
    elif error.status == 403:
        hint = (
            "; the kubeconfig's identity lacks this permission"
            " (`scripts/preflight.sh permissions --stack <stack>` writes the RBAC the stack needs)"
        )
    return ApiRefusalError(
        f"{doing}: {error.status} {error.reason}{': ' + message if message else ''}{hint}",
        error.status,
        by_admission,
    )


def admission_denied(status: int | None, message: str) -> bool:
    """Whether the API server's refusal came from admission rather than authorization.

    RBAC's 403 reads `User "..." cannot patch resource ...`; admission's names
    the policy or webhook that denied the request (403 from a policy, 400 or
    another code from a webhook).
    """
    if status == 403 and " cannot " in message and "resource" in message:
        return False
    words = ("ValidatingAdmissionPolicy", "admission webhook", "denied request", "denied the request")
    return status in (400, 403, 422, 500) and any(w in message for w in words)


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

    def nodes(self, names: Iterable[str] | None = None, label_selector: str = "") -> dict[str, Node]:
        """The named nodes that exist, each read by name (the cost of a few nodes, not of the
        cluster's); else those the selector matches (every node without one), in one list from
        the API server's cache (`resourceVersion=0`). Either way every patch reads its node afresh."""
        if names is not None:
            wanted = list(dict.fromkeys(names))
            with ThreadPoolExecutor(max_workers=8) as pool:
                read = list(pool.map(self.node, wanted))
            return {name: node for name, node in zip(wanted, read, strict=True) if node}
        listing = self._call(
            "listing nodes",
            lambda: self.core.list_node(
                label_selector=label_selector,
                resource_version="0",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
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
        self, namespace: str | None = None, label_selector: str = "", node: str | None = None
    ) -> list[Pod]:
        field_selector = f"spec.nodeName={node}" if node else ""
        if namespace:
            listing = self._call(
                f"listing pods in {namespace}",
                lambda: self.core.list_namespaced_pod(
                    namespace,
                    label_selector=label_selector,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
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
                ),
            )
        return list(listing.get("items") or [])

    def hand_over(self, name: str, marks: Marks, stage: str) -> None:
        """An earlier version's resource leaving: marks.handover_patch, on the node as read."""
        self.patch_node(name, lambda node: handover_patch(node, marks, stage), "handing the marks over")

    def mark_node(
        self, name: str, stage: str, declared: Marks | None, owner: Owner, *, dry_run: bool = False
    ) -> bool:
        """Bring one node to one stage's half of `declared` (marks.stage_patch). False if the node is gone.

        Each try reads the node afresh, so a value another writer put in a
        declared mark's slot meanwhile is refused, not overwritten. `dry_run`
        sends the same patch for the server to admit and discard (`preview`).
        """

        def patch(node: Node) -> dict[str, Any] | None:
            try:
                return stage_patch(node, stage, declared, owner)
            except MarksConflict as conflict:
                raise NodeMarksError(f"{conflict}. Nothing more was changed.") from None

        return self.patch_node(name, patch, "patching", dry_run=dry_run)

    def patch_node(
        self,
        name: str,
        make_patch: Callable[[Node], dict[str, Any] | None],
        doing: str,
        *,
        dry_run: bool = False,
    ) -> bool:
        """Read the node, write `make_patch`'s merge patch on the `resourceVersion` read, and start
        again on a conflict. False if the node is gone. `dry_run`: admitted and discarded."""
        for _ in range(CONFLICT_RETRIES):
            node = self.node(name)
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
    cluster: Cluster, selectors: Sequence[GatewaySelector], tainting: Tainting
) -> list[Blocker]:
    """Pods not of the gateway, on nodes about to get a NoExecute taint, that it would evict."""
    pods = [pod for node in tainting.adds if tainting.evicting(node) for pod in cluster.pods(node=node)]
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
            " off the gateway's nodes."
        )
    return " ".join(sentences)


def refuse_evicting_others(
    blockers: Sequence[Blocker], allowed: EvictionsAllowed, tainted: Sequence[str] = ()
) -> None:
    """Stop before a NoExecute taint that would evict pods the config does not let it evict.

    `tainted` names the nodes this run already tainted, so that the message says what changed.
    """
    refused = evictions_refused(blockers, allowed)
    if refused:
        done = (
            f"The taints went on {', '.join(tainted)} only; the other nodes were left as they were."
            if tainted
            else "Nothing was tainted."
        )
        raise NodeMarksError(f"a NoExecute taint the stack is about to add was not added. {done} {refused}")


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
