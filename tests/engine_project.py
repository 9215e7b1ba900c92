"""A copy of this project driven by the real Pulumi engine through the Automation API.

Each `EngineProject` is the project's files in a temporary folder with its own
`file://` backend, so tests can edit stack files and code freely. Tests that
use it are marked `engine`; without the tools they skip, or fail under
`scripts/test.sh` (ASM_GATEWAY_REQUIRE_TOOLS=1), which must find them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from go_tools import toolchain

ROOT = Path(__file__).resolve().parent.parent
# The config module was `stack_config.py` before it became a package; old
# checkouts (tests of refactors) have the one, the project the other.
PROJECT_FILES = (
    "Pulumi.yaml",
    "__main__.py",
    "stack_config",
    "stack_config.py",
    "requirements.txt",
    "components",
    "node_marks_plugin",
    "preflight",
    "go_tools",
    "stacks",
)


def checkout(commit: str, folder: Path) -> Path:
    """This repository's files at `commit`, in `folder` (for an EngineProject of an earlier version)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def engine_env(state_dir: Path) -> dict[str, str]:
    """The engine's environment, or a skip (a failure under scripts/test.sh) naming what is missing."""
    try:
        env = toolchain.engine_environment(state_dir=state_dir)
        # Test stacks live in a throwaway backend; the local stack's passphrase will do.
        env.setdefault("PULUMI_CONFIG_PASSPHRASE", toolchain.LOCAL_PASSPHRASE)
        # The Automation API runs `pulumi version` without the workspace's env
        # vars; without this it would write its logs into the user's ~/.pulumi.
        os.environ.setdefault("PULUMI_HOME", env["PULUMI_HOME"])
        # The test's own temporary folder (as scripts/pulumi.sh gives each run one): the
        # Kubernetes provider leaves a copy of each kubeconfig there.
        private = state_dir.parent / "engine-tmp"
        private.mkdir(mode=0o700, exist_ok=True)
        env["TMPDIR"] = str(private)
        return env
    except toolchain.ToolsMissingError as missing:
        if os.environ.get("ASM_GATEWAY_REQUIRE_TOOLS"):
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@dataclass(frozen=True)
class Step:
    op: str
    type: str
    name: str


class EngineProject:
    def __init__(self, tmp: Path, source: Path = ROOT, folder: str = "project") -> None:
        # Copies made with the same `tmp` share one backend, like two checkouts of a repo.
        self.dir = tmp / folder
        self.dir.mkdir(parents=True)
        for name in PROJECT_FILES:
            src = source / name
            if not src.exists():
                continue
            if src.is_dir():
                shutil.copytree(src, self.dir / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, self.dir / name)
        # The program runs in the project's own virtualenv.
        (self.dir / ".venv").symlink_to(ROOT / ".venv")
        state = tmp / "state"
        state.mkdir(exist_ok=True)
        self.env = engine_env(state)
        pulumi_dir = Path(shutil.which("pulumi", path=self.env["PATH"]) or "pulumi").parent
        # PulumiCommand wants the folder that holds bin/pulumi.
        self.command = auto.PulumiCommand(root=str(pulumi_dir.parent), skip_version_check=True)

    def stack(self, name: str) -> auto.Stack:
        return auto.create_or_select_stack(
            name,
            work_dir=str(self.dir),
            opts=auto.LocalWorkspaceOptions(env_vars=self.env, pulumi_command=self.command),
        )

    def stack_on_cluster(
        self, name: str, kubeconfig: dict[str, Any], edit: Callable[[dict[str, Any]], None]
    ) -> auto.Stack:
        """The stack with its config edited, pointed at a cluster (and mesh) by a secret kubeconfig."""
        self.edit_config(name, edit)
        stack = self.stack(name)
        text = yaml.safe_dump(kubeconfig)
        stack.set_config("clusterKubeconfig", auto.ConfigValue(text, secret=True))
        stack.set_config("meshKubeconfig", auto.ConfigValue(text, secret=True))
        return stack

    def stack_file(self, name: str) -> Path:
        return self.dir / "stacks" / f"Pulumi.{name}.yaml"

    def edit_config(self, stack: str, edit: Callable[[dict[str, Any]], None]) -> None:
        """Change a stack file's project config the way a user edits it in review."""
        path = self.stack_file(stack)
        document = yaml.safe_load(path.read_text())
        prefix = "asm-serverless-gateway:"
        config = {k[len(prefix) :]: v for k, v in document["config"].items() if k.startswith(prefix)}
        edit(config)
        others = {k: v for k, v in document["config"].items() if not k.startswith(prefix)}
        document["config"] = {**others, **{prefix + k: v for k, v in config.items()}}
        path.write_text(yaml.safe_dump(document, sort_keys=False))


# What upgrading a stack deployed by a version before the rebalancer adds, created in place
# beside what it has: each gateway's budget, and the rebalancer with its objects.
ADDED_WITH_THE_REBALANCER = (
    "GatewayDisruptionBudget",
    "GatewayRebalancer",
    "PodDisruptionBudget",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "Deployment",
)


def beside_the_rebalancer(steps: list[Step]) -> list[Step]:
    """The steps of an upgrade from a version before the rebalancer, less what it adds: its
    creations, and the IstioGateways' in-place update for the derived rollout strategy."""
    return [
        s
        for s in steps
        if not (s.op == "create" and s.type.endswith(ADDED_WITH_THE_REBALANCER))
        and not (s.op == "update" and s.name.endswith("-istiogateway"))
    ]


def changed_steps(stack: auto.Stack, **preview_args: Any) -> list[Step]:
    """The engine's planned steps other than `same`, from a real preview."""
    steps: list[Step] = []

    def on_event(event: auto.events.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is None or pre.metadata.op == auto.events.OpType.SAME:
            return
        steps.append(Step(pre.metadata.op.value, pre.metadata.type, pre.metadata.urn.rsplit("::", 1)[1]))

    stack.preview(on_event=on_event, **preview_args)
    return sorted(steps, key=lambda s: (s.type, s.name))
