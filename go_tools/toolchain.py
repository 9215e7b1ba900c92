"""Build, cache and locate the Go tools that the engine and cluster tests run.

The engine (`pulumi` and its Python language host) and the local Kubernetes
control plane are built from their Go modules, at the versions pinned by the
`go.mod` in each folder under `go_tools/`, into a cache outside the repository.
A build is keyed by the hash of that folder and the Go version, so a second
run (and CI after a session) finds it and takes seconds; only a new machine
pays for the build. A `pulumi` already on PATH is used as it is. Provider
plugins are installed as a connected user gets them, with `pulumi plugin
install` at the SDKs' versions; only the Kubernetes provider is built from its
Go module, where that download fails (an air-gapped machine).

    python -m go_tools.toolchain build [engine|cluster|all]   # build what is missing
    python -m go_tools.toolchain env                          # print the engine's exports
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
PROJECT_DIR = TOOLS_DIR.parent


def pinned_version(pin_file: Path, module: str) -> str:
    """The version a pin file states for a module: a `go.mod` require, or `name==version`.

    Every tool's version is written once, where its build reads it; the rest of
    the project asks here.
    """
    for line in pin_file.read_text().splitlines():
        words = line.replace("==", " ").split()
        if words[:1] == ["require"]:
            words = words[1:]
        if len(words) >= 2 and words[0] == module:
            return words[1].removeprefix("v")
    raise LookupError(f"{pin_file} pins no version of {module}")


PULUMI_VERSION = pinned_version(TOOLS_DIR / "pulumi-cli" / "go.mod", "github.com/pulumi/pulumi/pkg/v3")
KUBERNETES_VERSION = pinned_version(TOOLS_DIR / "kube-control-plane" / "go.mod", "k8s.io/kubernetes")
# The provider plugin must be the release of the SDK the program imports; its
# go.mod pins the pseudo-version of that release's commit.
KUBERNETES_PROVIDER_VERSION = pinned_version(PROJECT_DIR / "requirements.txt", "pulumi-kubernetes")
# Likewise the Alibaba Cloud provider: the SDK's version is the plugin's.
ALICLOUD_PROVIDER_VERSION = pinned_version(PROJECT_DIR / "requirements.txt", "pulumi-alicloud")
GO_TOOLCHAIN = "go1.27.3"
# The passphrase of the `local` stack, which holds no cloud secrets. It is
# published, so no other stack may use it (see `secrets_problem`).
LOCAL_STACK = "local"
LOCAL_PASSPHRASE = "local"


def cache_root() -> Path:
    """Where built tools live: outside the repo, so a fresh clone reuses them."""
    explicit = os.environ.get("ASM_GATEWAY_TOOLS_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "asm-serverless-gateway" / "tools"


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Modules that ask for a newer Go fetch that toolchain from the module proxy.
    env.setdefault("GOTOOLCHAIN", GO_TOOLCHAIN)
    env.setdefault("GOFLAGS", "-mod=readonly")
    return env


def _module_dir_of(module_path: str, module_dir: Path) -> Path:
    """The unpacked source of a dependency, as the Go build list resolves it."""
    out = subprocess.run(
        ["go", "list", "-m", "-json", module_path],
        cwd=module_dir,
        env=go_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    if "Dir" not in info:
        subprocess.run(["go", "mod", "download", module_path], cwd=module_dir, env=go_env(), check=True)
        return _module_dir_of(module_path, module_dir)
    return Path(info["Dir"])


@dataclass(frozen=True)
class GoTool:
    """One binary built from a module folder under tools/."""

    name: str
    module: str  # folder under tools/
    package: str  # what `go build` builds, as seen from that folder
    ldflags: tuple[str, ...] = ()
    # Writes generated files into the build copy before `go build`.
    prepare: Callable[[Path], None] | None = None
    # Extra files to install beside the binary: name -> (module path, file in module).
    companions: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Settings of the go command for this build only, e.g. GOEXPERIMENT.
    build_env: tuple[tuple[str, str], ...] = ()

    @property
    def source(self) -> Path:
        return TOOLS_DIR / self.module

    def key(self) -> str:
        digest = hashlib.sha256()
        digest.update(_go_version().encode())
        digest.update(repr((self.name, self.package, self.ldflags, self.companions)).encode())
        if self.build_env:  # only where set: every other tool keeps the key it was cached under
            digest.update(repr(self.build_env).encode())
        for relative, content in _source_files(self.source):
            digest.update(relative.encode())
            digest.update(content)
        return f"{self.name}-{digest.hexdigest()[:16]}"

    def bin_dir(self) -> Path:
        return cache_root() / self.key() / "bin"

    def built(self) -> bool:
        return (self.bin_dir() / self.name).is_file()

    def build(self, step: str = "") -> Path:
        """Build unless cached; `step` ("[2/3]") says how far along a set of builds this is."""
        if self.built():
            return self.bin_dir()
        target = self.bin_dir()
        with tempfile.TemporaryDirectory(prefix=f"build-{self.name}-") as tmp:
            work = Path(tmp) / "src"
            shutil.copytree(self.source, work)
            if self.prepare:
                self.prepare(work)
            out = Path(tmp) / "bin"
            out.mkdir()
            cmd = ["go", "build", "-trimpath", "-o", str(out / self.name)]
            if self.ldflags:
                cmd += ["-ldflags", " ".join(self.ldflags)]
            _run_with_progress(
                [*cmd, self.package], work, f"{step} building {self.name}".strip(), dict(self.build_env)
            )
            for file_name, (module_path, rel) in self.companions.items():
                src = _module_dir_of(module_path, work) / rel
                shutil.copyfile(src, out / file_name)
                (out / file_name).chmod(0o755)
            target.parent.mkdir(parents=True, exist_ok=True)
            # Rename last so that an interrupted build never looks finished.
            staging = target.parent / "bin.partial"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.move(str(out), staging)
            staging.rename(target)
        return target


PROGRESS_EVERY_SECONDS = 30.0


def _run_with_progress(
    cmd: list[str], cwd: Path, what: str, extra_env: Mapping[str, str] | None = None
) -> None:
    """Run a long build, saying what it is and how long it has taken, so it never looks hung."""
    start = time.monotonic()
    print(f"{what} (a cold build takes minutes) ...", file=sys.stderr, flush=True)
    process = subprocess.Popen(cmd, cwd=cwd, env={**go_env(), **(extra_env or {})})
    while True:
        try:
            process.wait(timeout=PROGRESS_EVERY_SECONDS)
            break
        except subprocess.TimeoutExpired:
            print(f"  {what}: {time.monotonic() - start:.0f} s so far", file=sys.stderr, flush=True)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, cmd)
    print(f"  {what}: done in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


# Both are asked for every time a tool's key is; neither changes within a run.
@functools.cache
def _source_files(source: Path) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (path.relative_to(source).as_posix(), path.read_bytes())
        for path in sorted(source.rglob("*"))
        if path.is_file() and not path.name.endswith("-embed.json")
    )


@functools.cache
def _go_version() -> str:
    return subprocess.run(
        ["go", "env", "GOVERSION"], env=go_env(), check=True, capture_output=True, text=True
    ).stdout.strip()


def _stamp_kubernetes_schema(work: Path) -> None:
    """Do what upstream's `go generate` does: embed the schema with its version."""
    module_dir = _module_dir_of("github.com/pulumi/pulumi-kubernetes/provider/v4", work)
    cmd_dir = module_dir / "cmd" / "pulumi-resource-kubernetes"
    schema = json.loads((cmd_dir / "schema.json").read_text())
    schema["version"] = KUBERNETES_PROVIDER_VERSION
    (work / "schema-embed.json").write_text(json.dumps(schema))
    mapping = json.loads((cmd_dir / "terraform-mapping.json").read_text())
    (work / "terraform-mapping-embed.json").write_text(json.dumps(mapping))


