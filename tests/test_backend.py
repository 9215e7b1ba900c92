"""`scripts/pulumi.sh` with the real engine: state where the user put it, no published passphrase in prod.

Each test runs a copy of the project (its scripts and tools included) with a
home of its own, so that a login here never reaches the user's or CI's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from engine_project import ROOT, EngineProject

from go_tools import toolchain

pytestmark = pytest.mark.engine


@pytest.fixture
def project(tmp_path: Path) -> EngineProject:
    copy = EngineProject(tmp_path)
    shutil.copytree(ROOT / "scripts", copy.dir / "scripts")
    return copy


def run(project: EngineProject, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`scripts/pulumi.sh ARGS` as a user runs it: their environment, their home, no backend chosen."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    # The tools as built; a Pulumi home of the test's own (its login), sharing the plugins.
    pulumi_home = home / "pulumi-home"
    if not pulumi_home.exists():
        pulumi_home.mkdir(parents=True)
        (pulumi_home / "plugins").symlink_to(toolchain.pulumi_home() / "plugins")
    base.update(
        HOME=str(home),
        PULUMI_HOME=str(pulumi_home),
        ASM_GATEWAY_TOOLS_CACHE=str(toolchain.cache_root()),
        **env,
    )
    return subprocess.run(
        [str(project.dir / "scripts" / "pulumi.sh"), *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_backend_chosen_with_login_is_the_one_used_and_whoami_says_so(
    project: EngineProject, tmp_path: Path
) -> None:
    home, backend = tmp_path / "home", tmp_path / "team-backend"
    backend.mkdir()
    home.mkdir()
    login = run(project, home, "login", backend.as_uri())
    assert login.returncode == 0, login.stderr
    whoami = run(project, home, "whoami", "-v")
    assert whoami.returncode == 0, whoami.stderr
    assert f"Backend URL: {backend.as_uri()}" in whoami.stdout
    created = run(project, home, "stack", "init", "team-prod", PULUMI_CONFIG_PASSPHRASE="team-secret")
    assert created.returncode == 0, created.stderr
    assert (backend / ".pulumi" / "stacks" / "asm-serverless-gateway" / "team-prod.json").is_file()
    assert not (project.dir / ".pulumi-state" / ".pulumi" / "stacks" / "asm-serverless-gateway").exists()


def test_a_backend_in_the_environment_is_the_one_used(project: EngineProject, tmp_path: Path) -> None:
    home, backend = tmp_path / "home", tmp_path / "env-backend"
    backend.mkdir()
    home.mkdir()
    whoami = run(project, home, "whoami", "-v", PULUMI_BACKEND_URL=backend.as_uri())
    assert f"Backend URL: {backend.as_uri()}" in whoami.stdout, whoami.stderr


def test_without_a_chosen_backend_only_the_local_stack_lives_in_the_project(
    project: EngineProject, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    refused = run(project, home, "stack", "init", "team-prod", PULUMI_CONFIG_PASSPHRASE="team-secret")
    assert refused.returncode == 2
    assert "stack 'team-prod' would keep its state in" in refused.stderr and "login" in refused.stderr
    local = run(project, home, "stack", "init", "local")
    assert local.returncode == 0, local.stderr
    assert (
        project.dir / ".pulumi-state" / ".pulumi" / "stacks" / "asm-serverless-gateway" / "local.json"
    ).is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["stack", "init", "--stack", "local", "--stack", "prodx"],
        ["stack", "select", "--create", "prodx"],
        ["stack", "select", "-c", "prodx"],
    ],
)
def test_the_guard_reads_the_stack_as_the_engine_does(
    project: EngineProject, tmp_path: Path, args: list[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    refused = run(project, home, *args, PULUMI_CONFIG_PASSPHRASE="team-secret")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "stack 'prodx' would keep its state in" in refused.stderr
    assert not (
        project.dir / ".pulumi-state" / ".pulumi" / "stacks" / "asm-serverless-gateway" / "prodx.json"
    ).exists()


def test_after_a_login_the_local_stack_stays_in_the_project_unless_the_backend_is_exported(
    project: EngineProject, tmp_path: Path
) -> None:
    home, backend = tmp_path / "home", tmp_path / "team-backend"
    backend.mkdir()
    home.mkdir()
    assert run(project, home, "login", backend.as_uri()).returncode == 0
    local = run(project, home, "stack", "init", "local")
    assert local.returncode == 0, local.stderr
    stacks = ".pulumi", "stacks", "asm-serverless-gateway", "local.json"
    assert project.dir.joinpath(".pulumi-state", *stacks).is_file()
    assert not backend.joinpath(*stacks).exists()
    # Asked for, by exporting the backend: it goes there.
    exported = run(project, home, "stack", "init", "local", PULUMI_BACKEND_URL=backend.as_uri())
    assert exported.returncode == 0, exported.stderr
    assert backend.joinpath(*stacks).is_file()


@pytest.mark.parametrize("how", ["PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"])
def test_the_published_passphrase_exported_never_creates_another_stack(
    project: EngineProject, tmp_path: Path, how: str
) -> None:
    home, backend = tmp_path / "home", tmp_path / "team-backend"
    backend.mkdir()
    home.mkdir()
    (tmp_path / "pass").write_text(toolchain.LOCAL_PASSPHRASE)
    exported = {
        how: toolchain.LOCAL_PASSPHRASE if how == "PULUMI_CONFIG_PASSPHRASE" else str(tmp_path / "pass")
    }
    refused = run(
        project, home, "stack", "init", "team-prod", PULUMI_BACKEND_URL=backend.as_uri(), **exported
    )
    assert refused.returncode == 2
    assert "published passphrase" in refused.stderr
    assert not (backend / ".pulumi" / "stacks" / "asm-serverless-gateway" / "team-prod.json").exists()
    assert not (project.dir / "stacks" / "Pulumi.team-prod.yaml").exists()


def test_a_stack_made_with_plain_pulumi_under_the_published_passphrase_never_runs(
    project: EngineProject, tmp_path: Path
) -> None:
    """The user's own `pulumi`, past scripts/pulumi.sh: it creates the stack; the program refuses it."""
    backend = tmp_path / "team-backend"
    backend.mkdir()
    env = {**project.env, "PULUMI_BACKEND_URL": backend.as_uri(), "PULUMI_CONFIG_PASSPHRASE": "local"}

    def pulumi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            cwd=project.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    assert pulumi("stack", "init", "team-prod").returncode == 0
    salted = yaml.safe_load(project.stack_file("team-prod").read_text())
    assert "encryptionsalt" in salted
    local = yaml.safe_load(project.stack_file("local").read_text())
    project.stack_file("team-prod").write_text(yaml.safe_dump({**salted, "config": local["config"]}))
    refused = pulumi("preview", "--stack", "team-prod")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "encrypts its secrets with the `local` stack's published passphrase" in output, output
    exported = pulumi("stack", "export", "--stack", "team-prod")
    assert '"resources"' not in exported.stdout or "IstioGateway" not in exported.stdout


def test_the_two_cluster_example_previews_and_renders_each_cluster_as_the_readme_says(
    project: EngineProject, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    example = ("--stack", "local", "--config-file", "stacks/examples/Pulumi.two-clusters.yaml")
    preview = run(project, home, "preview", *example)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert "placement forecast in cluster c-local-west" in preview.stdout
    rendered = run(project, home, "up", "--yes", *example)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    west = project.dir / "rendered" / "cluster-c-local-west" / "1-manifest"
    node = yaml.safe_load((west / "v1-node-default-gateway-west-0.yaml").read_text())
    assert node["metadata"]["labels"] == {"mykey4pod": "asmgateway"}
    gateway = yaml.safe_load(
        next((project.dir / "rendered" / "mesh" / "1-manifest").glob("*istiogateway*")).read_text()
    )
    assert gateway["spec"]["clusterIds"] == ["c-local", "c-local-west"]
    assert gateway["spec"]["overrides"] == {
        "c-local-west": {"replicaCount": 1, "minReplicas": 1, "maxReplicas": 10}
    }
