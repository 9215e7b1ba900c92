"""The stack's ComponentResources, one concern a module, and the pure rules that tie them."""

from __future__ import annotations

from typing import Any

import pulumi

PACKAGE = "asm-serverless-gateway"


def type_token(name: str) -> str:
    """The `pkg:module:Type` token of one of this project's components."""
    return f"{PACKAGE}:index:{name}"


def child_options(
    parent: pulumi.Resource, opts: pulumi.ResourceOptions | None, **extra: Any
) -> pulumi.ResourceOptions:
    """Options for a component's child: parented to it, and ordered after what the component is.

    A component's `depends_on` does not reach its children by itself; the
    stack orders node marks, gateways and pools through it, so it is passed on.
    """
    return pulumi.ResourceOptions(parent=parent, depends_on=opts.depends_on if opts else None, **extra)
