"""Adopting a gateway that exists, without a cluster: what the stack writes on it (under Pulumi
mocks at the provider boundary) and what the preflight says of the live object (the live proof
is test_adoption.py)."""

from __future__ import annotations

from typing import Any

import pytest
from mock_stack import EVERY_KEY, run_stack_file

import stack_config
from components.gateway import GATEWAY_POD_LABEL, Gateway
from preflight.adoption import adoption, written_fields
from stack_config.problems import ConfigError

ISTIO_GATEWAY = "kubernetes:istio.alibabacloud.com/v1beta1:IstioGateway"
ISTIO_GATEWAY_PATCH = "kubernetes:istio.alibabacloud.com/v1beta1:IstioGatewayPatch"


def gateway(**keys: object) -> Gateway:
    values = {**EVERY_KEY[0], "mesh": {"mode": "existing"}, "gateways": [{"name": "gw", **keys}]}
    return stack_config.parse("test", values, list(stack_config.SECRET_KEYS)).gateway.gateways[0]


def live(*managers: tuple[str, list[str]]) -> dict[str, Any]:
    """An IstioGateway as the API serves it, with `managers` holding those spec fields."""
    return {
        "metadata": {
            "name": "gw",
            "managedFields": [
                {"manager": name, "fieldsV1": {"f:spec": {f"f:{field}": {} for field in fields}}}
                for name, fields in managers
            ],
        },
        "spec": {},
    }


def test_an_adopted_gateway_is_patched_with_the_guides_fields_and_what_its_entry_sets_mocked() -> None:
    adopted = {"name": "ingressgateway", "adopt": True, "maxReplicas": 8}
    deployment = run_stack_file("prod", {"gateways": [adopted]})
    assert deployment.of_type(ISTIO_GATEWAY) == []
    patch = deployment.one(ISTIO_GATEWAY_PATCH).inputs
    spec = patch["spec"]
    # The guide's placement, the stack's pod label alone (beside the live ones), the derived
    # rollout and the one key the entry sets; replicas, ports, resources keep their live values.
    assert set(spec) == {
        "affinity",
        "tolerations",
        "podLabels",
        "maxReplicas",
        "rollingMaxSurge",
        "rollingMaxUnavailable",
    }
    assert spec["podLabels"] == {GATEWAY_POD_LABEL: "ingressgateway"} and spec["maxReplicas"] == 8
    assert patch["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"}


def test_a_gateway_the_stack_made_is_declared_whole_as_before_mocked() -> None:
    deployment = run_stack_file("prod")
    assert deployment.of_type(ISTIO_GATEWAY_PATCH) == []
    spec = deployment.of_type(ISTIO_GATEWAY)[0].inputs["spec"]
    assert {"replicaCount", "ports", "resources", "gatewayType", "clusterIds"} <= set(spec)


def test_an_existing_gateway_no_stack_made_is_refused_naming_the_key() -> None:
    console = live(("asm-console", ["replicaCount", "ports", "affinity"]))
    verdict = adoption(2, gateway(), console, set())
    (error,) = verdict.errors
    assert "gateways[2].adopt" in error and "asm-console" in error and "exists already" in error
    # One this stack made (its server-side-apply manager) is its own.
    assert adoption(0, gateway(), live(("pulumi-kubernetes-1a2b3c4d", ["affinity"])), set()) == adoption(
        0, gateway(), None, set()
    )
    assert adoption(0, gateway(), None, set()).errors == ()


def test_an_adopted_gateway_says_which_fields_it_takes_over_from_whom() -> None:
    adopted = gateway(adopt=True, maxReplicas=8)
    written = written_fields(adopted, derived_rollout=True, several_clusters=False)
    assert written == {
        "affinity",
        "tolerations",
        "podLabels",
        "maxReplicas",
        "rollingMaxSurge",
        "rollingMaxUnavailable",
    }
    held = live(
        ("asm-console", ["replicaCount", "ports", "affinity", "maxReplicas"]),
        ("kubectl-edit", ["tolerations", "podLabels"]),
        ("pulumi-kubernetes-9f", ["affinity"]),
    )
    (warning,) = adoption(0, adopted, held, written).warnings
    taken = "spec.affinity from asm-console; spec.maxReplicas from asm-console; spec.tolerations from"
    assert f"{taken} kubectl-edit" in warning
    assert "replicaCount" not in warning and "ports" not in warning and "podLabels" not in warning
    missing = adoption(1, adopted, None, written)
    assert (
        missing.errors
        and "gateways[1].adopt is true" in missing.errors[0]
        and "does not exist" in missing.errors[0]
    )


def test_adopting_in_a_mesh_the_stack_creates_is_refused() -> None:
    values = {
        **EVERY_KEY[0],
        "mesh": {"mode": "create", "name": "m"},
        "gateways": [{"name": "gw", "adopt": True}],
    }
    with pytest.raises(ConfigError, match=r"gateways\[0\]\.adopt: is true, but the stack creates the mesh"):
        stack_config.parse("test", values, list(stack_config.SECRET_KEYS))
