"""Which stacks may use the published `local` passphrase (tools/toolchain.py)."""

from __future__ import annotations

import pytest

from tools import toolchain


@pytest.mark.parametrize(
    ("args", "stack"),
    [
        (["up", "--stack", "prod"], "prod"),
        (["up", "-s", "prod"], "prod"),
        (["preview", "--stack=prod"], "prod"),
        (["stack", "init", "prod"], "prod"),
        (["stack", "ls"], None),
    ],
)
def test_the_stack_a_command_line_names(args: list[str], stack: str | None) -> None:
    assert toolchain.stack_named(args) == stack


def test_only_the_local_stack_gets_the_published_passphrase() -> None:
    env: dict[str, str] = {}
    assert toolchain.secrets_problem("local", ["up"], env) is None
    assert env["PULUMI_CONFIG_PASSPHRASE"] == "local"


def test_another_stack_without_a_passphrase_is_refused_with_how_to_set_one() -> None:
    env = {"PULUMI_BACKEND_URL": "file:///tmp/state"}
    problem = toolchain.secrets_problem("prod", ["stack", "init", "prod"], env)
    assert problem is not None
    assert (
        "stack 'prod'" in problem
        and "PULUMI_CONFIG_PASSPHRASE" in problem
        and "--secrets-provider" in problem
    )
    assert "PULUMI_CONFIG_PASSPHRASE" not in env


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["up"], {"PULUMI_CONFIG_PASSPHRASE": "their own"}),
        (["up"], {"PULUMI_CONFIG_PASSPHRASE_FILE": "/run/secrets/pass"}),
        (["stack", "init", "prod", "--secrets-provider=awskms://alias/x"], {}),
        (["up"], {"PULUMI_BACKEND_URL": "https://pulumi.example.com"}),
    ],
)
def test_another_stack_with_its_own_secrets_is_let_through(args: list[str], env: dict[str, str]) -> None:
    assert toolchain.secrets_problem("prod", args, dict(env)) is None
