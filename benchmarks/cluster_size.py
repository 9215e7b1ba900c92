"""Benchmark (not a test): what the stack reads from a big cluster it has two nodes of.

The gateway's two existing nodes are the same in every run; the cluster around
them grows: `--sizes` other nodes (each with the status a kubelet reports, its
images included) and ten pods on each. On the local control plane, with the ASM
stand-in rolling the gateway out, after a first `up`: a no-change `preview` and
an `up` that adds one taint. Every byte the API server sends to the program and
its plugins goes through a counting proxy on loopback (TLS passes through it,
so these are the bytes on the wire). Printed as a table, with the ratio of the
biggest cluster to the smallest, measured in one run. `--also <commit>`
measures an earlier version of the project (its files from git) in the same run.

    .venv/bin/python benchmarks/cluster_size.py [--sizes 20 1000] [--also COMMIT]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import asm_standin  # noqa: E402
import kubernetes  # noqa: E402
from control_plane import running_control_plane  # noqa: E402
from engine_project import ROOT as PROJECT  # noqa: E402
from engine_project import EngineProject, checkout  # noqa: E402
from node_count import NAMESPACE, TIMEOUT, add_taint, on_existing_nodes  # noqa: E402
from node_inventory import NodeSpec, ack_virtual_node, create_nodes  # noqa: E402

warnings.filterwarnings("ignore", message="Unverified HTTPS request")
GATEWAY_NODES = ["edge-a", "edge-b"]
PODS_PER_NODE = 10
# What a kubelet reports of the images on its node: about 40 of them on a busy ACK node.
IMAGES = [
    {
        "names": [
            f"registry.example.com/team-{i}/service@sha256:{i:064x}",
            f"registry.example.com/team-{i}/service:v{i}",
        ],
        "sizeBytes": 100_000_000 + i,
    }
    for i in range(40)
]


class CountingProxy:
    """A TCP relay to the API server that counts what the server sends back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._relay, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._relay, args=(server, client, True), daemon=True).start()

    def _relay(self, source: socket.socket, target: socket.socket, counted: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if counted:
                    with self.lock:
                        self.received += len(chunk)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@dataclass
class Row:
    version: str
    nodes: int
    pods: int
    preview_seconds: float
    preview_bytes: int
    up_seconds: float
    up_bytes: int


def populate(api: kubernetes.client.ApiClient, others: int) -> int:
    """`others` nodes that are not the gateway's, with a kubelet's status, and ten pods on each."""
    specs = [NodeSpec(f"node-{i:05d}", cpu="7900m", memory="30Gi") for i in range(others)]
    create_nodes(api, specs)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "apps"}})

    def fill(spec: NodeSpec) -> None:
        core.patch_node_status(spec.name, {"status": {"images": IMAGES}})
        for index in range(PODS_PER_NODE):
            core.create_namespaced_pod(
                "apps",
                {
                    "metadata": {"name": f"{spec.name}-app-{index}", "labels": {"app": f"app-{index}"}},
                    "spec": {
                        "nodeName": spec.name,
                        "containers": [
                            {
                                "name": "app",
                                "image": f"registry.example.com/app-{index}:1",
                                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                            }
                        ],
                    },
                },
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fill, specs))
    return others * PODS_PER_NODE


@contextmanager
def through_proxy(kubeconfig: dict[str, Any]) -> Iterator[tuple[dict[str, Any], CountingProxy]]:
    server = kubeconfig["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = CountingProxy((host, int(port)))
    proxied = {
        **kubeconfig,
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    **kubeconfig["clusters"][0]["cluster"],
                    "server": f"https://127.0.0.1:{proxy.port}",
                },
            }
        ],
    }
    try:
        yield proxied, proxy
    finally:
        proxy.close()


def counted(proxy: CountingProxy, call: Callable[[], Any]) -> tuple[float, int]:
    before = proxy.received
    start = time.perf_counter()
    call()
    return time.perf_counter() - start, proxy.received - before


def measure(version: str, source: Path, others: int, tmp: Path) -> Row:
    with running_control_plane(tmp) as (plane, api):
        create_nodes(
            api,
            [*(NodeSpec(n, cpu="3900m", memory="14Gi") for n in GATEWAY_NODES), ack_virtual_node("vk-0")],
        )
        pods = populate(api, others)
        asm_standin.install(api, NAMESPACE)
        mesh = asm_standin.MeshController(api, NAMESPACE, delay=0.5).start()
        try:
            with through_proxy(plane.kubeconfig) as (kubeconfig, proxy):
                project = EngineProject(tmp, source=source)
                stack = project.stack_on_cluster("local", kubeconfig, on_existing_nodes(GATEWAY_NODES))
                stack.up()
                preview_seconds, preview_bytes = counted(proxy, stack.preview)

                project.edit_config("local", add_taint("edge.example.com/one-more", TIMEOUT))
                up_seconds, up_bytes = counted(proxy, stack.up)
        finally:
            mesh.stop()
    return Row(
        version, others + len(GATEWAY_NODES), pods, preview_seconds, preview_bytes, up_seconds, up_bytes
    )


def report(rows: list[Row]) -> None:
    print("bytes the API server sent, and wall time (one run each, same machine, in turns):")
    header = ("version", "nodes", "pods", "preview", "read", "up +taint", "read")
    print(f"  {header[0]:14}" + "".join(f"{h:>11}" for h in header[1:]))
    for r in rows:
        cells = (
            f"{r.nodes}",
            f"{r.pods}",
            f"{r.preview_seconds:.1f}s",
            f"{r.preview_bytes / 2**20:.2f}MiB",
            f"{r.up_seconds:.1f}s",
            f"{r.up_bytes / 2**20:.2f}MiB",
        )
        print(f"  {r.version:14}" + "".join(f"{c:>11}" for c in cells))
    for version in dict.fromkeys(r.version for r in rows):
        mine = [r for r in rows if r.version == version]
        small, big = mine[0], mine[-1]
        if big is not small:
            preview = (big.preview_bytes / small.preview_bytes, big.preview_seconds / small.preview_seconds)
            up = (big.up_bytes / small.up_bytes, big.up_seconds / small.up_seconds)
            print(
                f"  {version}: {big.nodes} nodes against {small.nodes}: preview reads {preview[0]:.2f}x"
                f" and takes {preview[1]:.2f}x, up +taint reads {up[0]:.2f}x and takes {up[1]:.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[20, 1000], help="nodes in the cluster, in all"
    )
    parser.add_argument("--also", metavar="COMMIT", help="an earlier version to measure in the same run")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cluster-size-") as folder:
        versions = {"this version": PROJECT}
        if args.also:
            versions[args.also] = checkout(args.also, Path(folder) / "earlier")
        for size in args.sizes:
            for index, (name, source) in enumerate(versions.items()):  # in turns: the same machine
                others = max(0, size - len(GATEWAY_NODES))
                rows.append(measure(name, source, others, Path(folder) / f"run-{size}-{index}"))
                print(f"  measured {name}, {size} nodes", file=sys.stderr)
    report(sorted(rows, key=lambda r: (r.version != "this version", r.version, r.nodes)))


if __name__ == "__main__":
    main()
