"""What cluster-test's steps share: the deadlines, kubectl on the host, host-side checks, and the steps' context."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import guest
from harness.lab import Lab, Node
from harness.report import Check, RunReport
from harness.session import Session, SessionView
from harness.ssh import Ssh

from imagegen.plan import Plan

# Seconds, measured from each domain's start (TCG on 2 shared cores). The reference 1+1 cluster took ~6 min.
DEADLINES = {"cloud-init-done": 900, "bootstrap": 1500, "ready": 600, "ssh": 180, "failover": 30,
             "api-after-failover": 120, "reboot": 600, "badjoin": 1200, "workload": 300, "service": 180,
             "kubectl": 120}
KUBE_VERSION = "v1.20.2"
BUSYBOX = "imagegen.local/busybox:1"


def log(text: str) -> None:
    print(text, flush=True)


class Kubectl:
    """The bundle's own kubectl (v1.20.2) on the host, through the VIP, with the rendered admin.conf."""

    def __init__(self, binary: Path, kubeconfig: Path, cache_dir: Path) -> None:
        # The run's own discovery cache: not the operator's ~/.kube/cache, and warm from the first call on.
        self.base = [str(binary), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir),
                     "--request-timeout=15s"]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> tuple[int, str]:
        try:
            done = subprocess.run([*self.base, *args], input=stdin, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return 124, f"timed out: kubectl {' '.join(args)}"
        return done.returncode, (done.stdout + done.stderr).strip()

    def retry(self, *args: str, accept: Callable[[str], bool] = lambda _out: True,
              deadline_s: float = DEADLINES["kubectl"], stdin: str | None = None) -> tuple[int, str]:
        """Run until the call succeeds and `accept`s its output, or the deadline passes: under TCG the API
        server behind the VIP is often too busy for one request ("context deadline exceeded"). Only for calls
        that may run twice (gets, `apply`)."""
        t0 = time.monotonic()
        while True:
            code, out = self.run(*args, stdin=stdin)
            if code == 0 and accept(out):
                return code, out
            if time.monotonic() - t0 > deadline_s:
                return code or 1, out
            time.sleep(3)

    def node_ready(self) -> dict[str, bool]:
        code, out = self.run("get", "nodes", "-o", "json")
        if code != 0:
            return {}
        ready = {}
        for item in json.loads(out).get("items", []):
            conds = {c["type"]: c["status"] for c in item["status"].get("conditions", [])}
            ready[item["metadata"]["name"]] = conds.get("Ready") == "True"
        return ready


class Recorder:
    """Named, timed checks into the report (host-side ones; in-guest ones use guest.Checker)."""

    def __init__(self, report: RunReport) -> None:
        self.report = report

    def check(self, node: str, name: str, fn: Callable[[], tuple[bool, str]], *,
              expected_failure: bool = False) -> bool:
        t0 = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as exc:  # a broken check is a failed check with its reason
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.report.checks.append(Check(node, name, ok, detail[-2000:], round(time.monotonic() - t0, 1),
                                        expected_failure))
        log(f"  [{'ok  ' if ok else 'FAIL'}] {node}: {name} ({time.monotonic() - t0:.1f} s): "
            f"{detail.splitlines()[0][:160] if detail else ''}")
        return ok


@dataclass
class ClusterContext(SessionView):
    session: Session
    plan: Plan
    out: Path  # imagegen render's output directory (seeds, admin.conf)
    kubectl: Kubectl
    pause_image: str  # the plan's, as kubeadm.pause_image computes it
    badjoin: tuple[str, ...]  # nodes seeded with a wrong bootstrap token secret
    t_boot: float  # monotonic time the cluster's domains were started
    t_bad: float = 0.0  # monotonic time the wrong-token fault began
    # Kubernetes nodes booted from the image with the bundle baked in and its images preloaded into containerd
    # (no bundle disk); the others that run install_kubernetes have the bundle disk.
    preloaded: tuple[str, ...] = ()
    bundle_dir: Path | None = None  # the host's copy of the bundle the nodes got (its node/ lists), if any
    rec: Recorder = field(init=False)

    def __post_init__(self) -> None:
        self.rec = Recorder(self.session.report)

    @property
    def vip(self) -> str:
        return str(self.plan.endpoint.vip)

    @property
    def pull_policy(self) -> str:
        """The workload's imagePullPolicy: its image is on the nodes from the bundle (Never), or, with no bundle
        (cluster-test --stock), pulled through the plan's registry mirror (IfNotPresent)."""
        return "IfNotPresent" if self.plan.bundle.source == "online" else "Never"

    @property
    def runtime(self) -> str:
        return self.plan.cluster.container_runtime

    @property
    def nodes(self) -> list[Node]:
        """Every node but the wrong-token ones."""
        return [n for n in self.lab.nodes.values() if n.name not in self.badjoin]

    @property
    def lbs(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "load-balancer"]

    @property
    def cps(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "control-plane"]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "worker"]

    @property
    def kube(self) -> list[Node]:
        """The Kubernetes nodes: control planes, then workers."""
        return self.cps + self.workers

    @property
    def bad(self) -> list[Node]:
        return [self.lab.nodes[b] for b in self.badjoin]

    def checker(self, node: Node) -> guest.Checker:
        return guest.Checker(node.name, self.ssh_of[node.name], self.report.checks)


def cluster_context(session: Session, plan: Plan, out: Path, key: Path, kubectl: Kubectl, pause_image: str,
                    badjoin: tuple[str, ...], t_boot: float, *, preloaded: tuple[str, ...] = (),
                    bundle_dir: Path | None = None) -> ClusterContext:
    """The steps' context; every node, the wrong-token ones too, gets its SSH helper (the plan's admin user)."""
    ctx = ClusterContext(session, plan, out, kubectl, pause_image, badjoin, t_boot, preloaded=preloaded,
                         bundle_dir=bundle_dir)
    for n in ctx.lab.nodes.values():
        ctx.ssh_of[n.name] = Ssh(n.ip, plan.admin_user, key)
    return ctx


def badjoin_names(lab: Lab) -> list[str]:
    return [n for n in lab.nodes if "badjoin" in n]


def pull_guest_logs(node: Node, ssh: Ssh, run_dir: Path) -> None:
    guest.pull_logs(ssh, run_dir / "guest-logs" / node.name, {
        **guest.BASE_LOGS,
        "bootstrap.journal": "sudo journalctl --no-pager -u imagegen-bootstrap.service",  # every boot
        "bootstrap.log": "sudo cat /var/log/imagegen/bootstrap.log",
        "join-attempt.log": "sudo cat /var/log/imagegen/join-attempt.log",
        "kubelet.journal": "sudo journalctl --no-pager -u kubelet",
        "docker-ps.txt": "sudo docker ps -a",
        "containerd.journal": "sudo journalctl --no-pager -u containerd",
        "crictl-pods-ps.txt": "sudo crictl pods; sudo crictl ps -a",
    }, timeout=90)


def collect(session: Session) -> None:
    """Teardown hook: guest logs of every running node when the run did not pass; the wrong-token node's always
    (they are the evidence of its expected failure); then a last look at the consoles."""
    lab = session.lab
    if lab is None:
        return
    for node in lab.nodes.values():
        ssh = session.ssh_of.get(node.name)
        if ssh is not None and lab.is_running(node) and (
                session.report.result != "passed" or node.name in badjoin_names(lab)):
            log(f"pulling guest logs of {node.name} ...")
            pull_guest_logs(node, ssh, session.run_dir)
    lab.poll()
