"""The rule derivation, tested as the pure functions it is."""

from __future__ import annotations

from typing import Any

import asm_standin
import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.gateway import ISTIO_GATEWAY_FIELDS
from components.scheduling import (
    VIRTUAL_NODES,
    MissingNodeGroupError,
    NodeGroup,
    NodeKind,
    Policy,
    Taint,
    Weights,
    derive_rules,
    resource_policy_units,
)

GUIDE_POOL = NodeGroup(NodeKind.ECS, {"mykey4pod": "asmgateway"}, (Taint("mykey", "myvalue", "NoSchedule"),))
BOTH = {NodeKind.ECS: GUIDE_POOL, NodeKind.ECI: VIRTUAL_NODES}

POOL_TERM = {"matchExpressions": [{"key": "mykey4pod", "operator": "In", "values": ["asmgateway"]}]}
VIRTUAL_TERM = {"matchExpressions": [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]}
POOL_TOLERATION = {"key": "mykey", "operator": "Equal", "value": "myvalue", "effect": "NoSchedule"}
VIRTUAL_TOLERATION = {
    "key": "virtual-kubelet.io/provider",
    "operator": "Equal",
    "value": "alibabacloud",
    "effect": "NoSchedule",
}


def test_prefer_ecs_reproduces_the_guides_affinity_and_tolerations() -> None:
    rules = derive_rules(Policy.PREFER_ECS, BOTH)
    node_affinity = rules.affinity["nodeAffinity"]
    assert node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [POOL_TERM, VIRTUAL_TERM]
    }
    assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {"weight": 80, "preference": POOL_TERM},
        {"weight": 20, "preference": VIRTUAL_TERM},
    ]
    assert sorted(rules.tolerations, key=str) == sorted([POOL_TOLERATION, VIRTUAL_TOLERATION], key=str)


def test_prefer_eci_mirrors_prefer_ecs_with_the_weights_swapped() -> None:
    rules = derive_rules(Policy.PREFER_ECI, BOTH, Weights(preferred=70, overflow=30))
    preferred = rules.affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == [
        {"weight": 70, "preference": VIRTUAL_TERM},
        {"weight": 30, "preference": POOL_TERM},
    ]
    required = rules.affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"] == [VIRTUAL_TERM, POOL_TERM]


def test_ecs_only_admits_the_pool_alone_and_tolerates_only_its_taint() -> None:
    rules = derive_rules(Policy.ECS_ONLY, BOTH)
    node_affinity = rules.affinity["nodeAffinity"]
    assert node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [POOL_TERM]
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in node_affinity
    assert rules.tolerations == [POOL_TOLERATION]


def test_eci_only_admits_virtual_nodes_alone_and_tolerates_only_their_taint() -> None:
    rules = derive_rules(Policy.ECI_ONLY, BOTH)
    terms = rules.affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [VIRTUAL_TERM]
    assert rules.tolerations == [VIRTUAL_TOLERATION]


@pytest.mark.parametrize("policy", [Policy.PREFER_ECS, Policy.PREFER_ECI, Policy.ECS_ONLY])
def test_a_policy_that_needs_the_pool_fails_without_one(policy: Policy) -> None:
    with pytest.raises(MissingNodeGroupError, match="needs ECS"):
        derive_rules(policy, {NodeKind.ECI: VIRTUAL_NODES})


def test_a_valueless_taint_is_tolerated_by_its_key_and_effect_only() -> None:
    pool = NodeGroup(NodeKind.ECS, {"role": "gw"}, (Taint("dedicated", "", "NoExecute"),))
    rules = derive_rules(Policy.ECS_ONLY, {NodeKind.ECS: pool})
    assert rules.tolerations == [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]


# -- Properties ----------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
labels = st.dictionaries(names, names, min_size=1, max_size=4)
taints = st.lists(
    st.builds(
        Taint,
        names,
        st.one_of(st.just(""), names),
        st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
    ),
    max_size=4,
)
pools = st.builds(lambda lbl, t: NodeGroup(NodeKind.ECS, lbl, tuple(t)), labels, taints)


