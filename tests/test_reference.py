"""The README's config reference names every key the config reader reads, and no other.

The keys the reader knows are recorded while it reads every stack of
`stacks/` and a config that sets every key; the README's are the first column
of its reference table, plus the sub-keys a row lists in braces
(`{minSize, maxSize}`). A key added to the code without a line in the README,
or a line for a key that no longer exists, fails here.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from mock_stack import ROOT, STACK_FILES, TEST_KUBECONFIG, config_values_of

import stack_config

# One config per mode that, together with the stacks, touches every key.
EVERY_KEY: list[dict[str, Any]] = [
    {
        "clusterId": "c-1",
        "region": "cn-hangzhou",
        "clusterKubeconfig": TEST_KUBECONFIG,
        "meshKubeconfig": TEST_KUBECONFIG,
        "renderYamlTo": "rendered",
        "placementPolicy": "prefer-ecs",
        "preferredWeight": 80,
        "overflowWeight": 20,
        "protect": True,
        "rolloutTimeoutSeconds": 600,
        "ackResourcePolicy": True,
        "ecsCapacity": {
            "mode": "nodePool",
            "labels": {"a": "b"},
            "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}],
            "nodePool": {
                "name": "p",
                "instanceTypes": ["ecs.g7.xlarge"],
                "vswitchIds": ["vsw-1"],
                "autoscaling": {"minSize": 1, "maxSize": 3},
                "systemDisk": {"category": "cloud_essd", "size": 120},
                "securityGroupIds": ["sg-1"],
            },
        },
        "virtualNodes": {
            "mode": "addon",
            "eciVswitchIds": ["vsw-2"],
            "eciSecurityGroupId": "sg-2",
            "addonVersion": "v1",
            "addonConfig": {},
        },
        "mesh": {
            "mode": "create",
            "name": "m",
            "edition": "Pro",
            "version": "1.22",
            "vpcId": "v",
            "vswitchId": "s",
        },
        "gateways": [
            {
                "name": "g",
                "namespace": "istio-system",
                "replicaCount": 2,
                "autoscaleEnabled": True,
                "minReplicas": 2,
                "maxReplicas": 5,
                "targetCpuUtilization": 80,
                "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "HTTP"}],
                "serviceType": "LoadBalancer",
                "serviceAnnotations": {},
                "podAnnotations": {},
                "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}},
                "extraSpec": {},
            }
        ],
    },
    {
        "clusterId": "c-1",
        "renderYamlTo": "r",
        "ecsCapacity": {"mode": "existingNodes", "labels": {"a": "b"}, "nodes": ["n"]},
        "ecsCapacity.nodePool.desiredSize": None,
    },
]


@pytest.fixture
def keys_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Every key path the config reader reads, list indexes folded to `[]`."""
    seen: set[str] = set()
    raw = stack_config._Fields.raw

    def recording(fields: stack_config._Fields, key: str) -> Any:
        seen.add(re.sub(r"\[\d+\]", "[]", fields.at(key)))
        return raw(fields, key)

    monkeypatch.setattr(stack_config._Fields, "raw", recording)
    yield seen


def documented_keys() -> set[str]:
    keys: set[str] = set()
    readme = (ROOT / "README.md").read_text()
    reference = readme[readme.index("### Reference") :]
    reference = reference[: reference.index("\n#", 1)]
    for line in reference.splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        keys.update(names)
        for name in names:
            for group in re.findall(r"\{([^}]+)\}", cells[1]):
                parent = f"{name}[]" if "list of" in cells[1] else name
                keys.update(f"{parent}.{sub.strip()}" for sub in group.split(","))
    return {k for k in keys if not k.startswith("alicloud:")}


def test_the_reference_documents_every_key_read_and_no_other(keys_read: set[str]) -> None:
    for path in STACK_FILES:
        values, secrets = config_values_of(path)
        # Stacks that need operator secrets still read every key they set.
        with contextlib.suppress(stack_config.ConfigError):
            stack_config.parse(path.name, values, secrets)
    for values in EVERY_KEY:
        # Some keys exclude others; reading them is what counts here.
        with contextlib.suppress(stack_config.ConfigError):
            stack_config.parse("every-key", values, list(stack_config.SECRET_KEYS))
    documented = documented_keys()
    read = {k for k in keys_read if k}
    # An object read whole (`mesh`) is documented through its keys (`mesh.mode`).
    undocumented = {k for k in read - documented if not any(d.startswith(f"{k}.") for d in documented)}
    assert undocumented == set(), "keys the code reads that the README's reference lacks"
    assert documented - read == set(), "keys the README documents that the code never reads"
