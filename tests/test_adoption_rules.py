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
    values = {
        **EVERY_KEY[0],
        "mesh": {"mode": "existing"},
        "clusters": [],
        "gateways": [{"name": "gw", **keys}],
    }
    return stack_config.parse("test", values, list(stack_config.SECRET_KEYS)).gateway.gateways[0]


def _key(field: str) -> str:
    return f"f:{field.split('.', maxsplit=1)[0]}"


def _sub(field: str) -> dict[str, Any]:
    return {f"f:{field.split('.')[1]}": {}} if "." in field else {}


def live(*managers: tuple[str, list[str]]) -> dict[str, Any]:
    """An IstioGateway as the API serves it, with `managers` holding those spec fields."""
    return {
        "metadata": {
            "name": "gw",
            "managedFields": [
                {"manager": name, "fieldsV1": {"f:spec": {_key(field): _sub(field) for field in fields}}}
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
    made = live(("pulumi-kubernetes-1a2b3c4d", ["gatewayType", "affinity.nodeAffinity"]))
    assert adoption(0, gateway(), made, set()) == adoption(0, gateway(), None, set())
    assert adoption(0, gateway(), None, set()).errors == ()


def test_an_adopted_gateway_says_which_fields_it_takes_over_from_whom() -> None:
    adopted = gateway(adopt=True, maxReplicas=8)
    written = written_fields(adopted, derived_rollout=True, several_clusters=False)
    assert written == {
        "affinity.nodeAffinity",
        "tolerations",
        "podLabels",
        "maxReplicas",
        "rollingMaxSurge",
        "rollingMaxUnavailable",
    }
    held = live(
        ("asm-console", ["replicaCount", "ports", "affinity.nodeAffinity", "maxReplicas"]),
        ("kubectl-edit", ["tolerations", "podLabels", "affinity.podAntiAffinity"]),
        ("pulumi-kubernetes-9f", ["affinity.nodeAffinity"]),  # the patch's own, from a run before
    )
    (warning,) = adoption(0, adopted, held, written).warnings
    taken = "spec.affinity.nodeAffinity from asm-console; spec.maxReplicas from asm-console; spec.tolerations"
    assert f"{taken} from kubectl-edit" in warning
    # Not written, so not taken: the other writer's anti-affinity stays beside the guide's.
    for kept in ("replicaCount", "ports", "podLabels", "podAntiAffinity"):
        assert kept not in warning
    missing = adoption(1, adopted, None, written)
    assert (
        missing.errors
        and "gateways[1].adopt is true" in missing.errors[0]
        and "does not exist" in missing.errors[0]
    )
    # A gateway a stack made whole (and this one's earlier resource would delete) is not adopted.
    made = live(("pulumi-kubernetes-1a2b3c4d", ["gatewayType", "clusterIds", "affinity.nodeAffinity"]))
    (refusal,) = adoption(0, adopted, made, written).errors
    assert "a Pulumi stack made" in refusal and "would delete it first" in refusal
    # A gateway only adopted before (the patch holds no gatewayType) is not the stack's own:
    # with adopt taken out, the stack refuses rather than create it over the other writer.
    adopted_before = live(
        ("asm-console", ["gatewayType", "ports"]), ("pulumi-kubernetes-9f", ["tolerations"])
    )
    assert adoption(0, gateway(), adopted_before, set()).errors


@pytest.mark.parametrize(
    ("keys", "key", "words"),
    [
        ({"ports": [{"name": "http", "port": 80}]}, "ports", "cannot be set on an adopted gateway"),
        ({"serviceAnnotations": {"a": "b"}}, "serviceAnnotations", "cannot be set on an adopted gateway"),
    ],
)
def test_an_adopted_entry_may_not_set_what_its_release_would_remove(
    keys: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        gateway(adopt=True, **keys)
    assert f"gateways[0].{key}: {words}" in str(refused.value)


def test_adopting_in_a_mesh_the_stack_creates_is_refused() -> None:
    values = {
        **EVERY_KEY[0],
        "mesh": {"mode": "create", "name": "m"},
        "gateways": [{"name": "gw", "adopt": True}],
    }
    with pytest.raises(ConfigError, match=r"gateways\[0\]\.adopt: is true, but the stack creates the mesh"):
        stack_config.parse("test", values, list(stack_config.SECRET_KEYS))
