"""The preflight: asks each API the stack talks to whether it has what `needs` derives.

Each check is a row (passed, failed, or not run and why). The first failure
of a kind does not hide the others: every row is reported, so one run tells
the operator everything to fix. Nothing here writes: an access review asks the
API server's authorizer, it does not try the verb; the node marks are sent as
server-side dry runs, which admission judges and the server then discards.
"""

from __future__ import annotations

import json
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any

import kubernetes
import urllib3

from components.scheduling import VIRTUAL_NODE_LABELS, VIRTUAL_NODE_TAINT
from node_marks_plugin.cluster import (
    NO_DRY_RUN,
    RBAC,
    REQUEST_TIMEOUT,
    ApiRefusalError,
    Cluster,
    NodeMarksError,
    api_client,
    api_error,
    unreachable,
)
from node_marks_plugin.marks import Marks, Node, Owner
from preflight.needs import Access, ApiNeeds, ObjectRef, ServedKind

# A kubeconfig with `insecure-skip-tls-verify` chose it; one warning per request
# would bury the rows, so the reach row says it once instead.
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)


class Result(StrEnum):
    PASSED = "ok"
    FAILED = "FAILED"
    NOT_RUN = "not run"


@dataclass(frozen=True)
class Row:
    api: str  # "cluster" or "mesh"
    check: str
    result: Result
    detail: str = ""


def carries(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether an object, as the API returns it, carries every one of `labels`."""
    own = (obj.get("metadata") or {}).get("labels") or {}
    return all(own.get(k) == v for k, v in labels.items())


def get(client: kubernetes.client.ApiClient, path: str, timeout: tuple[int, int] = REQUEST_TIMEOUT) -> Any:
    """GET one API path as plain data (discovery documents and objects alike)."""
    request = client.param_serialize("GET", path, auth_settings=["BearerToken"])
    response = client.call_api(*request, _request_timeout=timeout)
    body = response.read()
    if not 200 <= response.status <= 299:
        raise kubernetes.client.ApiException.from_response(http_resp=response, body=body.decode(), data=None)
    return json.loads(body)


class NodeReads:
    """The nodes a preview looks at, each read once and shared by the rows, the adoption check
    and the forecast: by label selector or by name, never the whole cluster's list (on a
    5,000-node cluster that is tens of MiB to parse). Lists ask for `resourceVersion=0`, served
    from the API server's cache: they inform, and every write reads its node afresh."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.client = client
        self._selected: dict[str, list[Node]] = {}
        self._named: dict[str, Node | None] = {}

    def selected(self, labels: Mapping[str, str], timeout: tuple[int, int] = REQUEST_TIMEOUT) -> list[Node]:
        """The nodes that carry every one of `labels` (none asked for: none, not every node)."""
        if not labels:
            return []
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        if selector not in self._selected:
            query = urllib.parse.urlencode({"resourceVersion": "0", "labelSelector": selector})
            self._selected[selector] = get(self.client, f"/api/v1/nodes?{query}", timeout).get("items") or []
        return self._selected[selector]

    def named(self, names: Iterable[str], timeout: tuple[int, int] = REQUEST_TIMEOUT) -> dict[str, Node]:
        """The named nodes that exist, by name, each read as it is now (a few nodes' cost)."""
        names = list(names)

        def read(name: str) -> Node | None:
            try:
                node: Node = get(self.client, f"/api/v1/nodes/{urllib.parse.quote(name)}", timeout)
            except kubernetes.client.ApiException as error:
                if error.status != 404:
                    raise
                return None
            return node

        unread = [n for n in dict.fromkeys(names) if n not in self._named]
        with ThreadPoolExecutor(max_workers=8) as pool:
            self._named.update(zip(unread, pool.map(read, unread), strict=True))
        return {name: node for name in names if (node := self._named[name]) is not None}


