"""A real Kubernetes control plane on 127.0.0.1, started and stopped by the tests.

etcd, kube-apiserver, kube-scheduler and kube-controller-manager (the
Deployment, ReplicaSet, garbage collector, node lifecycle and taint eviction
controllers), built from their Go modules by
go_tools/toolchain.py. There is no kubelet: tests create Node objects with
capacity, allocatable and a Ready condition, as KWOK does, so the scheduler
binds pods and `spec.nodeName` shows its decision.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from components.rebalancer import Rebalancer, rebalancer_namespace
from go_tools import toolchain

KUBERNETES_VERSION = toolchain.KUBERNETES_VERSION
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    # Node agents: a NoExecute taint evicts a DaemonSet's pod, and its controller keeps it off.
    "daemonset-controller",
    "garbage-collector-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    # PodDisruptionBudgets' status: without it, no eviction of a pod a budget covers is allowed.
    "disruption-controller",
    # Empties and removes a deleted namespace (the rebalancer's own goes with a cluster).
    "namespace-controller",
)


def cluster_bin() -> dict[str, Path]:
    """The control plane's binaries, or a skip (a failure under scripts/test.sh)."""
    missing = [t.name for t in toolchain.GROUPS["cluster"] if not t.built()]
    if missing:
        message = f"control plane not built: {', '.join(missing)}; run scripts/setup.sh"
        if os.environ.get("ASM_GATEWAY_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return {t.name: t.bin_dir() / t.name for t in toolchain.GROUPS["cluster"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ControlPlane:
    workdir: Path
    binaries: dict[str, Path]
    server: str = ""
    token: str = "asm-gateway-test-token"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": self.server, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            "current-context": "local",
        }

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig.yaml"

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [str(self.binaries[name]), *args], stdout=log, stderr=subprocess.STDOUT
        )

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self._start(
            "etcd",
            [
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--log-level=warn",
            ],
        )
        key = self.workdir / "service-account.key"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        self._start(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--token-auth-file={tokens}",
                # As a real cluster: an identity may do what RBAC grants it. The
                # admin token is in system:masters; the stack's identities in the
                # tests get the roles the project generates (tests/test_preflight.py).
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={key}",
                f"--service-account-signing-key-file={key}",
                # No service-account controller runs to create `default` accounts.
                "--disable-admission-plugins=ServiceAccount",
                "--enable-priority-and-fairness=false",
            ],
        )
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig_path.write_text(yaml.safe_dump(self.kubeconfig))
        self.wait_ready()
        self.start_scheduler()
        self._start(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig_path}",
                # What every real cluster runs besides: the garbage collector
                # (foreground deletion finishes), node lifecycle (cordon and
                # condition taints), taint eviction (NoExecute evicts pods) and
                # disruption (the budgets the Eviction API enforces).
                "--controllers=" + ",".join(CONTROLLERS),
                # No kubelet posts heartbeats: keep the timeout out of reach, so
                # nodes stay Ready unless a test says otherwise.
                "--node-monitor-grace-period=8760h",
                "--node-startup-grace-period=8760h",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )

    def start_scheduler(self, config: dict[str, Any] | None = None) -> None:
        """(Re)start kube-scheduler, with a KubeSchedulerConfiguration if given."""
        old = self.processes.pop("kube-scheduler", None)
        if old is not None:
            old.terminate()
            old.wait(timeout=30)
        document = config or {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
        }
        document = {
            **document,
            "clientConnection": {"kubeconfig": str(self.kubeconfig_path)},
            "leaderElection": {"leaderElect": False},
        }
        path = self.workdir / "scheduler-config.yaml"
        path.write_text(yaml.safe_dump(document))
        self._start(
            "kube-scheduler",
            [f"--config={path}", "--bind-address=127.0.0.1", f"--secure-port={free_port()}"],
        )

    def start_descheduler(self, policy: str, interval: str, kubeconfig: dict[str, Any]) -> None:
        """(Re)start the Kubernetes descheduler with a policy document, as the stack's Deployment
        runs it: the same binary version, the same policy and interval, its own identity."""
        old = self.processes.pop("descheduler", None)
        if old is not None:
            old.terminate()
            old.wait(timeout=30)
        (self.workdir / "descheduler-policy.yaml").write_text(policy)
        (self.workdir / "descheduler-kubeconfig.yaml").write_text(yaml.safe_dump(kubeconfig))
        self._start(
            "descheduler",
            [
                f"--policy-config-file={self.workdir / 'descheduler-policy.yaml'}",
                f"--descheduling-interval={interval}",
                f"--client-connection-kubeconfig={self.workdir / 'descheduler-kubeconfig.yaml'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'descheduler-certs'}",
                "--v=2",
            ],
        )

    def wait_ready(self, timeout: float = 120) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"}
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    log = (self.workdir / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


def grant(api: kubernetes.client.ApiClient, documents: list[dict[str, Any]]) -> None:
    """Apply RBAC documents (the generated ones) as the cluster's admin; a namespace among them
    that exists already (the rebalancer's, made with the control plane) is left as it is."""
    existing = {ns.metadata.name for ns in kubernetes.client.CoreV1Api(api).list_namespace().items}
    for document in documents:
        if document["kind"] == "Namespace" and document["metadata"]["name"] in existing:
            continue
        kubernetes.utils.create_from_dict(api, document)


def service_account_kubeconfig(
    plane: ControlPlane, api: kubernetes.client.ApiClient, name: str, namespace: str
) -> dict[str, Any]:
    """A kubeconfig that acts as the service account `namespace/name`, with a fresh token."""
    token = (
        kubernetes.client.CoreV1Api(api)
        .create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 7200}})
        .status.token
    )
    config = plane.kubeconfig
    config["users"] = [{"name": name, "user": {"token": token}}]
    config["contexts"] = [{"name": "local", "context": {"cluster": "local", "user": name}}]
    return config