PULUMI_CLI = GoTool(
    name="pulumi",
    module="pulumi-cli",
    package="github.com/pulumi/pulumi/pkg/v3/cmd/pulumi",
    ldflags=(f"-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v{PULUMI_VERSION}",),
)

PYTHON_LANGUAGE_HOST = GoTool(
    name="pulumi-language-python",
    module="pulumi-language-python",
    package=".",
    ldflags=(f"-X main.version=v{PULUMI_VERSION}",),
    companions={
        "pulumi-language-python-exec": (
            "github.com/pulumi/pulumi/sdk/v3",
            "python/cmd/pulumi-language-python-exec",
        ),
        # Serves Pulumi dynamic providers: the earlier versions' node marks
        # (components/node_marks.py) are still deleted through it on upgrade. The
        # engine looks for it beside `pulumi`, as the official install lays it out.
        "pulumi-resource-pulumi-python": (
            "github.com/pulumi/pulumi/sdk/v3",
            "python/dist/pulumi-resource-pulumi-python",
        ),
    },
)

KUBERNETES_PROVIDER = GoTool(
    name="pulumi-resource-kubernetes",
    module="kubernetes-provider",
    package=".",
    ldflags=(
        "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version="
        f"{KUBERNETES_PROVIDER_VERSION}",
    ),
    prepare=_stamp_kubernetes_schema,
)


