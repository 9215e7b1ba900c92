"""The permissions a stack needs, as documents to grant: Kubernetes RBAC and a RAM policy.

Generated from `needs` (and, for the cloud, from the resources the stack
declares), never written by hand, so that they cannot drift from the stack.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from components.rebalancer import rebalancer_namespace
from components.stack import ServerlessGatewayArgs
from preflight.needs import Access, ApiNeeds

MANAGED_BY = {"app.kubernetes.io/managed-by": "asm-serverless-gateway"}


class SubjectError(ValueError):
    """A `--subject` that is not `user:NAME`, `group:NAME` or `serviceaccount:NAMESPACE/NAME`."""


@dataclass(frozen=True)
class Subject:
    """Who the generated roles are bound to: the identity in the stack's kubeconfig."""

    kind: str  # User | Group | ServiceAccount
    name: str
    namespace: str = ""  # ServiceAccount only

    @classmethod
    def parse(cls, text: str) -> Subject:
        kind, _, name = text.partition(":")
        kinds = {"user": "User", "group": "Group", "serviceaccount": "ServiceAccount"}
        if kind.lower() not in kinds or not name:
            raise SubjectError(
                f"subject {text!r}: expected user:NAME, group:NAME or serviceaccount:NAMESPACE/NAME"
            )
        if kinds[kind.lower()] == "ServiceAccount":
            namespace, _, account = name.partition("/")
            if not namespace or not account:
                raise SubjectError(f"subject {text!r}: a service account is serviceaccount:NAMESPACE/NAME")
            return cls("ServiceAccount", account, namespace)
        return cls(kinds[kind.lower()], name)

    def as_rbac(self) -> dict[str, str]:
        if self.kind == "ServiceAccount":
            return {"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}
        return {"kind": self.kind, "name": self.name, "apiGroup": "rbac.authorization.k8s.io"}


# ACK maps a RAM user or role to a Kubernetes user named by its ID; replace this.
PLACEHOLDER_SUBJECT = Subject("User", "REPLACE-WITH-THE-RAM-USER-OR-ROLE-ID")


def _rules(access: Iterable[Access]) -> list[dict[str, Any]]:
    """RBAC rules: one per kind of object (and named object), its verbs sorted."""
    verbs: dict[tuple[str, str, str | None], set[str]] = defaultdict(set)
    for entry in access:
        verbs[(entry.group, entry.resource, entry.name)].add(entry.verb)
    rules = []
    for (group, resource, name), granted in sorted(verbs.items(), key=lambda item: str(item[0])):
        rule: dict[str, Any] = {"apiGroups": [group], "resources": [resource]}
        if name:
            rule["resourceNames"] = [name]
        rule["verbs"] = sorted(granted)
        rules.append(rule)
    return rules


def role_name(stack: str, api: str) -> str:
    """Per stack and API (the mesh's and the cluster's roles may share one API server), as a
    valid RBAC name: `org/Prod_EU` gives `asm-serverless-gateway-org-prod-eu-cluster`."""
    safe = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")
    return f"asm-serverless-gateway-{safe}-{api}"


def rbac_documents(needs: ApiNeeds, stack: str, subject: Subject) -> list[dict[str, Any]]:
    """A ClusterRole for what is cluster-wide, a Role per namespace for the rest, each bound."""
    name = role_name(stack, needs.api)
    metadata = {"name": name, "labels": MANAGED_BY}
    # First the namespaces an admin makes once, so that the Roles in them apply.
    documents: list[dict[str, Any]] = [rebalancer_namespace(namespace) for namespace in needs.namespaces]
    cluster_wide = [a for a in needs.access if a.namespace is None]
    if cluster_wide:
        documents += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": metadata,
                "rules": _rules(cluster_wide),
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [subject.as_rbac()],
            },
        ]
    for namespace in sorted({a.namespace for a in needs.access if a.namespace is not None}):
        namespaced = {**metadata, "namespace": namespace}
        documents += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": namespaced,
                "rules": _rules(a for a in needs.access if a.namespace == namespace),
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": namespaced,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [subject.as_rbac()],
            },
        ]
    return documents


