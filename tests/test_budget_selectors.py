"""Which budgets select a gateway's pods, as the Eviction API counts them (no cluster)."""

from __future__ import annotations

from typing import Any

from preflight.budgets import foreign_budgets, selects

POD = {"metadata": {"labels": {"app": "istio-ingressgateway", "asm-serverless-gateway/gateway": "gw"}}}


def budget(name: str, selector: dict[str, Any] | None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {} if selector is None else {"selector": selector}}


def test_an_empty_selector_selects_every_pod_and_none_selects_none() -> None:
    labels = POD["metadata"]["labels"]
    assert selects({}, labels)
    assert not selects(None, labels)
    assert selects({"matchLabels": {"app": "istio-ingressgateway"}}, labels)
    assert not selects({"matchLabels": {"app": "istio-ingressgateway", "istio": "ingressgateway"}}, labels)
    assert selects({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, labels)
    assert not selects(
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["istio-ingressgateway"]}]},
        labels,
    )


def test_only_budgets_of_other_owners_that_select_a_pod_are_named() -> None:
    budgets = [
        budget("asm-serverless-gateway-gw", {"matchLabels": {"asm-serverless-gateway/gateway": "gw"}}),
        budget("istio-ingressgateway", {"matchLabels": {"app": "istio-ingressgateway"}}),
        budget("whole-namespace", {}),
        budget("other-app", {"matchLabels": {"app": "billing"}}),
        budget("no-selector", None),
    ]
    assert foreign_budgets(budgets, [POD], "asm-serverless-gateway-gw") == [
        "istio-ingressgateway",
        "whole-namespace",
    ]
    assert foreign_budgets(budgets, [], "asm-serverless-gateway-gw") == []
