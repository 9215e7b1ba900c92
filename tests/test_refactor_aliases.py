"""A refactor inside the component keeps every URN, proven with the real engine.

The mesh's Kubernetes provider moved from the top component into
`MeshControlPlane` (formerly `ServiceMesh`). Deploy the layout from before the
move, then preview the current code against the same state.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from engine_project import ROOT, EngineProject, Step, beside_the_rebalancer, changed_steps

pytestmark = pytest.mark.engine

LAYOUT_BEFORE_MESH_MOVE = "b28e99860bc8faaae726816d852b6268259906ac"


def checkout(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=False)
    if archive.returncode != 0:
        pytest.skip(f"commit {revision[:12]} is not in this clone: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def test_moving_the_mesh_provider_previews_as_no_replacement(tmp_path: Path) -> None:
    before = EngineProject(tmp_path, checkout(LAYOUT_BEFORE_MESH_MOVE, tmp_path / "old"), "before")
    before.stack("local").up()

    after = EngineProject(tmp_path, ROOT, "after")
    steps = changed_steps(after.stack("local"))
    # Only the new, empty wrapper component is created; the provider and the
    # gateway it applied keep their URNs. (Later changes to the gateway's spec
    # may show as in-place updates.)
    assert [s for s in beside_the_rebalancer(steps) if s.op != "update"] == [
        Step("create", "asm-serverless-gateway:index:MeshControlPlane", "asm-gateway-mesh")
    ]


def test_without_the_alias_the_same_move_would_delete_the_provider(tmp_path: Path) -> None:
    before = EngineProject(tmp_path, checkout(LAYOUT_BEFORE_MESH_MOVE, tmp_path / "old"), "before")
    before.stack("local").up()

    after = EngineProject(tmp_path, ROOT, "after")
    mesh = after.dir / "components" / "mesh.py"
    text = mesh.read_text()
    without_alias = text.replace(", aliases=[pulumi.Alias(parent=opts.parent if opts else None)]", "")
    assert without_alias != text, "the alias this test removes is gone from components/mesh.py"
    mesh.write_text(without_alias)
    ops = {(s.op, s.type) for s in changed_steps(after.stack("local"))}
    # The negative control: what the alias saves the user from.
    assert ("delete", "pulumi:providers:kubernetes") in ops, ops
