"""Explicit Kubernetes providers: one per API the stack talks to."""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_kubernetes as k8s

from components.kubeconfig import KubeconfigProblemError, read_kubeconfig


class KubeconfigError(pulumi.RunError):
    """Shown by the engine as a message, without a traceback, like a config error."""


def require_kubeconfig(name: str, source: str) -> Callable[[str | None], str]:
    """Refuse a kubeconfig that is empty (the provider would fall back to ~/.kube/config) or broken.

    The message says what is wrong and where, never what the text holds: a
    kubeconfig carries tokens and keys, and a YAML parser quotes what it reads.
    """

    def check(kubeconfig: str | None) -> str:
        if not kubeconfig or not kubeconfig.strip():
            raise KubeconfigError(
                f"{name}: the kubeconfig from {source} is empty; refusing to fall back to the"
                " ambient ~/.kube/config, which may point at any cluster"
            )
        try:
            read_kubeconfig(kubeconfig)
        except KubeconfigProblemError as problem:
            raise KubeconfigError(f"{name}: the kubeconfig from {source} {problem}") from None
        return kubeconfig

    return check


def kubernetes_provider(
    name: str,
    kubeconfig: pulumi.Input[str] | None,
    render_directory: str | None,
    opts: pulumi.ResourceOptions,
    source: str = "config",
) -> k8s.Provider:
    """A provider for a kubeconfig if there is one, else one that writes YAML.

    Rendering is for the `local` stack and for review: the provider writes each
    object's manifest under `render_directory` on `up` (not on `preview`).
    `source` names where the kubeconfig comes from, for the error when it is empty.
    """
    if kubeconfig is not None:
        return k8s.Provider(
            name,
            kubeconfig=pulumi.Output.from_input(kubeconfig).apply(require_kubeconfig(name, source)),
            opts=opts,
        )
    if render_directory is None:
        raise ValueError(f"{name}: neither a kubeconfig nor a folder to render to")
    return k8s.Provider(name, render_yaml_to_directory=render_directory, opts=opts)


def alicloud_provider(
    name: str,
    region: str | None,
    *,
    access_key: pulumi.Input[str] | None,
    secret_key: pulumi.Input[str] | None,
    security_token: pulumi.Input[str] | None,
    profile: pulumi.Input[str] | None,
    moved_from: pulumi.Input[str] | None = None,
) -> pulumi.ProviderResource:
    """The explicit Alibaba Cloud provider, made where the credentials are read.

    It is handed to `ServerlessGateway` through `ResourceOptions.providers`, so
    credentials never enter a component. `moved_from` is the URN of the
    component it used to be a child of: the alias keeps its URN, and nothing
    it manages is replaced.
    """
    # Imported here, not at the top: pulumi_alicloud costs ~75 ms of every
    # preview, and stacks without cloud resources (local) never need it.
    import pulumi_alicloud as alicloud  # noqa: PLC0415

    return alicloud.Provider(
        name,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        security_token=security_token,
        profile=profile,
        opts=pulumi.ResourceOptions(aliases=[pulumi.Alias(parent=moved_from)] if moved_from else None),
    )
