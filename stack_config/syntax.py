"""Kubernetes' own syntax rules for the values the stack passes on, as pure functions.

Each `*_problem` function says why Kubernetes would refuse a value, or returns
None; the config model attaches them to its fields, and tests use them too.
"""

from __future__ import annotations

import re
from decimal import Decimal

# The patterns are also the JSON Schema's (an editor's first check); the
# functions below add the length limits that a pattern does not carry.
NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUALIFIED_NAME_PATTERN = "^(" + DNS_SUBDOMAIN_PATTERN[1:-1] + "/)?" + NAME_PATTERN[1:]
LABEL_VALUE_PATTERN = "^(" + NAME_PATTERN[1:-1] + ")?$"
_NAME = re.compile(NAME_PATTERN)
_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)


def qualified_name_problem(key: str) -> str | None:
    """Why Kubernetes rejects `key` as a label, taint or annotation key, if it does."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "has an empty prefix before '/'"
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "has a prefix that is not a DNS subdomain (lowercase, digits, '-', '.')"
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        return (
            "must be a name of at most 63 characters: letters, digits, '-', '_' or '.',"
            " starting and ending with a letter or digit (an optional 'prefix/' before it)"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why Kubernetes rejects `value` as a label or taint value, if it does."""
    if value and (len(value) > 63 or not _NAME.fullmatch(value)):
        return (
            "must be empty or at most 63 characters: letters, digits, '-', '_' or '.',"
            " starting and ending with a letter or digit"
        )
    return None


def dns_label_problem(value: str) -> str | None:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        return "must be a DNS label: at most 63 lowercase letters, digits or '-', alphanumeric at both ends"
    return None


def dns_subdomain_problem(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        return "must be a DNS subdomain: lowercase letters, digits, '-' and '.'"
    return None


# How ACK names a node pool (`np-` and lowercase hex); not a Kubernetes rule, checked the same way.
NODE_POOL_ID_PATTERN = r"^np-[0-9a-z]+$"
_NODE_POOL_ID = re.compile(NODE_POOL_ID_PATTERN)


def node_pool_id_problem(value: str) -> str | None:
    if len(value) > 64 or not _NODE_POOL_ID.fullmatch(value):
        return "is not an ACK node pool id: 'np-' then lowercase letters and digits, as the console shows it"
    return None


# Kubernetes' quantity grammar (apimachinery's resource.Quantity): a signed
# decimal number, then a binary suffix, a decimal suffix or an exponent. Not
# the Python client's `parse_quantity`: it accepts what the API server refuses
# ("1K", "1 Gi") and its import costs about 0.45 s of every preview.
QUANTITY_PATTERN = (
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity as a number (`500m` -> 0.5, `4Gi` -> 4294967296); ValueError if invalid."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))


def quantity_problem(value: str) -> str | None:
    """Why Kubernetes rejects `value` as a resource amount (e.g. 500m, 2, 4Gi), if it does."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        return "must be a Kubernetes quantity such as 500m, 2, 512Mi or 4Gi"
    if amount < 0:
        return "must not be negative"
    return None