def _reach(client: kubernetes.client.ApiClient, needs: ApiNeeds) -> Row:
    server = client.configuration.host
    try:
        version = get(client, "/version")
    except ValueError:
        return Row(
            needs.api, "reaches the API", Result.FAILED, f"{server}/version did not answer as an API server"
        )
    except kubernetes.client.ApiException as error:
        return Row(
            needs.api, "reaches the API", Result.FAILED, str(api_error(error, f"GET {server}/version"))
        )
    except (urllib3.exceptions.HTTPError, OSError) as error:
        return Row(needs.api, "reaches the API", Result.FAILED, str(unreachable(error, f"GET {server}")))
    return Row(
        needs.api,
        "reaches the API",
        Result.PASSED,
        f"{server}, Kubernetes {version.get('gitVersion')}, as {_identity(client)}"
        + ("" if client.configuration.verify_ssl else " (TLS not verified: insecure-skip-tls-verify)"),
    )


def _identity(client: kubernetes.client.ApiClient) -> str:
    """Who the API server takes the kubeconfig's credentials for: the subject to grant roles to."""
    try:
        review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            _request_timeout=REQUEST_TIMEOUT,
        )
    except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError):
        return "an identity the server does not say"
    return f"user {review.status.user_info.username}"


def _review(client: kubernetes.client.ApiClient, api: str, access: Access) -> Row:
    attributes = {"verb": access.verb, "resource": access.resource, "group": access.group}
    if access.namespace:
        attributes["namespace"] = access.namespace
    if access.name:
        attributes["name"] = access.name
    check = f"may {access.describe()}"
    try:
        review = kubernetes.client.AuthorizationV1Api(client).create_self_subject_access_review(
            {"spec": {"resourceAttributes": attributes}}, _request_timeout=REQUEST_TIMEOUT
        )
    except kubernetes.client.ApiException as error:
        return Row(api, check, Result.FAILED, str(api_error(error, "asking the API server")))
    if review.status.allowed:
        return Row(api, check, Result.PASSED, access.why)
    reason = f" ({review.status.reason})" if review.status.reason else ""
    return Row(api, check, Result.FAILED, f"denied{reason}; needed for {access.why}")


def _node_rows(
    client: kubernetes.client.ApiClient, needs: ApiNeeds, seen: dict[str, Any], owner: Owner | None
) -> list[Row]:
    checks = []
    if needs.nodes:
        checks.append("the named nodes exist")
    if needs.virtual_nodes:
        checks.append("virtual nodes exist")
    if not checks:
        return []
    reads: NodeReads = seen["node_reads"]
    try:
        named = reads.named(needs.nodes)
        virtual = reads.selected(VIRTUAL_NODE_LABELS) if needs.virtual_nodes else []
    except kubernetes.client.ApiException as error:
        if error.status == 403:
            # The `may get nodes` and `may list nodes` rows say what is missing; these wait on them.
            return [
                Row(needs.api, check, Result.NOT_RUN, "the identity may not read nodes") for check in checks
            ]
        detail = str(api_error(error, "reading nodes"))
        return [Row(needs.api, check, Result.FAILED, detail) for check in checks]
    rows = []
    if needs.nodes:
        missing = [n for n in needs.nodes if n not in named]
        rows.append(
            Row(
                needs.api, checks[0], Result.FAILED, "missing: " + ", ".join(missing) + " (ecsCapacity.nodes)"
            )
            if missing
            else Row(needs.api, checks[0], Result.PASSED, ", ".join(needs.nodes))
        )
        if needs.node_marks is not None and owner is not None and not missing:
            rows.append(_marks_admitted_row(client, needs, reads, Marks(*needs.node_marks), owner))
    if needs.virtual_nodes:
        rows.append(_virtual_node_row(needs.api, virtual))
    return rows


MARKS_ADMITTED = "admits the node marks (dry run)"


