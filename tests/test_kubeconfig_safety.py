"""The node-marks provider's kubeconfig handling: nothing of it in messages, no key on disk."""

from __future__ import annotations

import base64
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from node_marks_plugin.cluster import NodeMarksError, api_client

TOKEN = "tok-5e1f-RECOGNISABLE-9a0b"


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("client-cert")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
            "-keyout", str(folder / "k.pem"), "-out", str(folder / "c.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key, cert = (folder / "k.pem").read_bytes(), (folder / "c.pem").read_bytes()
    (folder / "k.pem").unlink()
    return key, cert


def kubeconfig(key: bytes, cert: bytes, **user: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [
                {
                    "name": "u",
                    "user": {
                        "token": TOKEN,
                        "client-certificate-data": base64.b64encode(cert).decode(),
                        "client-key-data": base64.b64encode(key).decode(),
                        **user,
                    },
                }
            ],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
    )


def files_in_temp_holding(needle: bytes) -> list[Path]:
    found = []
    for path in Path(tempfile.gettempdir()).iterdir():
        try:
            if path.is_file() and needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def test_a_kubeconfigs_client_key_is_never_written_to_disk(client_key: tuple[bytes, bytes]) -> None:
    key, cert = client_key
    client = api_client(kubeconfig(key, cert), "clusterKubeconfig")
    key_file = client.configuration.key_file
    # The client reads it from an in-memory file of this process.
    assert key_file.startswith("/proc/") and Path(key_file).read_bytes() == key
    assert files_in_temp_holding(key.splitlines()[5]) == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"users: [{{token: {TOKEN}: x\n", "not valid YAML at line 1"),
        (f"token: {TOKEN}\n", "not a kubeconfig"),
        (
            yaml.safe_dump(
                {"clusters": [{"name": "c", "cluster": {}}], "users": [{"user": {"token": TOKEN}}]}
            ),
            "the Kubernetes client refused it",
        ),
    ],
)
def test_a_broken_kubeconfig_is_named_by_what_is_wrong_never_by_what_it_holds(text: str, says: str) -> None:
    with pytest.raises(NodeMarksError) as refused:
        api_client(text, "clusterKubeconfig")
    assert says in str(refused.value) and "clusterKubeconfig" in str(refused.value)
    assert TOKEN not in str(refused.value) and "RECOGNISABLE" not in str(refused.value)
    # Not chained to the parser's or client's own error, which may quote the text.
    error = refused.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
