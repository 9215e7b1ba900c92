"""Benchmark (not a test): what the stack costs as the gateway's existing nodes grow.

For 2, 20 and 60 existing nodes on the local control plane, with the ASM
stand-in rolling the gateway out: the first `up`, a no-change `preview`
(median of `--runs`), an `up` that adds one taint (and so waits on one
rollout), the checkpoint's size, and how long an `up` whose rollout cannot
end takes to give up (rolloutTimeoutSeconds 20). Printed as a table with the
growth per node, measured in one run. `--also <commit>` measures an earlier
version of the project (its files from git) in the same run, for a ratio.

    .venv/bin/python benchmarks/node_count.py [--nodes 2 20 60] [--runs 3] [--also COMMIT]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import asm_standin  # noqa: E402
from control_plane import running_control_plane  # noqa: E402
from engine_project import ROOT as PROJECT  # noqa: E402
from engine_project import EngineProject, checkout  # noqa: E402
from node_inventory import NodeSpec, ack_virtual_node, create_nodes  # noqa: E402
from pulumi import automation as auto  # noqa: E402

warnings.filterwarnings("ignore", message="Unverified HTTPS request")
NAMESPACE = "istio-system"
TIMEOUT = 20
DEDICATED = {"key": "edge.example.com/dedicated", "value": "gateway", "effect": "NoSchedule"}


@dataclass
class Row:
    nodes: int
    first_up: float
    preview: float
    up_one_taint: float
    gave_up_after: float
    state_bytes: int


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def on_existing_nodes(names: list[str], timeout: int = TIMEOUT) -> Callable[[dict[str, Any]], None]:
    """The local stack pointed at the cluster, with `names` as the gateway's existing nodes."""

    def edit(config: dict[str, Any]) -> None:
        config.pop("renderYamlTo")
        config["rolloutTimeoutSeconds"] = timeout
        config["ecsCapacity"] = {
            "mode": "existingNodes",
            "nodes": names,
            "labels": {"edge.example.com/role": "gateway"},
            "taints": [DEDICATED],
        }
        config["virtualNodes"] = {"mode": "existing"}

    return edit


def add_taint(key: str, timeout: int) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["rolloutTimeoutSeconds"] = timeout
        config["ecsCapacity"]["taints"].append({"key": key, "value": "yes", "effect": "NoSchedule"})

    return edit


def measure(count: int, runs: int, tmp: Path, source: Path) -> Row:
    names = [f"edge-{i:03d}" for i in range(count)]
    with running_control_plane(tmp) as (plane, api):
        create_nodes(
            api, [*(NodeSpec(n, cpu="3900m", memory="14Gi") for n in names), ack_virtual_node("vk-0")]
        )
        asm_standin.install(api, NAMESPACE)
        mesh = asm_standin.MeshController(api, NAMESPACE, delay=0.5).start()
        try:
            project = EngineProject(tmp, source=source)
            stack = project.stack_on_cluster("local", plane.kubeconfig, on_existing_nodes(names))
            first_up = timed(stack.up)
            preview = statistics.median(timed(stack.preview) for _ in range(runs))
            project.edit_config("local", add_taint("edge.example.com/one-more", TIMEOUT))
            up_one_taint = timed(stack.up)
            checkpoint = Path(project.env["PULUMI_BACKEND_URL"].removeprefix("file://"))
            state_bytes = (
                (checkpoint / ".pulumi" / "stacks" / "asm-serverless-gateway" / "local.json").stat().st_size
            )

            mesh.delay = 3600.0  # the rollout never comes
            project.edit_config("local", add_taint("edge.example.com/never", TIMEOUT))
            start = time.perf_counter()
            try:
                stack.up()
                raise AssertionError("the up did not give up")
            except auto.errors.CommandError:
                gave_up_after = time.perf_counter() - start
        finally:
            mesh.stop()
    return Row(count, first_up, preview, up_one_taint, gave_up_after, state_bytes)


def report(title: str, rows: list[Row]) -> None:
    print(title)
    header = ("nodes", "first up", "preview", "up +taint", "gave up", "state", "per node")
    print("  ".join(f"{h:>9}" for h in header))
    for r in rows:
        cells = (
            f"{r.nodes}",
            f"{r.first_up:.1f}s",
            f"{r.preview:.1f}s",
            f"{r.up_one_taint:.1f}s",
            f"{r.gave_up_after:.1f}s",
            f"{r.state_bytes / 1024:.1f}KB",
            f"{r.state_bytes / 1024 / r.nodes:.2f}KB",
        )
        print("  ".join(f"{c:>9}" for c in cells))
    first, last = rows[0], rows[-1]
    span = last.nodes - first.nodes
    if span:

        def per_node_ms(before: float, after: float) -> str:
            return f"{(after - before) / span * 1000:.0f} ms"

        print(
            f"growth per node from {first.nodes} to {last.nodes}:"
            f" first up {per_node_ms(first.first_up, last.first_up)},"
            f" preview {per_node_ms(first.preview, last.preview)},"
            f" up +taint {per_node_ms(first.up_one_taint, last.up_one_taint)},"
            f" state {(last.state_bytes - first.state_bytes) / span:.0f} bytes;"
            f" preview {last.preview / first.preview:.2f}x; at {last.nodes} nodes the up gave up"
            f" {last.gave_up_after - TIMEOUT:.1f} s after rolloutTimeoutSeconds ({TIMEOUT} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 20, 60])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--also", metavar="COMMIT", help="an earlier version to measure in the same run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="node-count-") as folder:
        versions = {"this version": PROJECT}
        if args.also:
            versions[args.also] = checkout(args.also, Path(folder) / "earlier")
        results: dict[str, list[Row]] = {name: [] for name in versions}
        for count in args.nodes:
            for name, source in versions.items():  # in turns, so that both see the same machine
                slug = "this" if source == PROJECT else "earlier"
                results[name].append(measure(count, args.runs, Path(folder) / f"{slug}-{count}", source))
                print(f"  measured {name}, {count} nodes", file=sys.stderr)
    for name, rows in results.items():
        report(f"\n{name}:", rows)


if __name__ == "__main__":
    main()