def _marks_admitted_row(
    client: kubernetes.client.ApiClient,
    needs: ApiNeeds,
    reads: NodeReads,
    marks: Marks,
    owner: Owner,
) -> Row:
    """What `up` would write to each named node, and to each node that left the list and still
    carries the stack's record, sent as server-side dry runs (marks.up_patches): a
    ValidatingAdmissionPolicy, webhook or admission plugin that would refuse `up` half-way
    refuses here first. Nodes with nothing to change send nothing."""
    cluster = Cluster(client)
    named = reads.named(needs.nodes)
    try:
        labelled = reads.selected(marks.labels)
    except kubernetes.client.ApiException:  # the `may list nodes` row says why
        labelled = []
    leaving = [
        n
        for n in labelled
        if n["metadata"]["name"] not in named
        and {owner.key, owner.legacy_key} & set(n["metadata"].get("annotations") or {})
    ]
    work: list[tuple[Node, Marks | None]] = [
        *((named[n], marks) for n in needs.nodes),
        *((n, None) for n in leaving),
    ]
    refused: list[str] = []
    not_run = ""
    for node, declared in work:
        try:
            cluster.dry_run_marks(node, declared, owner)
        except ApiRefusalError as error:
            if error.refused_by == RBAC:  # the `may patch nodes` row says so
                not_run = "the identity may not patch nodes"
            elif error.refused_by == NO_DRY_RUN:
                not_run = str(error)
            else:
                refused.append(str(error))
        except NodeMarksError as error:  # a mark another writer holds, refused before any request
            refused.append(str(error))
    if refused:
        also = f" (and not tried everywhere: {not_run})" if not_run else ""
        return Row(needs.api, MARKS_ADMITTED, Result.FAILED, "; ".join(refused) + also)
    if not_run:
        return Row(needs.api, MARKS_ADMITTED, Result.NOT_RUN, not_run)
    left = f", and {len(leaving)} that left the list" if leaving else ""
    passed = f"{len(needs.nodes)} node(s){left}, as `up` would patch them"
    return Row(needs.api, MARKS_ADMITTED, Result.PASSED, passed)


def _virtual_node_row(api: str, nodes: Iterable[Node]) -> Row:
    """`nodes`: those with the virtual nodes' labels."""
    check = "virtual nodes exist"
    label = ",".join(f"{k}={v}" for k, v in VIRTUAL_NODE_LABELS.items())
    virtual = list(nodes)
    if not virtual:
        return Row(
            api,
            check,
            Result.FAILED,
            f"no node has {label} (virtualNodes.mode: existing); install ack-virtual-node, or set"
            " virtualNodes.mode: addon to have the stack install it",
        )
    taint = VIRTUAL_NODE_TAINT.as_node_taint()
    untainted = [
        n["metadata"]["name"] for n in virtual if taint not in (n.get("spec", {}).get("taints") or [])
    ]
    if untainted:
        return Row(
            api,
            check,
            Result.FAILED,
            f"{', '.join(untainted)} lack the taint {taint['key']}={taint['value']}:{taint['effect']}"
            " that the gateway's toleration is for",
        )
    return Row(api, check, Result.PASSED, f"{len(virtual)} with {label} and their taint")


def _kind_row(client: kubernetes.client.ApiClient, api: str, kind: ServedKind) -> Row:
    check = f"serves {kind.kind} ({kind.api_version})"
    try:
        resources = get(client, f"/apis/{kind.api_version}").get("resources") or []
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return Row(api, check, Result.FAILED, "not served: its CRD is not installed here")
        return Row(api, check, Result.FAILED, str(api_error(error, "reading the API's discovery")))
    if any(r.get("name") == kind.plural for r in resources):
        return Row(api, check, Result.PASSED)
    return Row(api, check, Result.FAILED, f"{kind.api_version} is served, without {kind.plural}")


def _object_row(client: kubernetes.client.ApiClient, api: str, ref: ObjectRef) -> Row:
    check = f"{ref.describe} exists"
    try:
        get(client, ref.path)
    except kubernetes.client.ApiException as error:
        if error.status == 404 and ref.unless:
            return Row(api, check, Result.NOT_RUN, f"not yet: {ref.unless}")
        if error.status == 404:
            return Row(api, check, Result.FAILED, f"missing: {ref.missing}")
        if error.status == 403:
            return Row(api, check, Result.NOT_RUN, f"the identity may not get {ref.resource}/{ref.name}")
        return Row(api, check, Result.FAILED, str(api_error(error, f"reading {ref.resource}")))
    return Row(api, check, Result.PASSED)


