"""Pulumi mocks at the provider boundary, with the real project name and stacks.

`run_stack` runs the real program (config parsing, components, rules) against
Pulumi's mock monitor: nothing reaches Alibaba Cloud or Kubernetes. Every
registration is recorded with its parent, provider and options so that tests
can assert on what the stack declares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

import stack_config
from components.stack import ServerlessGateway

ROOT = Path(__file__).resolve().parent.parent

PROJECT = stack_config.PROJECT
STACK_FILES = sorted((ROOT / "stacks").glob("Pulumi.*.yaml"))
STACK_NAMES = [path.name.split(".")[1] for path in STACK_FILES]

# What an operator sets with `pulumi config set --secret`; never committed.
TEST_KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n# test-only\n"


# Valid configs that, between them, set every key a user can set (one per mode where modes differ).
EVERY_KEY: list[dict[str, Any]] = [
    {
        "clusterId": "c-1",
        "region": "cn-hangzhou",
        "clusterKubeconfig": TEST_KUBECONFIG,
        "meshKubeconfig": TEST_KUBECONFIG,
        "renderYamlTo": "rendered",
        "placementPolicy": "prefer-ecs",
        "preferredWeight": 80,
        "overflowWeight": 20,
        "protect": True,
        "rolloutTimeoutSeconds": 600,
        "ackResourcePolicy": True,
        "ecsCapacity": {
            "mode": "nodePool",
            "labels": {"a": "b"},
            "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}],
            "evictOtherPods": False,
            "nodePool": {
                "name": "p",
                "instanceTypes": ["ecs.g7.xlarge"],
                "vswitchIds": ["vsw-1"],
                "autoscaling": {"minSize": 1, "maxSize": 3},
                "systemDisk": {"category": "cloud_essd", "size": 120},
                "securityGroupIds": ["sg-1"],
            },
        },
        "virtualNodes": {
            "mode": "addon",
            "eciVswitchIds": ["vsw-2"],
            "eciSecurityGroupId": "sg-2",
            "addonVersion": "v1",
            "addonConfig": {},
        },
        "mesh": {
            "mode": "create",
            "name": "m",
            "edition": "Pro",
            "version": "1.22",
            "vpcId": "v",
            "vswitchId": "s",
        },
        "gateways": [
            {
                "name": "g",
                "namespace": "istio-system",
                "replicaCount": 2,
                "autoscaleEnabled": True,
                "minReplicas": 2,
                "maxReplicas": 5,
                "targetCpuUtilization": 80,
                "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "HTTP"}],
                "serviceType": "LoadBalancer",
                "serviceAnnotations": {},
                "podAnnotations": {},
                "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}},
                "clusterOverrides": {
                    "c-2": {
                        "replicaCount": 3,
                        "minReplicas": 3,
                        "maxReplicas": 9,
                        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "3"}},
                    }
                },
                "minAvailable": "50%",
                "podDisruptionBudget": True,
                "adopt": False,
                "extraSpec": {},
            }
        ],
        "rebalancer": {
            "enabled": True,
            "intervalSeconds": 60,
            "maxEvictionsPerRun": 2,
            "namespace": "asm-gateway-rebalancer",
            "image": "registry.k8s.io/descheduler/descheduler:v0.36.0",
        },
        "clusters": [
            {
                "clusterId": "c-2",
                "clusterKubeconfig": TEST_KUBECONFIG,
                "ecsCapacity": {"mode": "existingNodes", "nodes": ["n-2"]},
                "virtualNodes": {"mode": "existing"},
                "retiring": False,
            }
        ],
    },
    {
        "clusterId": "c-1",
        "renderYamlTo": "r",
        "ecsCapacity": {
            "mode": "existingNodes",
            "labels": {"a": "b"},
            "nodes": ["n"],
            "evictOtherPods": True,
            "evictDaemonSetPods": True,
            "instanceType": "ecs.g7.xlarge",
        },
        "gateways": [{"maxUnavailable": "25%"}],
    },
    {
        "clusterId": "c-1",
        "region": "cn-hangzhou",
        "clusterKubeconfig": TEST_KUBECONFIG,
        "renderYamlTo": "r",
        "ecsCapacity": {"mode": "existingNodePool", "nodePoolId": "np-1a", "labels": {"a": "b"}},
    },
]


@dataclass
class Registered:
    type: str
    name: str
    urn: str
    parent: str
    provider: str
    custom: bool
    protect: bool
    inputs: dict[str, Any]
    ignore_changes: list[str]
    additional_secret_outputs: list[str]
    import_id: str = ""  # what it imports, or reads (`read`)
    retain_on_delete: bool = False
    read: bool = False  # a `.get()` of something that exists, not a resource of the stack's
    dependencies: list[str] = field(default_factory=list)
    # Parent URNs this resource was once under (`Alias(parent=...)`).
    alias_parents: list[str] = field(default_factory=list)


@dataclass
class Deployment:
    stack: str
    resources: list[Registered]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)


NODE_POOL_TYPE = "alicloud:cs/nodePool:NodePool"


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers every registration as the cloud would, with ids and echoed inputs.

    `cloud` holds what exists before the stack, by provider id: a read (`.get`)
    or an import of one of them answers with its state, of anything else fails
    as the provider does for a missing resource.
    """

    def __init__(self, cloud: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.cloud = dict(cloud or {})

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.resource_id:
            if args.resource_id not in self.cloud:
                raise LookupError(f"{args.typ} {args.resource_id} does not exist")
            existing = dict(self.cloud[args.resource_id])
            # An import then applies the program's inputs, as `up` does after importing.
            return args.resource_id, {**existing, **args.inputs} if args.inputs else existing
        outputs = dict(args.inputs)
        if args.typ == "alicloud:servicemesh/serviceMesh:ServiceMesh":
            outputs["kubeconfig"] = TEST_KUBECONFIG
        if args.typ == "pulumi:index:Stash":
            # The engine's builtin: `output` keeps the first input (one run is a first run here).
            outputs["output"] = outputs["input"]
        return (f"{args.name}-id" if args.custom else None), outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


class RecordingMonitor(pulumi.runtime.mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks, registered: list[Registered] | None = None) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = [] if registered is None else registered

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        response = super().ReadResource(request)  # type: ignore[no-untyped-call]
        self.registered.append(
            Registered(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent=request.parent,
                provider=request.provider,
                custom=True,
                protect=False,
                inputs={},
                ignore_changes=[],
                additional_secret_outputs=[],
                import_id=request.id,
                read=True,
            )
        )
        return response

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append(
                Registered(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    provider=request.provider,
                    custom=request.custom,
                    protect=bool(request.protect),
                    inputs=pulumi.runtime.rpc.deserialize_properties(request.object, keep_unknowns=True),
                    ignore_changes=list(request.ignoreChanges),
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    import_id=request.importId,
                    retain_on_delete=bool(request.retainOnDelete),
                    dependencies=list(request.dependencies),
                    alias_parents=[a.spec.parentUrn for a in request.aliases if a.spec.parentUrn],
                )
            )
        return response


def config_values_of(stack_file: Path) -> tuple[dict[str, Any], list[str]]:
    """A stack file's project config, with each `secure:` value replaced by a test secret."""
    raw = yaml.safe_load(stack_file.read_text()).get("config", {})
    values: dict[str, Any] = {}
    secrets: list[str] = []
    for key, value in raw.items():
        namespace, _, name = key.partition(":")
        if namespace != PROJECT:
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            values[name] = TEST_KUBECONFIG
            secrets.append(name)
        else:
            values[name] = value
    return values, secrets


def as_stack_file(values: Mapping[str, Any], secrets: Iterable[str]) -> dict[str, Any]:
    """Config values as a stack file holds them: each secret as `{secure: ...}`, a listed
    cluster's kubeconfig (set with --path) in its place."""

    def secured(key: str, value: Any) -> Any:
        if key == "clusters" and isinstance(value, list):
            return [
                {**c, "clusterKubeconfig": {"secure": "v1:x"}} if "clusterKubeconfig" in c else c
                for c in value
            ]
        return {"secure": "v1:x"}

    return {key: secured(key, value) if key in secrets else value for key, value in values.items()}


def set_path(config: dict[str, Any], path: str, value: Any) -> None:
    """Set `config` at a key path like `gateways[0].ports` (`...` removes the key)."""
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    target: Any = config
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    key: Any = int(last) if isinstance(target, list) else last
    if value is ...:
        del target[key]
    else:
        target[key] = value


def operator_secrets(values: Mapping[str, Any]) -> dict[str, str]:
    """The secrets an operator adds to a stack before its first preview."""
    mesh = values.get("mesh") or {}
    extra = {}
    if (
        isinstance(mesh, dict)
        and mesh.get("mode", "existing") == "existing"
        and not values.get("renderYamlTo")
    ):
        extra["meshKubeconfig"] = TEST_KUBECONFIG
    virtual = values.get("virtualNodes") or {}
    if isinstance(virtual, dict) and virtual.get("eciVswitchIds") and not values.get("renderYamlTo"):
        # The ECI network goes into the cluster's eci-profile.
        extra["clusterKubeconfig"] = TEST_KUBECONFIG
    return extra


def _engine_form(value: Any) -> str:
    """Config as the engine hands it to a program: scalars as text, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def run_stack(
    stack: str,
    values: Mapping[str, Any],
    secrets: Iterable[str] = (),
    *,
    preview: bool = False,
    program: Callable[[], ServerlessGateway | None] | None = None,
    alicloud: Mapping[str, str] | None = None,
    registered: list[Registered] | None = None,
    cloud: Mapping[str, Mapping[str, Any]] | None = None,
) -> Deployment:
    """Run the program for `stack` with `values` as its config, under mocks.

    `program` defaults to what __main__.py does: load the config, build the stack.
    """
    mocks = RecordingMocks(cloud)
    # `registered`, if given, sees every registration even when the program raises.
    monitor = RecordingMonitor(mocks, registered)
    # Each run is its own stack: a fresh root Stack resource, not the last run's.
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    # `alicloud` holds provider credentials, set with --secret as they must be.
    pulumi.runtime.set_all_config(
        {
            **{f"{PROJECT}:{k}": _engine_form(v) for k, v in values.items()},
            **{f"alicloud:{k}": v for k, v in (alicloud or {}).items()},
        },
        [f"{PROJECT}:{k}" for k in secrets] + [f"alicloud:{k}" for k in alicloud or {}],
    )
    deployment = Deployment(stack, monitor.registered)

    def build_as_main_does() -> ServerlessGateway:
        config = stack_config.load()
        return ServerlessGateway(
            "asm-gateway", config.gateway, stack_config.provider_options(config, "asm-gateway")
        )

    build = program or build_as_main_does

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def run() -> pulumi.Output[Any] | None:
        component = build()
        if component is None:
            return None
        return pulumi.Output.all(
            gateways=component.gateways,
            node_pool_id=component.node_pool_id,
            node_names=component.node_names,
            virtual_node_mode=component.virtual_node_mode,
            mesh_id=component.mesh_id,
            pool_marks_before=component.pool_marks_before,
        ).apply(deployment.outputs.update)

    run()
    return deployment


def run_stack_file(stack: str, overrides: Mapping[str, Any] | None = None) -> Deployment:
    """Run a stack from `stacks/`, as an operator would after setting its secrets.

    Overrides of the kubeconfig keys count as secrets, as `--secret` makes them.
    """
    values, secrets = config_values_of(ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    values.update(overrides or {})
    secrets += [k for k in overrides or {} if k in stack_config.SECRET_KEYS]
    extra = operator_secrets(values)
    values.update(extra)
    return run_stack(stack, values, [*secrets, *extra])