def rbac_yaml(needs: ApiNeeds, stack: str, subject: Subject) -> str:
    """The documents as one file, headed by where they come from and what they grant."""
    header = [
        f"# What stack `{stack}` does to the {needs.api} API ({needs.config_key}), as RBAC.",
        f"# Generated by `scripts/preflight.sh permissions --stack {stack}`; do not edit.",
        "# Apply it as a cluster admin: kubectl apply -f <this file>",
    ]
    if subject == PLACEHOLDER_SUBJECT:
        header.append("# Replace the subject with the identity of the kubeconfig the stack uses.")
    for entry in needs.access:
        header.append(f"#   {entry.describe()}: {entry.why}")
    body = yaml.safe_dump_all(rbac_documents(needs, stack, subject), sort_keys=False)
    return "\n".join(header) + "\n" + body


# The OpenAPI actions that pulumi-alicloud 4.0 (terraform-provider-alicloud
# 1.288) calls for each resource the stack can declare, over create, read,
# update and delete; `DescribeTaskInfo` is how it waits for ACK's tasks.
NODE_POOL_ACTIONS = (
    "cs:CreateClusterNodePool",
    "cs:DescribeClusterNodePoolDetail",
    "cs:ModifyClusterNodePool",
    "cs:ModifyNodePoolNodeConfig",
    "cs:UpgradeClusterNodepool",
    "cs:DeleteClusterNodepool",
    "cs:DescribeClusterNodes",
    "cs:RemoveClusterNodes",
    "cs:DescribeTaskInfo",
)
# An adopted pool is read and its marks changed; the stack never creates, upgrades or deletes it.
ADOPTED_POOL_ACTIONS = (
    "cs:DescribeClusterNodePoolDetail",
    "cs:ModifyClusterNodePool",
    "cs:DescribeClusterNodes",
    "cs:DescribeTaskInfo",
)
ADDON_ACTIONS = (
    "cs:GetClusterAddonInstance",
    "cs:DescribeAddon",
    "cs:InstallClusterAddons",
    "cs:UpgradeClusterAddons",
    "cs:ModifyClusterAddon",
    "cs:DescribeClusterAddonsUpgradeStatus",
    "cs:UnInstallClusterAddons",
    "cs:DescribeTaskInfo",
)
MESH_ACTIONS = (
    "servicemesh:CreateServiceMesh",
    "servicemesh:DescribeServiceMeshDetail",
    "servicemesh:DescribeServiceMeshKubeconfig",
    "servicemesh:DescribeKialiConfiguration",
    "servicemesh:AddClusterIntoServiceMesh",
    "servicemesh:RemoveClusterFromServiceMesh",
    "servicemesh:UpdateMeshFeature",
    "servicemesh:UpdateMeshCRAggregation",
    "servicemesh:UpgradeMeshEditionPartially",
    "servicemesh:UpdateControlPlaneLogConfig",
    "servicemesh:UpdateKialiConfiguration",
    "servicemesh:ModifyServiceMeshName",
    "servicemesh:ModifyPilotEipResource",
    "servicemesh:ListTagResources",
    "servicemesh:TagResources",
    "servicemesh:UntagResources",
    "servicemesh:DeleteServiceMesh",
)


def ram_policy(args: ServerlessGatewayArgs) -> dict[str, Any] | None:
    """The RAM policy for the cloud resources the stack declares; None when it declares none."""
    actions: set[str] = set()
    if any(c.ecs.mode == "nodePool" for c in args.clusters):
        actions.update(NODE_POOL_ACTIONS)
    if any(c.ecs.mode == "existingNodePool" for c in args.clusters):
        actions.update(ADOPTED_POOL_ACTIONS)
    if any(c.virtual_nodes.mode == "addon" for c in args.clusters):
        actions.update(ADDON_ACTIONS)
    if args.mesh.mode == "create":
        actions.update(MESH_ACTIONS)
    if not actions:
        return None
    return {"Version": "1", "Statement": [{"Effect": "Allow", "Action": sorted(actions), "Resource": "*"}]}
