"""Set-up gets the provider plugins as a connected user does, and builds only where that fails.

The download is proven against archives served from a local HTTP server, which
the engine's own `PULUMI_PLUGIN_DOWNLOAD_URL_OVERRIDES` points it at (a team's
plugin mirror is set the same way). The Kubernetes archive holds the provider
built here; the Alibaba Cloud archive holds a stand-in file (nothing runs it).
"""

from __future__ import annotations

import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_project import ROOT, engine_env

from go_tools import toolchain

pytestmark = pytest.mark.engine

KUBERNETES = f"pulumi-resource-kubernetes-v{toolchain.KUBERNETES_PROVIDER_VERSION}-linux-amd64.tar.gz"
ALICLOUD = f"pulumi-resource-alicloud-v{toolchain.ALICLOUD_PROVIDER_VERSION}-linux-amd64.tar.gz"


def archive(name: str, content: bytes) -> bytes:
    """A plugin release archive: the binary at the top level, as Pulumi's releases have it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(content), 0o755
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class Mirror(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    requested: list[str]


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        mirror = self.server
        assert isinstance(mirror, Mirror)
        name = self.path.rsplit("/", 1)[-1]
        mirror.requested.append(name)
        body = mirror.files.get(name)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    engine_env(Path("/nonexistent"))  # skips (or fails under scripts/test.sh) if the engine is not built
    server = Mirror(("127.0.0.1", 0), MirrorHandler)
    server.requested = []
    server.files = {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def set_up_engine(home: Path, overrides: str) -> subprocess.CompletedProcess[str]:
    """`scripts/setup.sh`'s engine step, with a plugin home of its own and plugins fetched as told."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    env.update(
        PULUMI_HOME=str(home),
        ASM_GATEWAY_TOOLS_CACHE=str(toolchain.cache_root()),
        PULUMI_PLUGIN_DOWNLOAD_URL_OVERRIDES=overrides,
    )
    return subprocess.run(
        [sys.executable, "-m", "go_tools.toolchain", "build", "engine"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def installed(home: Path, name: str, version: str) -> Path:
    return home / "plugins" / f"resource-{name}-v{version}" / f"pulumi-resource-{name}"


def test_plugins_are_downloaded_at_the_pinned_versions_and_nothing_is_built(
    mirror: Mirror, tmp_path: Path
) -> None:
    # Set-up may have found the plugin installed and built nothing: build (or find) it here.
    built = toolchain.KUBERNETES_PROVIDER.build() / toolchain.KUBERNETES_PROVIDER.name
    stand_in = b"#!/bin/sh\necho stand-in for the alicloud provider\n"
    mirror.files = {
        KUBERNETES: archive("pulumi-resource-kubernetes", built.read_bytes()),
        ALICLOUD: archive("pulumi-resource-alicloud", stand_in),
    }
    home = tmp_path / "home"
    result = set_up_engine(home, f".*=http://127.0.0.1:{mirror.server_address[1]}")
    print("\n" + result.stderr)
    assert result.returncode == 0, result.stderr
    assert sorted(set(mirror.requested)) == sorted([ALICLOUD, KUBERNETES])
    assert f"plugin kubernetes v{toolchain.KUBERNETES_PROVIDER_VERSION}: downloaded" in result.stderr
    assert f"plugin alicloud v{toolchain.ALICLOUD_PROVIDER_VERSION}: downloaded" in result.stderr
    assert "building" not in result.stderr
    kubernetes = installed(home, "kubernetes", toolchain.KUBERNETES_PROVIDER_VERSION)
    assert kubernetes.read_bytes() == built.read_bytes()
    assert installed(home, "alicloud", toolchain.ALICLOUD_PROVIDER_VERSION).read_bytes() == stand_in

    again = set_up_engine(home, f".*=http://127.0.0.1:{mirror.server_address[1]}")
    assert "kubernetes" in again.stderr and ": installed" in again.stderr
    assert len(mirror.requested) == 2, "a second set-up downloaded again"


def test_where_the_download_fails_the_kubernetes_provider_is_built_and_the_rest_is_named(
    mirror: Mirror, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    result = set_up_engine(home, f".*=http://127.0.0.1:{mirror.server_address[1]}")  # serves nothing: 404s
    print("\n" + result.stderr)
    assert result.returncode == 0, result.stderr
    assert KUBERNETES in mirror.requested
    assert "the download failed" in result.stderr
    assert (
        f"plugin kubernetes v{toolchain.KUBERNETES_PROVIDER_VERSION}: built from its Go module"
        in result.stderr
    )
    assert "plugin alicloud" in result.stderr and "not installed: the download failed" in result.stderr
    built = toolchain.KUBERNETES_PROVIDER.bin_dir() / toolchain.KUBERNETES_PROVIDER.name
    assert (
        installed(home, "kubernetes", toolchain.KUBERNETES_PROVIDER_VERSION).read_bytes()
        == built.read_bytes()
    )