def _kubernetes_version_flags() -> tuple[str, ...]:
    """Stamp the release into component-base, or clients see v0.0.0."""
    major, minor, _ = KUBERNETES_VERSION.split(".")
    package = "k8s.io/component-base/version"
    return (
        f"-X {package}.gitVersion=v{KUBERNETES_VERSION}",
        f"-X {package}.gitMajor={major}",
        f"-X {package}.gitMinor={minor}",
        f"-X {package}.gitTreeState=clean",
    )


ETCD = GoTool(
    name="etcd",
    module="kube-control-plane",
    package="go.etcd.io/etcd/server/v3",
)

KUBE_APISERVER = GoTool(
    name="kube-apiserver",
    module="kube-control-plane",
    package="k8s.io/kubernetes/cmd/kube-apiserver",
    ldflags=_kubernetes_version_flags(),
)

KUBE_SCHEDULER = GoTool(
    name="kube-scheduler",
    module="kube-control-plane",
    package="k8s.io/kubernetes/cmd/kube-scheduler",
    ldflags=_kubernetes_version_flags(),
)

# For its Deployment, ReplicaSet, garbage collector, node lifecycle and taint
# eviction controllers: the cluster tests scale gateway Deployments and let
# the real controllers make, roll and evict the pods.
KUBE_CONTROLLER_MANAGER = GoTool(
    name="kube-controller-manager",
    module="kube-control-plane",
    package="k8s.io/kubernetes/cmd/kube-controller-manager",
    ldflags=_kubernetes_version_flags(),
)

DESCHEDULER_VERSION = pinned_version(TOOLS_DIR / "descheduler" / "go.mod", "sigs.k8s.io/descheduler")

# The rebalancer the stack deploys per cluster (components/rebalancer.py): the
# live tests run this build against the control plane, as they run kube-scheduler.
DESCHEDULER = GoTool(
    name="descheduler",
    module="descheduler",
    package="sigs.k8s.io/descheduler/cmd/descheduler",
    ldflags=(f"-X sigs.k8s.io/descheduler/pkg/version.version=v{DESCHEDULER_VERSION}",),
    # Its kube-openapi wraps the encoding/json/v2 of Go 1.25; Go 1.27's differs, so build
    # with the v1 JSON that kube-openapi then uses instead.
    build_env=(("GOEXPERIMENT", "nojsonv2"),),
)

GROUPS: dict[str, tuple[GoTool, ...]] = {
    "engine": (PULUMI_CLI, PYTHON_LANGUAGE_HOST, KUBERNETES_PROVIDER),
    "cluster": (ETCD, KUBE_APISERVER, KUBE_SCHEDULER, KUBE_CONTROLLER_MANAGER, DESCHEDULER),
}
GROUPS["all"] = GROUPS["engine"] + GROUPS["cluster"]


def on_user_path(tool: GoTool) -> Path | None:
    """A tool the user already has (the official installer puts it on PATH)."""
    found = shutil.which(tool.name)
    if found and not Path(found).resolve().is_relative_to(cache_root().resolve()):
        return Path(found).parent
    return None


