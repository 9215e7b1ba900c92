"""Benchmark (not a test): `pulumi preview` of the local stack on the real engine.

Prints the median wall time of `pulumi preview` of the local stack against
`pulumi preview` of an empty Python program on the same engine (the floor),
as a ratio measured in one run; and the time to get the tools (warm: found in
the cache; cold with --cold: built into a fresh tools cache and Go build cache).

    .venv/bin/python benchmarks/engine_preview.py [--runs N] [--cold] [--also COMMIT]

`--also <commit>` previews the local stack of an earlier version too, in the
same turns, so that what a change costs a preview is read as a difference
measured on the same machine at the same time.
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

from engine_project import EngineProject, checkout  # noqa: E402

from go_tools import toolchain  # noqa: E402

EMPTY_PROGRAM = """\
name: empty-floor
runtime:
  name: python
  options:
    toolchain: pip
    virtualenv: .venv
"""


def preview_once(project_dir: Path, env: dict[str, str]) -> float:
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


def interleaved_medians(folders: list[Path], env: dict[str, str], runs: int) -> list[float]:
    """Median preview time of each program, run in turns (A B C, A B C, ...).

    Taking turns spreads the machine's drift (other load, caches) over every
    program alike, so the ratios hold even where the absolute times wander.
    """
    for folder in folders:
        preview_once(folder, env)  # warm the OS caches, plugin lookups, bytecode
    times: list[list[float]] = [[] for _ in folders]
    for _ in range(runs):
        for index, folder in enumerate(folders):
            times[index].append(preview_once(folder, env))
    return [statistics.median(t) for t in times]


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
    parser.add_argument("--also", metavar="COMMIT", help="also preview the local stack of an earlier version")
    args = parser.parse_args()

    if args.cold:
        print(f"engine tools, cold build:  {tool_seconds(cold=True):8.1f} s")
    print(f"engine tools, warm (cached): {tool_seconds(cold=False):6.2f} s")

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        project = EngineProject(tmp, folder="project")
        init_stack(project.dir, project.env)

        def program(folder: str, main: str) -> Path:
            """A throwaway program beside the project, sharing its modules and virtualenv."""
            path = tmp / folder
            path.mkdir()
            (path / "Pulumi.yaml").write_text(EMPTY_PROGRAM)
            (path / "__main__.py").write_text(main)
            (path / ".venv").symlink_to(ROOT / ".venv")
            for module in ("components", "stack_config", "node_marks_plugin", "go_tools"):
                if (project.dir / module).exists():
                    (path / module).symlink_to(project.dir / module)
            init_stack(path, project.env)
            return path

        # Where the local stack's time goes, step by step over the floor.
        steps = [
            ("empty Python program (floor)", program("empty", "import pulumi  # noqa: F401\n")),
            (
                "+ import the stack's modules",
                program("imports", "import pulumi, stack_config, components.stack  # noqa: F401\n"),
            ),
            (
                "+ one Kubernetes provider",
                program("one-provider", KUBERNETES_PROVIDERS.format(names='["cluster"]')),
            ),
            (
                "+ a second one (cluster and mesh)",
                program("two-providers", KUBERNETES_PROVIDERS.format(names='["cluster", "mesh"]')),
            ),
            ("local stack", project.dir),
        ]
        if args.also:
            earlier = EngineProject(tmp, source=checkout(args.also, tmp / "earlier-source"), folder="earlier")
            init_stack(earlier.dir, project.env)
            steps.append((f"local stack at {args.also}", earlier.dir))
        # Python writes bytecode caches by default; a machine that turns that
        # off (PYTHONDONTWRITEBYTECODE) recompiles every module on each preview.
        env = {k: v for k, v in project.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        medians = interleaved_medians([folder for _, folder in steps], env, args.runs)
        for (title, _), seconds in zip(steps, medians, strict=True):
            print(f"pulumi preview, {title:36s} median {seconds:5.2f} s  {seconds / medians[0]:4.2f}x floor")
        if args.also:
            print(f"the local stack now takes {medians[-2] - medians[-1]:+.3f} s over {args.also}")


KUBERNETES_PROVIDERS = """\
import pulumi_kubernetes as k8s

import components.stack  # noqa: F401
import stack_config  # noqa: F401

for name in {names}:
    k8s.Provider(name, render_yaml_to_directory=f"rendered/{{name}}")
"""


if __name__ == "__main__":
    main()
