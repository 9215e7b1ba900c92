"""The node-marks provider plugin: a Pulumi resource provider served over gRPC.

Why a plugin of the project's own, and not a Pulumi dynamic provider (which
this replaced): the kubeconfig is provider configuration, given once and
stored once (a secret), and a rotated one reaches every later call, deletes
included; a refusal reaches the operator as one message, not a Python
traceback; and waits are not capped at four calls at once.

The engine starts it through `pulumi-resource-asm-node-marks` beside this file
(Pulumi.yaml's `plugins.providers` names that folder).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, empty_pb2, struct_pb2
from google.protobuf.json_format import MessageToDict
from google.rpc import status_pb2
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, plugin_pb2, provider_pb2, provider_pb2_grpc

from node_marks_plugin.cluster import Cluster, NodeMarksError, api_client
from node_marks_plugin.marks import Owner
from node_marks_plugin.resources import (
    TOLERATION_ROLLOUT,
    NodeMarksResource,
    PartlyAppliedError,
    TolerationRolloutResource,
    changed_keys,
)

VERSION = "1.0.0"
# Pulumi's wire markers: the key and value of a secret's wrapper, and a value
# not known until apply.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

T = TypeVar("T")


def plain(value: Any) -> Any:
    """A property value with Pulumi's secret wrappers taken off (the engine keeps secrets secret)."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_VALUE:
            return plain(value.get("value"))
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def has_unknowns(value: Any) -> bool:
    if isinstance(value, dict):
        return any(has_unknowns(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unknowns(v) for v in value)
    return bool(value == UNKNOWN)


def props(struct: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = plain(MessageToDict(struct))
    return result


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(dict(values))
    return message


def resource_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


class NodeMarksProvider(provider_pb2_grpc.ResourceProviderServicer):
    def __init__(self, engine_address: str | None) -> None:
        self.cluster: Cluster | None = None
        self.cancelled = threading.Event()
        self.engine = (
            engine_pb2_grpc.EngineStub(grpc.insecure_channel(engine_address)) if engine_address else None
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _guard(
        self, context: grpc.ServicerContext, urn: str, call: Callable[[], T], resource_id: str = ""
    ) -> T:
        """Run `call`; a refusal becomes the call's one-line error, named after the resource."""
        try:
            return call()
        except PartlyAppliedError as error:
            # The engine saves these outputs (a partial failure) with the error.
            message = f"{resource_name(urn)}: {error}"
            detail = any_pb2.Any()
            detail.Pack(
                provider_pb2.ErrorResourceInitFailed(
                    id=resource_id,
                    properties=struct(error.outputs),
                    inputs=struct(error.outputs),
                    reasons=[message],
                )
            )
            status = status_pb2.Status(
                code=grpc.StatusCode.UNKNOWN.value[0], message=message, details=[detail]
            )
            context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
            context.abort(grpc.StatusCode.UNKNOWN, message)
        except NodeMarksError as error:
            context.abort(grpc.StatusCode.UNKNOWN, f"{resource_name(urn)}: {error}")
        except Exception as error:  # noqa: BLE001 - one line, no traceback, no property values
            context.abort(
                grpc.StatusCode.UNKNOWN,
                f"{resource_name(urn)}: unexpected {type(error).__name__} in the node-marks provider",
            )
        raise AssertionError("unreachable")

    def _log(
        self, urn: str, message: str, severity: engine_pb2.LogSeverity.ValueType = engine_pb2.WARNING
    ) -> None:
        """Best effort: a message the engine cannot take is not worth failing a step for."""
        if self.engine is None:
            return
        with contextlib.suppress(grpc.RpcError):
            self.engine.Log(engine_pb2.LogRequest(severity=severity, message=message, urn=urn), timeout=10)

    def _cluster(self) -> Cluster:
        if self.cluster is None:
            raise NodeMarksError("the provider has no kubeconfig (clusterKubeconfig)")
        return self.cluster

    # -- the provider itself ---------------------------------------------------------------------

    def GetPluginInfo(self, request: Any, context: Any) -> plugin_pb2.PluginInfo:  # noqa: N802
        return plugin_pb2.PluginInfo(version=VERSION)

    def GetSchema(self, request: Any, context: Any) -> provider_pb2.GetSchemaResponse:  # noqa: N802
        return provider_pb2.GetSchemaResponse(schema="{}")

    def CheckConfig(self, request: Any, context: Any) -> provider_pb2.CheckResponse:  # noqa: N802
        return provider_pb2.CheckResponse(inputs=request.news)

    def DiffConfig(self, request: Any, context: Any) -> provider_pb2.DiffResponse:  # noqa: N802
        # A rotated kubeconfig updates the provider in place: the resources stay.
        changed = props(request.olds) != props(request.news)
        return provider_pb2.DiffResponse(
            changes=provider_pb2.DiffResponse.DIFF_SOME if changed else provider_pb2.DiffResponse.DIFF_NONE
        )

    def Configure(self, request: Any, context: Any) -> provider_pb2.ConfigureResponse:  # noqa: N802
        config = props(request.args)
        kubeconfig = config.get("kubeconfig")
        source = config.get("kubeconfigSource") or "the kubeconfig"
        if isinstance(kubeconfig, str) and kubeconfig != UNKNOWN:
            self.cluster = self._guard(context, "provider", lambda: Cluster(api_client(kubeconfig, source)))
        return provider_pb2.ConfigureResponse(acceptSecrets=True, supportsPreview=True)

    def Cancel(self, request: Any, context: Any) -> empty_pb2.Empty:  # noqa: N802
        self.cancelled.set()
        return empty_pb2.Empty()

    # -- resources -------------------------------------------------------------------------------

    def _marks(self, urn: str) -> NodeMarksResource:
        return NodeMarksResource(
            self._cluster(), Owner.of_urn(urn), self.cancelled, lambda m: self._log(urn, m)
        )

    def _rollout(self, urn: str) -> TolerationRolloutResource:
        return TolerationRolloutResource(self._cluster(), self.cancelled, lambda m: self._log(urn, m))

    def Check(self, request: Any, context: Any) -> provider_pb2.CheckResponse:  # noqa: N802
        return provider_pb2.CheckResponse(inputs=request.news)

    def Diff(self, request: Any, context: Any) -> provider_pb2.DiffResponse:  # noqa: N802
        olds, news = props(request.olds), props(request.news)
        if has_unknowns(news) or self.cluster is None:
            return provider_pb2.DiffResponse(changes=provider_pb2.DiffResponse.DIFF_UNKNOWN)

        def diff() -> provider_pb2.DiffResponse:
            if self._is_rollout(request.urn):
                result = self._rollout(request.urn).diff(olds, news)
            else:
                result = self._marks(request.urn).diff(olds, news)
            changed = list(result.changed)
            if result.drift:
                self._log(
                    request.urn,
                    "taken off outside the stack; `up` puts it back: " + "; ".join(result.drift),
                    engine_pb2.INFO,
                )
                changed.append("taints" if news.get("stage") == "restrict" else "labels")
            replaces = [k for k in changed_keys(olds, news, ("stage",)) if k in changed]
            return provider_pb2.DiffResponse(
                changes=provider_pb2.DiffResponse.DIFF_SOME
                if changed
                else provider_pb2.DiffResponse.DIFF_NONE,
                diffs=sorted(set(changed)),
                replaces=replaces,
                deleteBeforeReplace=bool(replaces),
            )

        return self._guard(context, request.urn, diff)

    def _is_rollout(self, urn: str) -> bool:
        return urn.split("::")[-2].rsplit("$", maxsplit=1)[-1] == TOLERATION_ROLLOUT

    def Create(self, request: Any, context: Any) -> provider_pb2.CreateResponse:  # noqa: N802
        news = props(request.properties)

        def create() -> provider_pb2.CreateResponse:
            if self._is_rollout(request.urn):
                outputs = self._rollout(request.urn).apply(None, news, preview=request.preview)
                resource_id = str(news.get("waitsFor") or "rollout")
            else:
                outputs = self._marks(request.urn).apply(
                    None, news, preview=request.preview or has_unknowns(news)
                )
                resource_id = marks_id
            return provider_pb2.CreateResponse(
                id="" if request.preview else resource_id, properties=struct(outputs)
            )

        marks_id = f"{news.get('stage')}/{resource_name(request.urn)}"
        return self._guard(context, request.urn, create, resource_id=marks_id)

    def Update(self, request: Any, context: Any) -> provider_pb2.UpdateResponse:  # noqa: N802
        olds, news = props(request.olds), props(request.news)

        def update() -> provider_pb2.UpdateResponse:
            preview = request.preview or has_unknowns(news)
            if self._is_rollout(request.urn):
                outputs = self._rollout(request.urn).apply(olds, news, preview=preview)
            else:
                outputs = self._marks(request.urn).apply(olds, news, preview=preview)
            return provider_pb2.UpdateResponse(properties=struct(outputs))

        return self._guard(context, request.urn, update, resource_id=request.id)

    def Delete(self, request: Any, context: Any) -> empty_pb2.Empty:  # noqa: N802
        olds = props(request.properties)

        def delete() -> empty_pb2.Empty:
            if not self._is_rollout(request.urn):
                self._marks(request.urn).delete(olds)
            return empty_pb2.Empty()

        return self._guard(context, request.urn, delete)

    def Read(self, request: Any, context: Any) -> provider_pb2.ReadResponse:  # noqa: N802
        """`refresh`: the marks as the nodes carry them (a mark taken off by hand shows as a change)."""
        state = props(request.properties)
        if self._is_rollout(request.urn) or self.cluster is None:
            return provider_pb2.ReadResponse(
                id=request.id, properties=request.properties, inputs=request.inputs
            )

        def read() -> provider_pb2.ReadResponse:
            found = self._marks(request.urn).read(state, props(request.inputs))
            return provider_pb2.ReadResponse(id=request.id, properties=struct(found), inputs=request.inputs)

        return self._guard(context, request.urn, read)


def exit_with_the_engine() -> None:
    """The engine starts plugins in their own process group: if it is killed, nothing stops
    this one, which would go on to taint nodes after a wait. Exit once the parent is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="engine-watch", daemon=True).start()


def main() -> None:
    exit_with_the_engine()
    # The backend's token is the engine's; a kubeconfig's `exec` plugin, started from here, must not get it.
    os.environ.pop("PULUMI_ACCESS_TOKEN", None)
    # The engine's address is the last argument; flags (`--tracing <url>`, `-v=9`) come before it.
    arguments = [a for a in sys.argv[1:] if not a.startswith("-")]
    engine_address = arguments[-1] if arguments else None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(NodeMarksProvider(engine_address), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # The engine reads the port from the plugin's first line of output.
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
