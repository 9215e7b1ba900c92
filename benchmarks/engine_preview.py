"""Benchmark (not a test): `pulumi preview` of the local stack on the real engine.

Prints the median wall time of `pulumi preview` of the local stack against
`pulumi preview` of an empty Python program on the same engine (the floor),
as a ratio measured in one run; and the time to get the tools (warm: found in
the cache; cold with --cold: built into a fresh tools cache and Go build cache).

    .venv/bin/python benchmarks/engine_preview.py [--runs N] [--cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from engine_project import EngineProject  # noqa: E402

from tools import toolchain  # noqa: E402

EMPTY_PROGRAM = """\
name: empty-floor
runtime:
  name: python
  options:
    toolchain: pip
    virtualenv: .venv
"""


def preview_seconds(project_dir: Path, env: dict[str, str], runs: int) -> float:
    def once() -> float:
        start = time.perf_counter()
        done = subprocess.run(
            ["pulumi", "preview", "--stack", "local", "--non-interactive"],
            cwd=project_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"preview failed in {project_dir}:\n{done.stdout}{done.stderr}")
        return time.perf_counter() - start

    once()  # warm the OS caches and plugin lookups
    return statistics.median(once() for _ in range(runs))


def init_stack(project_dir: Path, env: dict[str, str]) -> None:
    subprocess.run(
        ["pulumi", "stack", "select", "--create", "local", "--non-interactive"],
        cwd=project_dir,
        env=env,
        check=True,
        capture_output=True,
    )


def tool_seconds(cold: bool) -> float:
    env_backup = dict(os.environ)
    start = time.perf_counter()
    if cold:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as gocache:
            os.environ["ASM_GATEWAY_TOOLS_CACHE"] = cache
            os.environ["GOCACHE"] = gocache
            toolchain.install_engine()
    else:
        toolchain.install_engine()
    os.environ.clear()
    os.environ.update(env_backup)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cold", action="store_true", help="also time a cold build of the engine tools")
    args = parser.parse_args()

    if args.cold:
        print(f"engine tools, cold build:  {tool_seconds(cold=True):8.1f} s")
    print(f"engine tools, warm (cached): {tool_seconds(cold=False):6.2f} s")

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        project = EngineProject(tmp, folder="project")
        init_stack(project.dir, project.env)
        empty = tmp / "empty"
        empty.mkdir()
        (empty / "Pulumi.yaml").write_text(EMPTY_PROGRAM)
        (empty / "__main__.py").write_text("import pulumi  # noqa: F401\n")
        (empty / ".venv").symlink_to(ROOT / ".venv")
        init_stack(empty, project.env)

        floor = preview_seconds(empty, project.env, args.runs)
        local = preview_seconds(project.dir, project.env, args.runs)
    print(f"pulumi preview, empty Python program: median {floor:6.2f} s  (floor)")
    print(f"pulumi preview, local stack:          median {local:6.2f} s  {local / floor:4.2f}x floor")


if __name__ == "__main__":
    main()