class ToolsMissingError(RuntimeError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(f"not built yet: {', '.join(names)}; run scripts/setup.sh")
        self.names = names


def pulumi_home() -> Path:
    """Where the engine keeps plugins: PULUMI_HOME if the user set it, else this project's cache.

    Never the user's own ~/.pulumi unless they point PULUMI_HOME there: set-up
    installs a provider plugin, and that is not ours to put in their home.
    """
    return Path(os.environ.get("PULUMI_HOME") or cache_root() / "pulumi-home")


def _user_login() -> tuple[str, str | None] | None:
    """The backend (and its token) the user chose with `pulumi login`.

    A login made through `scripts/pulumi.sh` lands in the home it runs
    `pulumi` with (the project's cache, or PULUMI_HOME); one made with the
    user's own `pulumi` lands in PULUMI_HOME or ~/.pulumi. The first found wins.
    """
    homes = [pulumi_home(), Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")]
    for home in dict.fromkeys(homes):
        try:
            credentials = json.loads((home / "credentials.json").read_text())
        except (OSError, ValueError):
            continue
        current = credentials.get("current")
        if current:
            return current, (credentials.get("accessTokens") or {}).get(current)
    return None


def plugin_binary(name: str, version: str) -> Path:
    """Where the engine looks for a resource provider plugin at a version."""
    return pulumi_home() / "plugins" / f"resource-{name}-v{version}" / f"pulumi-resource-{name}"


def plugin_installed(name: str, version: str) -> bool:
    """Installed and complete: the engine marks an install cut short with `<dir>.partial` and
    ignores that plugin."""
    binary = plugin_binary(name, version)
    return binary.is_file() and not binary.parent.with_name(binary.parent.name + ".partial").exists()


def kubernetes_plugin() -> Path:
    """Where the engine looks for the Kubernetes provider the SDK asks for."""
    return plugin_binary("kubernetes", KUBERNETES_PROVIDER_VERSION)


def kubernetes_plugin_installed() -> bool:
    return plugin_installed("kubernetes", KUBERNETES_PROVIDER_VERSION)


# How long a plugin download may take before set-up gives up on it (and, for
# Kubernetes, builds it): an air-gapped machine fails at once or hangs. A slow
# link may need more: ASM_GATEWAY_PLUGIN_DOWNLOAD_TIMEOUT (seconds).
DOWNLOAD_TIMEOUT_SECONDS = int(os.environ.get("ASM_GATEWAY_PLUGIN_DOWNLOAD_TIMEOUT") or 900)


def _plugin_install(pulumi: Path, name: str, version: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`pulumi plugin install resource NAME vVERSION`, into this project's plugin home.

    Without `--file` the engine downloads the official release (or from where
    PULUMI_PLUGIN_DOWNLOAD_URL_OVERRIDES sends it, a mirror of the user's).
    """
    # --reinstall: an earlier install cut short left a partial one behind.
    command = [str(pulumi), "plugin", "install", "resource", name, f"v{version}", "--reinstall", *extra]
    env = {**os.environ, "PULUMI_HOME": str(pulumi_home()), "PULUMI_SKIP_UPDATE_CHECK": "true"}
    try:
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 1, "", f"no answer in {DOWNLOAD_TIMEOUT_SECONDS} s")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def install_kubernetes_plugin(pulumi: Path) -> str:
    """The Kubernetes provider at the SDK's version: downloaded as a connected user gets it, or,
    where the download fails (no network), built from its Go module. Says which."""
    if kubernetes_plugin_installed():
        return "installed"
    downloaded = _plugin_install(pulumi, "kubernetes", KUBERNETES_PROVIDER_VERSION)
    if downloaded.returncode == 0 and kubernetes_plugin_installed():
        return "downloaded"
    print(
        f"kubernetes v{KUBERNETES_PROVIDER_VERSION}: the download failed"
        f" ({_last_line(downloaded.stderr)}); building it from its Go module instead",
        file=sys.stderr,
    )
    provider = KUBERNETES_PROVIDER.build("[3/3]") / KUBERNETES_PROVIDER.name
    installed = _plugin_install(pulumi, "kubernetes", KUBERNETES_PROVIDER_VERSION, "--file", str(provider))
    if installed.returncode != 0:
        raise RuntimeError(f"installing the built Kubernetes provider failed: {_last_line(installed.stderr)}")
    return "built from its Go module"


def install_alicloud_plugin(pulumi: Path) -> str:
    """The Alibaba Cloud provider at the SDK's version, for the stacks with cloud resources.

    Downloaded only: it is not built here (a bridged provider of several
    hundred MB). Where it cannot be downloaded, the `local` stack and stacks
    without cloud resources still run; the others name the plugin as missing.
    """
    if plugin_installed("alicloud", ALICLOUD_PROVIDER_VERSION):
        return "installed"
    downloaded = _plugin_install(pulumi, "alicloud", ALICLOUD_PROVIDER_VERSION)
    if downloaded.returncode == 0 and plugin_installed("alicloud", ALICLOUD_PROVIDER_VERSION):
        return "downloaded"
    return (
        f"not installed: the download failed ({_last_line(downloaded.stderr)}); only stacks that declare"
        " Alibaba Cloud resources need it (see docs/troubleshooting.md)"
    )


def _same_file(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def install_engine() -> Path:
    """Lay the engine out as the official install does, building only what cannot be had.

    `pulumi` is the user's own if it is on PATH, else built with the language
    host beside it (the engine uses a bundled host without a warning). The
    provider plugins go into the plugin home at the versions the SDKs ask for.
    Returns the folder that holds `pulumi`.
    """
    folder = on_user_path(PULUMI_CLI)
    if folder is None:
        folder = PULUMI_CLI.build("[1/3]")
        host = PYTHON_LANGUAGE_HOST.build("[2/3]")
        for built in host.iterdir():
            bundled = folder / built.name
            if not _same_file(built, bundled):
                bundled.unlink(missing_ok=True)
                shutil.copy2(built, bundled)
    pulumi = folder / "pulumi"
    print(
        f"plugin kubernetes v{KUBERNETES_PROVIDER_VERSION}: {install_kubernetes_plugin(pulumi)}",
        file=sys.stderr,
    )
    print(f"plugin alicloud v{ALICLOUD_PROVIDER_VERSION}: {install_alicloud_plugin(pulumi)}", file=sys.stderr)
    return folder


def engine_bin_dir() -> Path:
    """The folder that holds a ready `pulumi`, or an error naming what is missing."""
    folder = on_user_path(PULUMI_CLI) or (PULUMI_CLI.bin_dir() if PULUMI_CLI.built() else None)
    missing = []
    if folder is None:
        missing.append(PULUMI_CLI.name)
    elif not (folder / PYTHON_LANGUAGE_HOST.name).is_file():
        missing.append(PYTHON_LANGUAGE_HOST.name)
    if not kubernetes_plugin_installed():
        missing.append(KUBERNETES_PROVIDER.name)
    if missing or folder is None:
        raise ToolsMissingError(missing)
    return folder


def engine_environment(
    state_dir: Path | None = None, base: dict[str, str] | None = None, default_backend: bool = True
) -> dict[str, str]:
    """The environment in which the engine runs here with no network at all.

    `pulumi` on PATH; state in `state_dir` if given, else in the user's own
    backend if they chose one, else in the project's `.pulumi-state/`; no
    plugin downloads, no update check.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("PULUMI_HOME", str(pulumi_home()))
    env["PATH"] = os.pathsep.join([str(engine_bin_dir()), env.get("PATH", "")])
    if state_dir is not None:
        env["PULUMI_BACKEND_URL"] = state_dir.resolve().as_uri()
    elif "PULUMI_BACKEND_URL" not in env:
        # A user's own backend (env or `pulumi login`) always wins: prod state
        # must never land in a folder git ignores. PULUMI_HOME is the project's,
        # so their login is passed on explicitly.
        login = _user_login()
        if login is None:
            if default_backend:
                env["PULUMI_BACKEND_URL"] = PROJECT_STATE.resolve().as_uri()
        else:
            env["PULUMI_BACKEND_URL"] = login[0]
            if login[1] and "PULUMI_ACCESS_TOKEN" not in env:
                env["PULUMI_ACCESS_TOKEN"] = login[1]
    env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    env.setdefault("PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK", "true")
    return env


# Flags of `pulumi` commands that take a value as the next word.
FLAGS_WITH_VALUES = frozenset(
    {"--stack", "-s", "--copy-config-from", "--secrets-provider", "--teams", "--cwd", "-C", "--color",
     "--tracing", "--config-file", "--message", "-m", "--target", "-t", "--parallel", "-p", "--exec-kind"}
)  # fmt: skip


def _short_flags(arg: str) -> list[tuple[str, str | None]]:
    """A cluster of short flags as cobra reads it (`-ys`, `-csprodx`): each letter, and for one
    that takes a value, that value (the rest of the word, or None: the next word)."""
    flags: list[tuple[str, str | None]] = []
    letters = arg[1:].partition("=")
    for at, letter in enumerate(letters[0]):
        if f"-{letter}" in FLAGS_WITH_VALUES:
            rest = letters[0][at + 1 :] or (letters[2] if letters[1] else None)
            flags.append((letter, rest))
            break
        flags.append((letter, ""))
    return flags


def _flag_value(args: list[str], index: int) -> tuple[str | None, str | None, bool]:
    """The flag at `args[index]`: (its name, its value, whether the value is the next word)."""
    arg = args[index]
    if arg.startswith("--"):
        name, equals, value = arg.partition("=")
        if equals:
            return name, value, False
        if name in FLAGS_WITH_VALUES:
            return name, args[index + 1] if index + 1 < len(args) else None, True
        return name, None, False
    letter, short_value = _short_flags(arg)[-1] if len(arg) > 1 else ("", "")
    if short_value is None:  # the last letter takes the next word
        return f"-{letter}", args[index + 1] if index + 1 < len(args) else None, True
    if short_value:
        return f"-{letter}", short_value, False
    return None, None, False


def positional(args: list[str]) -> list[str]:
    """The words of a command line that are not flags or flag values."""
    words, skip = [], False
    for index, arg in enumerate(args):
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = _flag_value(args, index)[2]
        else:
            words.append(arg)
    return words


def stack_named(args: list[str]) -> str | None:
    """The stack a `pulumi` command line names, read as the engine reads it: the last `--stack X`,
    `-s X`, `-sX`, `--stack=X` or a cluster ending in `s` (`-csprodx`, `-cs X`: a repeated flag's
    last value wins), else the stack that `stack init X` or `stack select X` (with `--create`, it
    makes X) names."""
    named = None
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            name, value, _ = _flag_value(args, index)
            if name in ("--stack", "-s") and value is not None:
                named = value
    if named is not None:
        return named
    words = positional(args)
    if words[:2] in (["stack", "init"], ["stack", "select"]) and len(words) > 2:
        return words[2]
    return None


def current_stack(env: dict[str, str]) -> str | None:
    """The stack `pulumi` would use with none named: the selected one, if any."""
    shown = subprocess.run(
        ["pulumi", "stack", "--show-name", "--non-interactive"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout.strip() or None if shown.returncode == 0 else None


def _has_own_secrets(stack: str, args: list[str], env: dict[str, str]) -> bool:
    """A secrets provider that is not a passphrase: on the command line, in the stack file, or
    Pulumi Cloud's own (an http(s) backend, for a stack not made with a passphrase)."""
    backend = env.get("PULUMI_BACKEND_URL", "")
    cloud = backend.startswith(("https://", "http://"))
    # `default` is the backend's own: Pulumi Cloud's secrets there, a passphrase elsewhere.
    passphrase_like = ("", "passphrase") if cloud else ("", "passphrase", "default")
    for index, arg in enumerate(args):
        chosen = arg.removeprefix("--secrets-provider=") if arg.startswith("--secrets-provider=") else None
        if arg == "--secrets-provider" and index + 1 < len(args):
            chosen = args[index + 1]
        if chosen is not None:
            return chosen not in passphrase_like
    settings = _stack_settings(stack)
    if settings.get("secretsprovider") not in (None, *passphrase_like):
        return True
    # s3://, gs://, azblob:// and file:// backends encrypt with a passphrase by default.
    return cloud and "encryptionsalt" not in settings


PROJECT_STATE = PROJECT_DIR / ".pulumi-state"


def backend_problem(stack: str | None, env: Mapping[str, str]) -> str | None:
    """Why a stack may not keep its state where the environment points, if it may not.

    The project's `.pulumi-state/` is a folder git ignores: `git clean -fdx`
    or a new clone loses it. It holds the `local` stack only.
    """
    backend = env.get("PULUMI_BACKEND_URL", "")
    if stack is None or stack == LOCAL_STACK or not backend.lower().startswith("file://"):
        return None
    folder = Path(urllib.parse.unquote(backend[len("file://") :]).split("?", 1)[0]).expanduser()
    if not folder.resolve().is_relative_to(PROJECT_DIR.resolve()):
        return None
    return (
        f"stack '{stack}' would keep its state in {PROJECT_STATE} (a folder in this checkout that git"
        " ignores, for the `local` stack only). Choose a backend first: scripts/pulumi.sh login"
        " file:///path/outside/the/checkout (or s3://, gs://, azblob://, Pulumi Cloud),"
        " or set PULUMI_BACKEND_URL."
    )


def _passphrase(env: Mapping[str, str]) -> str | None:
    if env.get("PULUMI_CONFIG_PASSPHRASE") is not None:
        return env["PULUMI_CONFIG_PASSPHRASE"]
    path = env.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return f"<unreadable {path}>"  # not the published one: pulumi says what is wrong with it
    return None


def _stack_settings(stack: str) -> dict[str, str]:
    """The stack file's top-level settings that say how its secrets are encrypted."""
    stack_file = PROJECT_DIR / "stacks" / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"
    settings = {}
    if stack_file.is_file():
        for line in stack_file.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key in ("secretsprovider", "encryptionsalt"):
                settings[key] = value.strip()
    return settings


def published_passphrase_problem(stack: str, env: Mapping[str, str]) -> str | None:
    """Why a stack other than `local` may not run: its secrets are under the published passphrase.

    For the program itself, which plain `pulumi` runs too: a stack encrypted
    with a passphrase (its file has `encryptionsalt`) whose config the engine
    decrypted with the published (or an empty) one holds them under it.
    """
    if stack == LOCAL_STACK or "encryptionsalt" not in _stack_settings(stack):
        return None
    if _passphrase(env) not in (LOCAL_PASSPHRASE, ""):
        return None
    return (
        f"stack '{stack}' encrypts its secrets with the `local` stack's published passphrase (or an empty"
        " one), which PULUMI_CONFIG_PASSPHRASE(_FILE) holds here; refusing to run it. Unset it, give the"
        f" stack a passphrase of its own (pulumi stack change-secrets-provider passphrase --stack {stack},"
        " with the new passphrase exported) or a KMS or Vault secrets provider, and set its kubeconfigs"
        " again."
    )


def secrets_problem(stack: str | None, args: list[str], env: dict[str, str]) -> str | None:
    """Sets the `local` stack's passphrase; says why another stack has no way to encrypt secrets.

    The published passphrase must never encrypt a real kubeconfig, so a stack
    other than `local` needs its own passphrase, a secrets provider in its stack
    file (or `--secrets-provider`), or a backend with its own secrets manager.
    """
    if stack is None:
        return None  # pulumi itself asks, or says what is missing
    if stack == LOCAL_STACK:
        # Always its own: a passphrase exported for another stack would not open it.
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        env["PULUMI_CONFIG_PASSPHRASE"] = LOCAL_PASSPHRASE
        return None
    if _has_own_secrets(stack, args, env):
        return None
    passphrase = _passphrase(env)
    if passphrase in (LOCAL_PASSPHRASE, ""):
        return (
            f"stack '{stack}' would encrypt its secrets (kubeconfigs, credentials) with the `local` stack's"
            " published passphrase (or an empty one), which PULUMI_CONFIG_PASSPHRASE(_FILE) holds here."
            " Set a passphrase of its own (kept out of the repo) or a KMS or Vault secrets provider:"
            f" pulumi stack init {stack} --secrets-provider=<url>"
            f" (or pulumi stack change-secrets-provider <url> --stack {stack})."
        )
    if passphrase is not None:
        return None
    return (
        f"stack '{stack}' has no passphrase or secrets provider to encrypt its secrets (kubeconfigs,"
        " credentials) with, and the `local` stack's published passphrase is only for `local`.\n"
        "Set one of: PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE (kept out of the repo),"
        f" or a KMS or Vault secrets provider: pulumi stack init {stack} --secrets-provider=<url>"
        f" (or pulumi stack change-secrets-provider <url> --stack {stack})."
    )


def runs_folder() -> Path:
    """Where each run's private temporary folder lives: in memory where the system has a tmpfs
    (`/dev/shm`), else beside the tools; one per user, readable by them only."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else cache_root()
    return base / f"asm-serverless-gateway-runs-{os.getuid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_runs(runs: Path) -> list[Path]:
    """Remove the folders of runs whose wrapper and engine are both gone (a `kill -9`); the ones
    removed. A folder is named `<wrapper pid>-...` and holds `.pids` (the engine's too)."""
    removed = []
    for folder in runs.iterdir() if runs.is_dir() else ():
        pids = [folder.name.split("-", 1)[0]]
        with contextlib.suppress(OSError):
            pids += (folder / ".pids").read_text().split()
        if not any(p.isdigit() and _alive(int(p)) for p in pids):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _owned_privately(folder: Path) -> bool:
    """Whether `folder` is a real folder of this user that no one else may enter."""
    info = os.lstat(folder)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


@contextlib.contextmanager
def private_temp() -> Iterator[Path]:
    """A temporary folder for one run and everything it starts, removed when the run ends.

    The Kubernetes provider writes each kubeconfig it is configured with to a
    new file in the temporary folder (for Helm) and never removes it: with
    TMPDIR pointed here, those files, tokens and keys in them, go with the run.
    A run killed outright leaves its folder (mode 0700) to the next run's sweep.
    A runs folder that another user made or can enter is not used.
    """
    runs = runs_folder()
    runs.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _owned_privately(runs):
        sweep_runs(runs)
        parent = runs
    else:  # someone else's, or a link: a fresh folder of our own, at an unpredictable name
        parent = Path(tempfile.mkdtemp(prefix="asm-serverless-gateway-runs-"))
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder if parent == runs else parent, ignore_errors=True)


def _die_with_the_wrapper() -> Callable[[], None] | None:
    """For the engine's process, before it starts: SIGTERM (a graceful cancel) when the wrapper
    dies, however (Linux's parent-death signal), so a `kill -9` of the wrapper still stops it."""
    try:
        import ctypes  # noqa: PLC0415 - Linux only, and only here

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


def _run_until_done(command: list[str], env: dict[str, str], folder: Path) -> int:
    """Run the engine as a child and wait for it, passing each signal on once.

    At a terminal, Ctrl-C reaches the engine itself (its foreground group;
    the engine cancels gracefully on the first, forcibly on a second), so the
    wrapper ignores SIGINT there. Without a terminal (CI, `timeout`,
    systemd) the engine runs in its own process group and every signal comes
    through the wrapper, once. SIGHUP becomes SIGTERM, which the engine handles.
    """
    interactive = sys.stdin.isatty()
    passed_on: dict[int, int] = {signal.SIGTERM: signal.SIGTERM, signal.SIGHUP: signal.SIGTERM}
    if not interactive:
        passed_on[signal.SIGINT] = signal.SIGINT
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(passed_on[signum])

    signal.signal(signal.SIGINT, forward if not interactive else signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    # The wrapper runs no threads, so a function before exec is safe here.
    group = None if interactive else 0
    before_exec = _die_with_the_wrapper()
    child = subprocess.Popen(command, env=env, process_group=group, preexec_fn=before_exec)  # noqa: PLW1509
    (folder / ".pids").write_text(f"{os.getpid()} {child.pid}")
    code = child.wait()
    return 128 - code if code < 0 else code  # killed by a signal: as a shell reports it


def run_pulumi(args: list[str]) -> int:
    """`scripts/pulumi.sh`: the engine's environment, the stack's secrets rule, then `pulumi`."""
    words = positional(args)
    command = words[:1]
    # `login` chooses the backend: no default may stand in for it.
    env = engine_environment(default_backend=command not in (["login"], ["logout"]))
    stack = stack_named(args)
    problem = None
    if words[:2] == ["stack", "rename"]:
        problem = "renaming stacks is refused here: a renamed stack keeps the secrets of its old name"
    elif words[:2] == ["stack", "init"] and stack is None:
        problem = "name the stack to create: scripts/pulumi.sh stack init <name>"
    elif (
        stack is None
        and command
        and command[0] in ("up", "preview", "refresh", "destroy", "config", "import")
    ):
        stack = current_stack(env)  # the selected stack, which the checks below are for too
    if stack == LOCAL_STACK and "PULUMI_BACKEND_URL" not in os.environ:
        # A login chooses where other stacks live; `local`, whose secrets are under the
        # published passphrase, stays in the project's folder unless the backend is exported.
        env["PULUMI_BACKEND_URL"] = PROJECT_STATE.resolve().as_uri()
        env.pop("PULUMI_ACCESS_TOKEN", None)
    problem = problem or backend_problem(stack, env) or secrets_problem(stack, args, env)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    PROJECT_STATE.mkdir(exist_ok=True)
    with private_temp() as folder:
        env["TMPDIR"] = str(folder)
        if stack is not None and command in (["up"], ["preview"]):
            _create_if_missing(stack, env)
        return _run_until_done(["pulumi", *args], env, folder)


def _create_if_missing(stack: str, env: dict[str, str]) -> None:
    """`up --stack X` on a fresh clone: create the stack the user named, and only that one."""
    listing = subprocess.run(
        ["pulumi", "stack", "ls", "--json", "--non-interactive"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode == 0 and stack in {s.get("name") for s in json.loads(listing.stdout or "[]")}:
        return
    print(f"creating stack '{stack}' (it did not exist in {env.get('PULUMI_BACKEND_URL', 'your backend')})")
    subprocess.run(
        ["pulumi", "stack", "init", stack, "--no-select", "--non-interactive"],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m go_tools.toolchain", description=__doc__)
    parser.add_argument("action", choices=("build", "env", "pulumi"))
    parser.add_argument("group", nargs="?", default="all", choices=sorted(GROUPS))
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pulumi"]:
        try:
            return run_pulumi(argv[1:])
        except ToolsMissingError as missing:
            print(missing, file=sys.stderr)
            return 1
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            if args.group in ("engine", "all"):
                print(f"engine: {install_engine()}", file=sys.stderr)
            if args.group in ("cluster", "all"):
                tools = GROUPS["cluster"]
                for number, tool in enumerate(tools, 1):
                    print(f"{tool.name}: {tool.build(f'[{number}/{len(tools)}]')}", file=sys.stderr)
            return 0
        # No default backend: exported, it would outlive a later login and take
        # any stack into the checkout's .pulumi-state/.
        env = engine_environment(default_backend=False)
    except ToolsMissingError as missing:
        print(missing, file=sys.stderr)
        return 1
    (PROJECT_DIR / ".pulumi-state").mkdir(exist_ok=True)
    for key in (
        "PATH",
        *(["PULUMI_BACKEND_URL"] if "PULUMI_BACKEND_URL" in env else []),
        "PULUMI_HOME",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION",
        "PULUMI_SKIP_UPDATE_CHECK",
    ):
        print(f"export {key}={shlex.quote(env[key])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