def _admin_made(namespace: str) -> ObjectRef:
    """The rebalancer's namespace, as a row: an admin makes it once."""
    return ObjectRef(
        "",
        "namespaces",
        namespace,
        missing="the rebalancer's own, made once by an admin (the generated cluster-rbac.yaml holds it,"
        " Pod Security restricted), or set rebalancer.enabled: false",
    )


def _as_row(api: str, call: Callable[[], Row | list[Row]]) -> Row | list[Row]:
    """A check that the network or a proxy cut short is a failed row, not a traceback."""
    try:
        return call()
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        return Row(api, "asks the API", Result.FAILED, str(unreachable(error, "a check")))


def api_rows(
    needs: ApiNeeds, kubeconfig: str, seen: dict[str, Any] | None = None, owner: Owner | None = None
) -> list[Row]:
    """Every row for one API, reached through `kubeconfig`. What it read that others need
    (the node list) goes into `seen`. With the stack's `owner`, the node marks it declares are
    dry-run as that stack's."""
    seen = {} if seen is None else seen
    try:
        client = api_client(kubeconfig, needs.config_key)
    except NodeMarksError as error:
        return [Row(needs.api, "reads the kubeconfig", Result.FAILED, str(error))]
    seen["client"] = client  # the forecast reads through it too: the kubeconfig is read once
    seen["node_reads"] = NodeReads(client)
    reach = _reach(client, needs)
    if reach.result is not Result.PASSED:
        return [reach]
    settings = client.configuration
    if "as user system:anonymous" in reach.detail or not (settings.api_key or settings.cert_file):
        # The client sent no credentials (an exec plugin that failed logs and carries on):
        # every access row would fail and point at RBAC, which is not the problem.
        return [
            Row(
                needs.api,
                "reaches the API",
                Result.FAILED,
                f"the API took {needs.config_key} for system:anonymous: its credentials were not sent"
                " (an exec plugin that is not installed or failed?)",
            )
        ]
    calls: list[Callable[[], Row | list[Row]]] = [
        *(partial(_review, client, needs.api, a) for a in needs.access),
        partial(_node_rows, client, needs, seen, owner),
        *(partial(_kind_row, client, needs.api, k) for k in needs.kinds),
        *(partial(_object_row, client, needs.api, o) for o in needs.objects),
        *(partial(_object_row, client, needs.api, _admin_made(n)) for n in needs.namespaces),
    ]
    # The API server answers each review alone; a distant cluster is many round trips.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda call: _as_row(needs.api, call), calls))
    rows = [reach]
    for result in results:
        rows += result if isinstance(result, list) else [result]
    return rows


def stack_rows(
    needs: Sequence[ApiNeeds],
    kubeconfigs: dict[str, str],
    seen: dict[str, dict[str, Any]] | None = None,
    owner: Owner | None = None,
) -> list[Row]:
    """Rows for every API the stack talks to; one without a kubeconfig is not run, and says why.
    What was read of each API goes into `seen[api]`."""
    rows: list[Row] = []
    for api in needs:
        kubeconfig = kubeconfigs.get(api.config_key)
        if kubeconfig is None:
            rows.append(Row(api.api, "reaches the API", Result.NOT_RUN, f"{api.config_key} is not set"))
        else:
            rows += api_rows(api, kubeconfig, None if seen is None else seen.setdefault(api.api, {}), owner)
    return rows


def stack_owner(stack: str, project: str) -> Owner:
    """The stack as the node marks' records name it: its URN's project and short name, as the
    node-marks provider reads them (a fully qualified `org/project/stack` is its last part)."""
    return Owner(project, stack.rsplit("/", 1)[-1])


def table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table."""
    width = max((len(r.check) for r in rows), default=0)
    api_width = max((len(r.api) for r in rows), default=0)
    return "\n".join(
        f"{r.api:{api_width}} {r.result.value:8} {r.check:{width}}  {r.detail}".rstrip() for r in rows
    )


def failed(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if r.result is Result.FAILED]