@contextlib.contextmanager
def running_control_plane(
    tmp: Path, token: str = ControlPlane.token
) -> Iterator[tuple[ControlPlane, kubernetes.client.ApiClient]]:
    """A started control plane under `tmp` (its admin `token`) and a client for it; stopped on the way out."""
    plane = ControlPlane(tmp / "control-plane", cluster_bin(), token=token)
    plane.start()
    try:
        api = kubernetes.config.new_client_from_config_dict(plane.kubeconfig)
        # What an admin makes once for the rebalancer (the generated cluster-rbac.yaml holds it).
        kubernetes.client.CoreV1Api(api).create_namespace(rebalancer_namespace(Rebalancer().namespace))
        yield plane, api
    finally:
        plane.stop()


# kube-scheduler with the preferred node affinity made decisive: its weight
# outweighs every other score together (at most ~11 plugins x 100), so a node
# the pod prefers always wins while it fits. That is the placement ACK's
# ResourcePolicy gives (fill the ECS unit, then ECI); it is not ACK's plugin.
ECS_FIRST_PROFILE: dict[str, Any] = {
    "apiVersion": "kubescheduler.config.k8s.io/v1",
    "kind": "KubeSchedulerConfiguration",
    "profiles": [
        {
            "schedulerName": "default-scheduler",
            "plugins": {
                "score": {
                    "enabled": [{"name": "NodeAffinity", "weight": 50}],
                    "disabled": [{"name": "NodeAffinity"}],
                }
            },
        }
    ],
}


class PodWatch:
    """Watches some pods (`selector` in `namespace`) and records every eviction (a DisruptionTarget
    condition, which the taint eviction controller and the eviction API set)."""

    def __init__(self, plane: ControlPlane, namespace: str, selector: str) -> None:
        self.api = kubernetes.config.new_client_from_config_dict(plane.kubeconfig)
        self.namespace = namespace
        self.selector = selector
        self.evicted: dict[str, str] = {}  # pod -> the condition's reason
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        core = kubernetes.client.CoreV1Api(self.api)
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            for event in watch.stream(
                core.list_namespaced_pod, self.namespace, label_selector=self.selector, timeout_seconds=5
            ):
                pod = event["object"]
                for condition in pod.status.conditions or []:
                    if condition.type == "DisruptionTarget" and condition.status == "True":
                        self.evicted[pod.metadata.name] = condition.reason
                if self._stop.is_set():
                    watch.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def node_update_policy(
    name: str, username: str, expression: str, message: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ValidatingAdmissionPolicy, and its binding, on one user's node updates: the kind of rule a
    platform team keeps (which labels and taints a deployer may set)."""
    policy = {
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["UPDATE"],
                        "resources": ["nodes"],
                    }
                ]
            },
            "matchConditions": [
                {"name": "the-deployer", "expression": f"request.userInfo.username == '{username}'"}
            ],
            "validations": [{"expression": expression, "message": message}],
        },
    }
    binding = {"metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}}
    return policy, binding
