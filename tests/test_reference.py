"""The config reference (docs/configuration.md) and the stack files' JSON Schema are generated.

Both are generated (`python -m stack_config.reference`); these tests fail when
a committed copy differs, when a documented key is one the config refuses,
or when the schema lets through what the config refuses.
"""

from __future__ import annotations

import copy
import re
from typing import Any, get_args

import jsonschema
import pytest
import yaml
from mock_stack import EVERY_KEY, STACK_FILES, as_stack_file, set_path

import stack_config
from components.scheduling import TAINT_EFFECTS
from stack_config import reference
from stack_config.model import GatewayStackConfig, TaintConfig
from stack_config.problems import keys_of, mode_variants


def test_the_documented_reference_is_the_one_the_model_generates() -> None:
    doc = reference.REFERENCE_DOC.read_text()
    assert doc == reference.doc_with_reference(doc), "run: python -m stack_config.reference"


def test_the_committed_schema_is_the_one_the_model_generates() -> None:
    assert reference.SCHEMA.read_text() == reference.schema_text(), "run: python -m stack_config.reference"


def test_every_documented_key_is_one_the_config_accepts_and_every_accepted_key_is_documented() -> None:
    documented = {row.key for row in reference.rows() if not row.key.startswith("alicloud:")}
    accepted: set[str] = set()
    for values in EVERY_KEY:
        stack_config.parse("every-key", values, list(stack_config.SECRET_KEYS))
        accepted |= set(_key_paths(values))
    # The desiredSize of a pool without autoscaling, apart from the first config.
    accepted.add("ecsCapacity.nodePool.desiredSize")
    assert documented == accepted


def _key_paths(value: Any, prefix: str = "") -> list[str]:
    """Every key path in a config value, list indexes folded to `[]`; free-form maps stop the walk."""
    paths: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.append(path)
            if path.endswith("clusterOverrides"):
                for override in item.values():
                    paths += _key_paths(override, f"{path}.<key>")
                continue
            # Free-form maps, and sections documented where they first appear.
            if not re.search(
                r"(labels|Annotations|extraSpec|addonConfig|requests|limits"
                r"|clusters\[\]\.(ecsCapacity|virtualNodes))$",
                path,
            ):
                paths += _key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths += _key_paths(item, f"{prefix}[]")
    return paths


def _stack_file_of(values: dict[str, Any]) -> dict[str, Any]:
    return {"config": {f"{stack_config.PROJECT}:{k}": v for k, v in values.items()}}


SCHEMA = jsonschema.Draft202012Validator(reference.stack_file_schema())


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_stack_file_passes_the_schema(path: Any) -> None:
    errors = [e.message for e in SCHEMA.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def test_the_every_key_configs_pass_the_schema() -> None:
    for values in EVERY_KEY:
        as_file = as_stack_file(values, stack_config.SECRET_KEYS)
        assert [e.message for e in SCHEMA.iter_errors(_stack_file_of(as_file))] == []


@pytest.mark.parametrize(
    ("path", "value"), [("preferredWeight", "90"), ("protect", "true"), ("gateways[0].maxReplicas", "6")]
)
def test_the_schema_takes_numbers_and_flags_as_pulumi_config_set_writes_them(path: str, value: str) -> None:
    values = copy.deepcopy(EVERY_KEY[0])
    set_path(values, path, value)
    stack_config.parse("every-key", values, list(stack_config.SECRET_KEYS))
    as_file = as_stack_file(values, stack_config.SECRET_KEYS)
    assert [e.message for e in SCHEMA.iter_errors(_stack_file_of(as_file))] == []


@pytest.mark.parametrize("path", ["gateways[0].podAnnotations", "mesh.version", "protect", "renderYamlTo"])
def test_the_schema_takes_a_key_left_empty_where_the_config_reads_it_as_unset(path: str) -> None:
    values = copy.deepcopy(EVERY_KEY[0])
    set_path(values, path, None)
    stack_config.parse("every-key", values, list(stack_config.SECRET_KEYS))
    as_file = as_stack_file(values, stack_config.SECRET_KEYS)
    assert [e.message for e in SCHEMA.iter_errors(_stack_file_of(as_file))] == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("ecsCapcity", {}),
        ("preferredWeight", 101),
        ("preferredWeight", "20.5"),
        ("protect", "yes"),
        ("placementPolicy", "ecs-first"),
        ("ecsCapacity.taints[0].effect", "NoSchedul"),
        ("ecsCapacity.labels", {"-bad": "x"}),
        ("ecsCapacity.nodePool.colour", "red"),
        ("mesh.mode", "pool"),
        ("gateways[0].ports", [{"name": "a", "port": 70000}]),
        ("gateways[0].resources", {"requests": {"cpu": "two"}}),
        ("gateways[0].extraSpec", {"hostNetwok": True}),
        ("clusterKubeconfig", "apiVersion: v1"),
        ("clusterId", None),
        ("ecsCapacity.colour", None),
    ],
)
def test_the_schema_flags_what_the_config_refuses(path: str, value: Any) -> None:
    values = copy.deepcopy(EVERY_KEY[0])
    set_path(values, path, value)
    # A kubeconfig set in plain text is the mistake in one case; in the others it is a secret.
    secrets = [k for k in stack_config.SECRET_KEYS if k != path]
    with pytest.raises(stack_config.ConfigError):
        stack_config.parse("every-key", values, secrets)
    as_file = as_stack_file(values, secrets)
    assert list(SCHEMA.iter_errors(_stack_file_of(as_file))), f"the schema let {path}={value!r} through"


def test_each_mode_is_chosen_by_the_value_of_its_own_mode_key() -> None:
    sections = [info for info in keys_of(GatewayStackConfig).values() if mode_variants(info.annotation)]
    assert len(sections) == 3  # ecsCapacity, virtualNodes, mesh
    for info in sections:
        for tag, variant in mode_variants(info.annotation).items():
            assert get_args(keys_of(variant)["mode"].annotation) == (tag,)


def test_the_taint_effects_the_config_takes_are_the_ones_the_rules_know() -> None:
    assert get_args(keys_of(TaintConfig)["effect"].annotation) == TAINT_EFFECTS
