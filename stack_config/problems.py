"""What is wrong with a stack's config, one line per key, in the operator's words.

pydantic reports each error at a location inside the model (field names,
list indexes, the tags of mode unions); `problems_from` turns each into the
key path a user writes in a stack file (`gateways[0].ports[1].port`) and a
message that says what the key allows.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import pulumi
from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Problem:
    path: str  # the key path under its namespace, e.g. "gateways[0].ports[1].port"
    message: str
    namespace: str


class ConfigError(pulumi.RunError):
    """Bad stack config; the engine prints the message alone, with no traceback."""

    def __init__(self, stack: str, problems: Iterable[Problem]) -> None:
        self.stack = stack
        self.problems = tuple(problems)
        if not self.problems:
            raise ValueError(f"stack '{stack}': a config error must name at least one problem")
        lines = [f"  {p.namespace}:{p.path}: {p.message}" for p in self.problems]
        count = len(self.problems)
        super().__init__(
            f"stack '{stack}' has {count} config error{'s' if count > 1 else ''}"
            " (nothing was changed):\n" + "\n".join(lines)
        )


def did_you_mean(key: str, known: Iterable[str], cutoff: float) -> str:
    """ "; did you mean 'x'?" for the known names closest to a mistyped `key`, or ""."""
    close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=cutoff)
    return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else ""


def describe(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 40 else text[:37] + "..."


# -- Where an error is ----------------------------------------------------------------


@dataclass
class Place:
    """Where a pydantic error location points, in config terms."""

    path: str = ""  # the key path, e.g. "ecsCapacity.nodePool.instanceTypes"
    info: FieldInfo | None = None  # the field the location ends at, if it ends at one
    model: type[BaseModel] | None = None  # the innermost config object on the way
    mode: str | None = None  # that object's mode, when it is one mode of a section
    other_modes: dict[str, type[BaseModel]] = field(default_factory=dict)  # the section's other modes
    at_key: bool = False  # the error is about a map's key, not its value
    holds_credential: bool = False  # what is there is, or holds, a credential: never shown


def keys_of(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's config keys (camelCase) and their fields."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _peel(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under `Annotated[...]` and `X | None`, and the metadata met on the way."""
    metadata: list[Any] = []
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *more = get_args(annotation)
            metadata.extend(more)
        elif _is_union(annotation) and type(None) in get_args(annotation):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


def unwrap(annotation: Any) -> Any:
    """The type under `Annotated[...]` and `X | None`."""
    return _peel(annotation)[0]


def metadata_of(info: FieldInfo) -> list[Any]:
    """A field's metadata, with what `Annotated` carries under `X | None`."""
    return [*info.metadata, *_peel(info.annotation)[1]]


def mode_variants(annotation: Any) -> dict[str, type[BaseModel]]:
    """A section's modes by their tag, if `annotation` is a union of modes; else {}."""
    annotation = unwrap(annotation)
    if not _is_union(annotation):
        return {}
    variants: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        if get_origin(member) is not Annotated:
            return {}
        model, *metadata = get_args(member)
        tags = [m.tag for m in metadata if isinstance(m, Tag)]
        if not tags:
            return {}
        variants[tags[0]] = model
    return variants


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def locate(root: type[BaseModel], loc: Iterable[int | str]) -> Place:
    """Follow a pydantic error location through the config models."""
    place = Place(model=root)
    current: Any = root
    chosen_mode: Any = None
    for item in loc:
        if item == "[key]":
            place.at_key = True
            continue
        variants = mode_variants(current)
        if variants:
            # Not a key: the tag pydantic puts in the location for the mode it chose.
            place.mode = str(item)
            place.other_modes = {tag: model for tag, model in variants.items() if tag != item}
            current = chosen_mode = variants.get(str(item))
            continue
        current = unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if current is not chosen_mode:  # deeper than the mode's own keys
                place.mode, place.other_modes = None, {}
            place.model = current
            place.path = f"{place.path}.{item}" if place.path else str(item)
            place.info = keys_of(current).get(str(item))
            current = place.info.annotation if place.info else None
        elif isinstance(item, int):
            place.path += f"[{item}]"
            place.info = None
            current = get_args(current)[0] if get_args(current) else None
        else:
            place.path = f"{place.path}.{item}" if place.path else str(item)
            place.info = None
            current = get_args(current)[-1] if get_args(current) else None
    place.holds_credential = (place.info is not None and _is_credential(place.info)) or _holds_credential(
        current
    )
    return place


def _is_credential(info: FieldInfo) -> bool:
    return any(getattr(m, "holds_credential", False) for m in metadata_of(info))