def matches_term(node_labels: dict[str, str], term: dict[str, Any]) -> bool:
    """nodeSelectorTerm semantics for the `In` expressions the rules use."""
    return all(node_labels.get(e["key"]) in e["values"] for e in term["matchExpressions"])


def tolerated(taint: Taint, tolerations: list[dict[str, str]]) -> bool:
    for tol in tolerations:
        if tol["key"] != taint.key or tol["effect"] != taint.effect:
            continue
        if tol["operator"] == "Exists" or tol.get("value") == taint.value:
            return True
    return False


@given(pools, st.sampled_from(list(Policy)), st.integers(2, 100), st.data())
def test_rules_admit_and_tolerate_exactly_the_groups_the_policy_allows(
    pool: NodeGroup, policy: Policy, preferred: int, data: st.DataObject
) -> None:
    overflow = data.draw(st.integers(1, preferred - 1))
    groups = {NodeKind.ECS: pool, NodeKind.ECI: VIRTUAL_NODES}
    rules = derive_rules(policy, groups, Weights(preferred, overflow))
    terms = rules.affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    for kind, group in groups.items():
        admitted = any(matches_term(dict(group.labels), term) for term in terms)
        # Generated pool labels never coincide with the virtual node's label.
        assert admitted == (kind in policy.allowed)
        if kind in policy.allowed:
            assert all(tolerated(t, rules.tolerations) for t in group.taints)
    # Nothing broader than the allowed groups' taints.
    allowed_taints = {t for k, g in groups.items() if k in policy.allowed for t in g.taints}
    assert len(rules.tolerations) == len(allowed_taints)
    # Never a bare `Exists` that tolerates every taint.
    assert all(tol.get("key") and tol.get("effect") for tol in rules.tolerations)
    preferred_terms = rules.affinity["nodeAffinity"].get(
        "preferredDuringSchedulingIgnoredDuringExecution", []
    )
    if len(policy.allowed) == 2:
        first = groups[policy.allowed[0]]
        assert preferred_terms[0]["weight"] > preferred_terms[1]["weight"]
        assert matches_term(dict(first.labels), preferred_terms[0]["preference"])
    else:
        assert preferred_terms == []


@given(pools)
def test_label_and_taint_order_never_changes_the_rules(pool: NodeGroup) -> None:
    shuffled = NodeGroup(
        NodeKind.ECS, dict(reversed(list(pool.labels.items()))), tuple(reversed(pool.taints))
    )
    for policy in Policy:
        a = derive_rules(policy, {NodeKind.ECS: pool, NodeKind.ECI: VIRTUAL_NODES})
        b = derive_rules(policy, {NodeKind.ECS: shuffled, NodeKind.ECI: VIRTUAL_NODES})
        assert a == b


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            Policy.PREFER_ECS,
            [{"resource": "ecs", "nodeSelector": {"mykey4pod": "asmgateway"}}, {"resource": "eci"}],
        ),
        (
            Policy.PREFER_ECI,
            [{"resource": "eci"}, {"resource": "ecs", "nodeSelector": {"mykey4pod": "asmgateway"}}],
        ),
        (Policy.ECS_ONLY, [{"resource": "ecs", "nodeSelector": {"mykey4pod": "asmgateway"}}]),
        (Policy.ECI_ONLY, [{"resource": "eci"}]),
    ],
)
def test_resource_policy_units_follow_the_policys_order(
    policy: Policy, expected: list[dict[str, Any]]
) -> None:
    assert resource_policy_units(policy, BOTH) == expected


def test_the_stacks_istio_gateway_fields_are_the_ones_asm_publishes() -> None:
    # Two lists written apart: the stack's (components/gateway.py) and the test
    # CRD's (tests/asm_standin.py, from ASM's API types). A typo in either fails here.
    crd_fields = asm_standin.ISTIO_GATEWAY_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert set(crd_fields["properties"]["spec"]["properties"]) == ISTIO_GATEWAY_FIELDS
