"""Benchmark (not a test): pods on ECI over time for one spec change, this version against another.

On the local control plane with the ECS-first scheduler profile (the inventory of
tests/test_rebalancing.py: ECS room for 4 of 5 one-core replicas), each version
deploys the gateway, then one `up` lowers its CPU request while it serves. Sampled
every 0.25 s from the `up` until `--after` seconds past the rollout: pods on ECS and
on ECI, the fewest Ready, and the ECI vCPU-seconds spent. This version runs its
rebalancer (the descheduler, as the stack deployed it); a version before it has
none to run. `--also <commit>` measures that version in the same run.

    .venv/bin/python benchmarks/rollout.py --also e7e845a [--after 60]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import asm_standin  # noqa: E402
import kubernetes  # noqa: E402
from control_plane import ECS_FIRST_PROFILE, running_control_plane  # noqa: E402
from engine_project import ROOT as PROJECT  # noqa: E402
from engine_project import EngineProject, checkout  # noqa: E402
from node_inventory import create_nodes  # noqa: E402
from test_rebalancing import (  # noqa: E402
    DEDICATED,
    ECS_NODES,
    GATEWAY,
    INTERVAL_SECONDS,
    INVENTORY,
    NAMESPACE,
    POOL,
    REPLICAS,
    Sample,
    Sampler,
    start_rebalancer,
)

warnings.filterwarnings("ignore", message="Unverified HTTPS request")


@dataclass
class Run:
    version: str
    up_seconds: float
    timeline: list[Sample]
    rolled_out_at: float

    def at(self, seconds: float) -> Sample:
        start = self.timeline[0].at
        return next((s for s in self.timeline if s.at - start >= seconds), self.timeline[-1])

    @property
    def eci_vcpu_seconds(self) -> float:
        return sum(a.eci * (b.at - a.at) for a, b in itertools.pairwise(self.timeline))


def measure(version: str, source: Path, tmp: Path, after: float) -> Run:
    this = source == PROJECT
    with running_control_plane(tmp) as (plane, api):
        plane.start_scheduler(ECS_FIRST_PROFILE)
        create_nodes(api, INVENTORY)
        asm_standin.install(api, NAMESPACE)
        mesh = asm_standin.MeshController(api, NAMESPACE, delay=1.0).start()
        sampler = Sampler(api)
        try:

            def point_at_cluster(config: dict[str, Any]) -> None:
                config.pop("renderYamlTo")
                config["placementPolicy"] = "prefer-ecs"
                config["ecsCapacity"] = {
                    "mode": "existingNodes",
                    "nodes": ECS_NODES,
                    "labels": POOL,
                    "taints": [DEDICATED],
                }
                config["virtualNodes"] = {"mode": "existing"}
                if this:
                    config["rebalancer"] = {"intervalSeconds": INTERVAL_SECONDS}
                config["gateways"] = [
                    {
                        "name": GATEWAY,
                        "replicaCount": REPLICAS,
                        "minReplicas": 2,
                        "maxReplicas": 15,
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                    }
                ]

            project = EngineProject(tmp, source=source)
            stack = project.stack_on_cluster("local", plane.kubeconfig, point_at_cluster)
            stack.up()
            if this:
                start_rebalancer(plane, api)
            while sampler.placement().ready != REPLICAS:
                time.sleep(0.25)
            time.sleep(2)

            def lower_cpu(config: dict[str, Any]) -> None:
                config["gateways"][0]["resources"]["requests"]["cpu"] = "950m"

            project.edit_config("local", lower_cpu)
            start = time.monotonic()
            stack.up()
            up_seconds = time.monotonic() - start
            generation = asm_standin.read_gateway(api, NAMESPACE, GATEWAY)["metadata"]["generation"]
            while True:
                deployment = mesh_deployment(api)
                done = (deployment.metadata.annotations or {}).get("asm-standin/generation") == str(
                    generation
                )
                if (
                    done
                    and deployment.status.updated_replicas == REPLICAS
                    and sampler.placement().ready == REPLICAS
                ):
                    break
                time.sleep(0.25)
            rolled_out_at = time.monotonic() - start
            time.sleep(after)
            return Run(version, up_seconds, sampler.since(start), rolled_out_at)
        finally:
            sampler.stop()
            mesh.stop()


def mesh_deployment(api: kubernetes.client.ApiClient) -> Any:
    return kubernetes.client.AppsV1Api(api).read_namespaced_deployment(GATEWAY, NAMESPACE)


def report(runs: list[Run], after: float) -> None:
    marks = [0, 5, 10, 20, 30, 45, 60, 90, 120]
    marks = [m for m in marks if m <= runs[0].timeline[-1].at - runs[0].timeline[0].at]
    print("pods on ECS + ECI, seconds after the `up` that lowered the CPU request:")
    print(f"  {'version':14} " + " ".join(f"{m:>7}s" for m in marks))
    for run in runs:
        cells = " ".join(f"{run.at(m).ecs:>4} + {run.at(m).eci}" for m in marks)
        print(f"  {run.version:14} {cells}")
    for run in runs:
        fewest = min(s.ready for s in run.timeline)
        last = run.timeline[-1]
        print(
            f"  {run.version}: up {run.up_seconds:.1f} s, rolled out after {run.rolled_out_at:.1f} s,"
            f" fewest Ready {fewest}, {after:.0f} s later {last.ecs} + {last.eci},"
            f" ECI {run.eci_vcpu_seconds:.0f} vCPU-seconds in {last.at - run.timeline[0].at:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--also", metavar="COMMIT", help="an earlier version to measure in the same run")
    parser.add_argument("--after", type=float, default=60.0, help="seconds to sample after the rollout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollout-") as folder:
        versions = {"this version": PROJECT}
        if args.also:
            versions[args.also] = checkout(args.also, Path(folder) / "earlier")
        runs = [
            measure(name, source, Path(folder) / f"run-{index}", args.after)
            for index, (name, source) in enumerate(versions.items())
        ]
    report(runs, args.after)


if __name__ == "__main__":
    main()
