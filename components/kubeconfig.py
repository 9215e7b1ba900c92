"""Reading a kubeconfig's text without ever quoting it: it carries tokens and keys."""

from __future__ import annotations

from typing import Any

import yaml


class KubeconfigProblemError(ValueError):
    """What is wrong with a kubeconfig, worded to follow its name ("... is not valid YAML")."""


def read_kubeconfig(text: str) -> dict[str, Any]:
    """The kubeconfig as a mapping; a problem says what is wrong and where, never what it holds.

    A YAML parser's own message quotes the line it read, so only its position
    is kept, and the parser's exception is not chained.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise KubeconfigProblemError(f"is not valid YAML{where}") from None
    if not isinstance(document, dict) or "clusters" not in document:
        raise KubeconfigProblemError("is not a kubeconfig (no `clusters`)")
    return document
