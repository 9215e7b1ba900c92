"""The stack's ComponentResources, one concern a module, and the pure rules that tie them."""

PACKAGE = "asm-serverless-gateway"


def type_token(name: str) -> str:
    """The `pkg:module:Type` token of one of this project's components."""
    return f"{PACKAGE}:index:{name}"