def _holds_credential(annotation: Any, depth: int = 0) -> bool:
    """Whether a value of this type may carry a credential: a list or map of, or a model with, one."""
    annotation = unwrap(annotation)
    if annotation is None or depth > 5:
        return False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(
            _is_credential(info) or _holds_credential(info.annotation, depth + 1)
            for info in annotation.model_fields.values()
        )
    return any(_holds_credential(arg, depth + 1) for arg in get_args(annotation))


# -- What is wrong ---------------------------------------------------------------------


def problems_from(error: ValidationError, root: type[BaseModel], namespace: str) -> Iterator[Problem]:
    for detail in error.errors(include_url=False):
        place = locate(root, detail["loc"])
        kind = detail["type"]
        if kind == "related_keys":
            for key, message in detail["ctx"]["problems"]:
                yield Problem(f"{place.path}.{key}" if place.path else key, message, namespace)
        elif kind == "union_tag_invalid":
            tags = ", ".join(_quoted(detail["ctx"]["expected_tags"]))
            yield Problem(f"{place.path}.mode", f"is {describe(detail['input'])}; allowed: {tags}", namespace)
        else:
            yield Problem(place.path, _message(kind, detail, place), namespace)


# pydantic's error types, in the operator's words: {value} is the input,
# {range} the field's bounds, {allowed} its choices.
_MESSAGES = {
    "missing": "is required{allowed}",
    "int_type": "must be a whole number{range}, got {value}",
    "int_parsing": "must be a whole number{range}, got {value}",
    "int_from_float": "must be a whole number{range}, got {value}",
    "greater_than_equal": "is {number}; must be{range}",
    "less_than_equal": "is {number}; must be{range}",
    "literal_error": "is {value}; allowed: {expected}",
    "enum": "is {value}; allowed: {expected}",
    "union_tag_not_found": "must be an object, got {value}",
    "model_type": "must be an object, got {value}",
    "model_attributes_type": "must be an object, got {value}",
    "dict_type": "must be an object, got {value}",
    "list_type": "must be a list, got {value}",
    "string_type": "must be a string, got {value}",
    "bool_type": "must be true or false, got {value}",
    "too_short": "is empty; it must list at least one",
    "string_too_short": "must not be empty",
}


def _message(kind: str, detail: Any, place: Place) -> str:
    if kind == "extra_forbidden":
        return _unknown_key(place)
    if kind == "kubernetes_syntax" and place.at_key:
        return f"key {detail['msg']}"
    if kind not in _MESSAGES:
        return str(detail["msg"])  # our own errors are worded already
    # A credential's value is never repeated, whatever its shape, nor what holds one (a list entry).
    return _MESSAGES[kind].format(
        value="a value not shown here (it may hold a credential)"
        if place.holds_credential
        else describe(detail.get("input")),
        number=detail.get("input"),
        range=_range(place.info),
        allowed=_allowed(place.info),
        expected=", ".join(_quoted((detail.get("ctx") or {}).get("expected", ""))),
    )


def _unknown_key(place: Place) -> str:
    key = place.path.rpartition(".")[2]
    model = place.model
    assert model is not None
    note = getattr(model, "unknown_key_note", "")
    if note:
        return str(note)
    modes = sorted(tag for tag, other in place.other_modes.items() if key in keys_of(other))
    if modes:
        return f"is not used with mode {place.mode}: it is only used with mode {' or '.join(modes)}"
    known = keys_of(model)
    return "is not a known key" + (
        did_you_mean(key, known, cutoff=0.5) or f"; known keys: {', '.join(sorted(known))}"
    )


def _quoted(text: str) -> list[str]:
    """The names in pydantic's "'a', 'b' or 'c'"."""
    return re.findall(r"'([^']*)'", text)


def bounds_of(info: FieldInfo | None) -> tuple[int, int] | None:
    """A whole-number field's lowest and highest allowed values, if it has both."""
    bounds = {type(m): m for m in (metadata_of(info) if info else [])}
    low, high = bounds.get(annotated_types.Ge), bounds.get(annotated_types.Le)
    return (low.ge, high.le) if low is not None and high is not None else None


def choices_of(annotation: Any) -> list[str]:
    """The values a `Literal` or an Enum allows, or [] for any other type."""
    annotation = unwrap(annotation)
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(choice.value) for choice in annotation]
    return []


def _range(info: FieldInfo | None) -> str:
    bounds = bounds_of(info)
    return f" from {bounds[0]} to {bounds[1]}" if bounds else ""


def _allowed(info: FieldInfo | None) -> str:
    choices = choices_of(info.annotation) if info else []
    return f"; allowed: {', '.join(choices)}" if choices else ""
