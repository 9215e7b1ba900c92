"""The engine's environment: which stacks may use the published passphrase, where plugins go,
and how the wrapper runs the engine (signals, its private temporary folder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from go_tools import toolchain


@pytest.mark.parametrize(
    ("args", "stack"),
    [
        (["up", "--stack", "prod"], "prod"),
        (["up", "-s", "prod"], "prod"),
        (["preview", "--stack=prod"], "prod"),
        (["stack", "init", "prod"], "prod"),
        (["stack", "ls"], None),
        (["up", "-sprod"], "prod"),
        (["up", "-s=prod"], "prod"),
        (["stack", "init", "--copy-config-from", "local", "prod"], "prod"),
        (["-C", "elsewhere", "stack", "init", "prod"], "prod"),
        # The engine reads a repeated flag's last value.
        (["stack", "init", "--stack", "local", "--stack", "prodx"], "prodx"),
        (["up", "-s", "local", "--stack=prodx"], "prodx"),
        (["stack", "select", "--create", "prodx"], "prodx"),
        (["stack", "select", "-c", "prodx"], "prodx"),
        (["stack", "select", "prod"], "prod"),
        # Short flags in one word, as cobra reads them.
        (["stack", "select", "-csprodx"], "prodx"),
        (["stack", "select", "-cs", "prodx"], "prodx"),
        (["up", "-ysprod"], "prod"),
        (["up", "-Cdir", "--yes"], None),
        (["up", "-m", "no -s here", "--stack", "prod"], "prod"),
    ],
)
def test_the_stack_a_command_line_names(args: list[str], stack: str | None) -> None:
    assert toolchain.stack_named(args) == stack


def test_only_the_local_stack_gets_the_published_passphrase() -> None:
    env: dict[str, str] = {}
    assert toolchain.secrets_problem("local", ["up"], env) is None
    assert env["PULUMI_CONFIG_PASSPHRASE"] == "local"


def test_the_local_stack_gets_its_own_passphrase_whatever_is_exported_for_another() -> None:
    env = {"PULUMI_CONFIG_PASSPHRASE_FILE": "/home/me/prod.passphrase"}
    assert toolchain.secrets_problem("local", ["up"], env) is None
    assert env == {"PULUMI_CONFIG_PASSPHRASE": "local"}


def test_a_plugin_install_cut_short_does_not_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path))
    binary = toolchain.plugin_binary("alicloud", "4.0.0")
    binary.parent.mkdir(parents=True)
    binary.write_text("half of it")
    partial = binary.parent.with_name(binary.parent.name + ".partial")
    partial.touch()
    assert not toolchain.plugin_installed("alicloud", "4.0.0")
    partial.unlink()
    assert toolchain.plugin_installed("alicloud", "4.0.0")


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


def test_plugins_go_to_the_projects_cache_not_the_users_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PULUMI_HOME", raising=False)
    monkeypatch.setenv("ASM_GATEWAY_TOOLS_CACHE", str(tmp_path / "cache"))
    assert toolchain.pulumi_home() == tmp_path / "cache" / "pulumi-home"
    assert toolchain.kubernetes_plugin().is_relative_to(tmp_path / "cache")
    # Unless the user asks for another home.
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "theirs"))
    assert toolchain.pulumi_home() == tmp_path / "theirs"


def test_the_users_login_still_chooses_the_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".pulumi").mkdir(parents=True)
    (home / ".pulumi" / "credentials.json").write_text(
        '{"current": "https://pulumi.example.com", "accessTokens": {"https://pulumi.example.com": "pul-x"}}'
    )
    monkeypatch.setenv("HOME", str(home))
    for name in ("PULUMI_HOME", "PULUMI_BACKEND_URL", "PULUMI_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(toolchain, "engine_bin_dir", lambda: tmp_path)
    env = toolchain.engine_environment()
    assert env["PULUMI_BACKEND_URL"] == "https://pulumi.example.com"
    assert env["PULUMI_ACCESS_TOKEN"] == "pul-x"
    assert not Path(env["PULUMI_HOME"]).is_relative_to(home / ".pulumi")


def test_the_projects_own_state_folder_holds_the_local_stack_only() -> None:
    inside = {"PULUMI_BACKEND_URL": toolchain.PROJECT_STATE.resolve().as_uri()}
    assert toolchain.backend_problem("local", inside) is None
    problem = toolchain.backend_problem("prod", inside)
    assert problem is not None and "stack 'prod'" in problem and "scripts/pulumi.sh login" in problem
    assert toolchain.backend_problem("prod", {"PULUMI_BACKEND_URL": "file:///srv/pulumi-state"}) is None
    assert toolchain.backend_problem("prod", {"PULUMI_BACKEND_URL": "s3://team-state"}) is None


@pytest.mark.parametrize(
    "backend", ["file:///srv/pulumi-state", "s3://team-state", "gs://team-state", "azblob://team-state"]
)
def test_the_published_passphrase_is_refused_for_another_stack_whatever_the_backend(
    backend: str, tmp_path: Path
) -> None:
    (tmp_path / "pass").write_text("local\n")
    for env in (
        {"PULUMI_BACKEND_URL": backend, "PULUMI_CONFIG_PASSPHRASE": "local"},
        {"PULUMI_BACKEND_URL": backend, "PULUMI_CONFIG_PASSPHRASE_FILE": str(tmp_path / "pass")},
    ):
        for args in (["stack", "init", "team-prod"], ["up", "--stack", "team-prod"]):
            problem = toolchain.secrets_problem("team-prod", args, dict(env))
            assert problem is not None and "published passphrase" in problem, (env, args)
    # With a secrets provider of its own, the exported passphrase is not used.
    assert (
        toolchain.secrets_problem(
            "team-prod",
            ["stack", "init", "team-prod", "--secrets-provider=awskms://alias/x"],
            {"PULUMI_BACKEND_URL": backend, "PULUMI_CONFIG_PASSPHRASE": "local"},
        )
        is None
    )


def test_pulumi_clouds_own_secrets_count_but_not_a_stack_it_holds_under_a_passphrase(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(toolchain, "PROJECT_DIR", tmp_path)
    cloud = {"PULUMI_BACKEND_URL": "https://api.pulumi.example.com", "PULUMI_CONFIG_PASSPHRASE": "local"}
    assert toolchain.secrets_problem("team-prod", ["up", "--stack", "team-prod"], dict(cloud)) is None
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.team-prod.yaml").write_text("encryptionsalt: v1:abc\nconfig: {}\n")
    assert toolchain.secrets_problem("team-prod", ["up", "--stack", "team-prod"], dict(cloud)) is not None


def test_an_empty_passphrase_or_a_default_provider_off_cloud_is_no_secret_of_a_stacks_own() -> None:
    assert toolchain.secrets_problem("team-prod", ["up"], {"PULUMI_CONFIG_PASSPHRASE": ""}) is not None
    s3 = {"PULUMI_BACKEND_URL": "s3://team-state", "PULUMI_CONFIG_PASSPHRASE": "local"}
    args = ["stack", "init", "team-prod", "--secrets-provider", "default"]
    assert toolchain.secrets_problem("team-prod", args, dict(s3)) is not None


@pytest.mark.parametrize("where", ["", "/", "/.pulumi-state/prod", "/.pulumi-state?no_legacy=true"])
def test_no_other_stack_keeps_its_state_anywhere_in_the_checkout(where: str) -> None:
    url = "FILE://" + str(toolchain.PROJECT_DIR.resolve()) + where
    assert toolchain.backend_problem("prod", {"PULUMI_BACKEND_URL": url}) is not None


# An engine stand-in: says which signals it got, then exits (0 after a SIGINT or SIGTERM).
FAKE_ENGINE = """
import os, signal, sys, time
got = []
def note(signum, _):
    got.append(signal.Signals(signum).name)
    os.write(1, (" ".join(got) + "\\n").encode())  # not print: the signal may land inside one
    if signum in (signal.SIGINT, signal.SIGTERM):
        time.sleep(0.5)  # a graceful cancel takes a moment; a second signal would cut it short
        sys.exit(0)
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
print("ready", flush=True)
time.sleep(30)
"""
WRAPPER = """
import sys
from pathlib import Path
from go_tools.toolchain import _run_until_done
folder = Path(sys.argv[1])
sys.exit(_run_until_done([sys.executable, "-c", sys.argv[2]], {"PATH": ""}, folder))
"""


def _wrapped(tmp_path: Path) -> subprocess.Popen[str]:
    wrapper = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(tmp_path), FAKE_ENGINE],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL,  # no terminal: the engine gets its own process group
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert wrapper.stdout is not None and wrapper.stdout.readline().strip() == "ready"
    return wrapper


@pytest.mark.parametrize(
    ("sent", "received"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGTERM")]
)
def test_without_a_terminal_each_signal_reaches_the_engine_once(
    tmp_path: Path, sent: signal.Signals, received: str
) -> None:
    """Sent to the wrapper's whole group (as `timeout` or CI do): the engine gets it once, as a
    signal it handles, and cancels gracefully."""
    wrapper = _wrapped(tmp_path)
    os.killpg(wrapper.pid, sent)
    out, err = wrapper.communicate(timeout=20)
    assert out.split() == [received], err
    assert wrapper.returncode == 0


def test_a_killed_wrapper_still_cancels_the_engine(tmp_path: Path) -> None:
    wrapper = _wrapped(tmp_path)
    pids = (tmp_path / ".pids").read_text().split()
    engine = int(pids[1])
    wrapper.kill()
    wrapper.wait(timeout=10)
    assert wrapper.stdout is not None and wrapper.stdout.read().split() == ["SIGTERM"]
    deadline = time.monotonic() + 10
    while toolchain._alive(engine):
        assert time.monotonic() < deadline, "the engine outlived its wrapper"
        time.sleep(0.1)


def test_an_engine_killed_by_a_signal_exits_as_a_shell_reports_it(tmp_path: Path) -> None:
    wrapper = _wrapped(tmp_path)
    os.kill(int((tmp_path / ".pids").read_text().split()[1]), signal.SIGKILL)
    assert wrapper.wait(timeout=20) == 128 + signal.SIGKILL


def test_a_runs_folder_someone_else_can_enter_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "runs"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setattr(toolchain, "runs_folder", lambda: shared)
    with toolchain.private_temp() as folder:
        assert not folder.is_relative_to(shared)
        assert toolchain._owned_privately(folder)
    assert not folder.exists() and not folder.parent.exists()
