"""The VM harness's session always tears down in order, also on a crash or Ctrl-C, and honours --keep; the VM
suites' check names stay the ones report.json comparisons between runs rely on. No libvirt, no VMs: the session
gets a recording fake connection and process runner."""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
VM_TESTS = ROOT / "vm-tests"
sys.path.insert(0, str(VM_TESTS))

try:
    import libvirt  # noqa: F401
except ImportError:  # the [vm] extra is not installed (CI): harness.lab needs only these names from it
    stub = types.ModuleType("libvirt")
    stub.libvirtError = type("libvirtError", (Exception,), {})  # type: ignore[attr-defined]
    stub.VIR_DOMAIN_UNDEFINE_NVRAM = 4  # type: ignore[attr-defined]
    # libvirt's enum values (virNetworkUpdateFlags, virNetworkUpdateCommand, virNetworkSection), for add_dhcp_host.
    stub.VIR_NETWORK_UPDATE_AFFECT_LIVE = 1  # type: ignore[attr-defined]
    stub.VIR_NETWORK_UPDATE_AFFECT_CONFIG = 2  # type: ignore[attr-defined]
    stub.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST = 3  # type: ignore[attr-defined]
    stub.VIR_NETWORK_SECTION_IP_DHCP_HOST = 4  # type: ignore[attr-defined]
    sys.modules["libvirt"] = stub

from harness.session import Failed, Session  # noqa: E402


class FakeDomain:
    def __init__(self, calls: list[str], name: str) -> None:
        self.calls, self._name, self.active = calls, name, False

    def name(self) -> str:
        return self._name

    def create(self) -> None:
        self.active = True
        self.calls.append(f"start {self._name}")

    def isActive(self) -> bool:  # noqa: N802 (libvirt's name)
        return self.active

    def destroy(self) -> None:
        self.active = False
        self.calls.append(f"destroy {self._name}")

    def undefineFlags(self, _flags: int) -> None:  # noqa: N802
        self.calls.append(f"undefine {self._name}")

    def getCPUStats(self, _total: bool) -> list[dict[str, int]]:  # noqa: N802
        return [{"cpu_time": 0}]


class FakeNetwork(FakeDomain):
    def undefine(self) -> None:
        self.calls.append(f"undefine {self._name}")


class FakeConnection:
    """Records what the lab asks libvirt to do, in order, into `calls`."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.domains: dict[str, FakeDomain] = {}

    def networkDefineXML(self, xml: str) -> FakeNetwork:  # noqa: N802
        name = xml.split("<name>")[1].split("</name>")[0]
        self.calls.append(f"define network {name}")
        return FakeNetwork(self.calls, f"network {name}")

    def defineXML(self, xml: str) -> FakeDomain:  # noqa: N802
        name = xml.split("<name>")[1].split("</name>")[0]
        self.calls.append(f"define {name}")
        self.domains[name] = FakeDomain(self.calls, name)
        return self.domains[name]

    def lookupByName(self, name: str) -> FakeDomain:  # noqa: N802
        return self.domains[name]


def fake_runner(calls: list[str]) -> Any:
    def run(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        if cmd[0] == "iptables":
            calls.append(f"iptables {cmd[2]}")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


PLAN = SimpleNamespace(
    network=SimpleNamespace(cidr="192.168.150.0/24", gateway="192.168.150.1"),
    nodes=[SimpleNamespace(name="lb-1", role="load-balancer", ip="192.168.150.11", mac="52:54:00:00:00:11"),
           SimpleNamespace(name="w-1", role="worker", ip="192.168.150.21", mac="52:54:00:00:00:21")])


def run_session(tmp_path: Path, body: Any, **kwargs: Any) -> tuple[Session, list[str]]:
    """A session with two started nodes; `body(session)` runs inside it, as a suite's checks do."""
    calls: list[str] = []

    def collect(session: Session) -> None:
        calls.append(f"collect ({session.report.result})")

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with Session(suite="unit", run_name="unit", runs=tmp_path, plan=Path("plan.yaml"), collect=collect,
                 connect=lambda _log: FakeConnection(calls), run=fake_runner(calls), **kwargs) as session:
        (session.run_dir / "state").mkdir()
        lab = session.open_lab("tcg")
        session.create_network(PLAN, "igut")  # type: ignore[arg-type]
        for n in PLAN.nodes:
            lab.add_node(name=n.name, role=n.role, ip=n.ip, mac=n.mac, image=tmp_path / "node.qcow2", seed=None,
                         memory_mib=512, vcpus=1)
        for node in lab.nodes.values():
            lab.start(node)
        calls.append("checks")
        body(session)
    assert {s: signal.getsignal(s) for s in handlers} == handlers, "the session restores the signal handlers"
    return session, calls


def teardown_of(calls: list[str]) -> list[str]:
    return calls[calls.index("checks") + 1:]


def report_of(session: Session) -> dict[str, Any]:
    return json.loads((session.run_dir / "report.json").read_text())


def test_exception_still_tears_down_in_order_and_reports(tmp_path: Path) -> None:
    def body(_session: Session) -> None:
        raise Failed("w-1: no bootstrap marker within 300 s")

    session, calls = run_session(tmp_path, body)
    domains = [f"imagegen-{session.run_id}-lb-1", f"imagegen-{session.run_id}-w-1"]
    network = f"network imagegen-{session.run_id}"
    assert teardown_of(calls) == [
        "collect (failed)",  # guest logs while the domains still run
        f"destroy {domains[0]}", f"undefine {domains[0]}", f"destroy {domains[1]}", f"undefine {domains[1]}",
        "iptables -D",  # the firewall rule before its bridge's network
        f"destroy {network}", f"undefine {network}",
    ]
    assert calls[:calls.index("checks")].count("iptables -I") == 1
    assert session.code == 1
    report = report_of(session)
    assert report["result"] == "failed" and report["error"] == "w-1: no bootstrap marker within 300 s"
    assert [n["name"] for n in report["nodes"]] == ["lb-1", "w-1"]
    assert report["memory"]["samples"] >= 1 and report["cleanup_problems"] == []
    assert (session.run_dir / "timeline.svg").exists()
    assert not (session.run_dir / "state").exists() and not (session.run_dir / "disks").exists()


def test_crash_and_interrupt_exit_codes(tmp_path: Path) -> None:
    def crash(_session: Session) -> None:
        raise ValueError("a harness bug")

    def interrupt(_session: Session) -> None:
        raise KeyboardInterrupt

    crashed, calls = run_session(tmp_path / "crash", crash)
    assert crashed.code == 1 and report_of(crashed)["error"] == "ValueError: a harness bug"
    assert "iptables -D" in teardown_of(calls)
    interrupted, calls = run_session(tmp_path / "interrupt", interrupt)
    assert interrupted.code == 130 and report_of(interrupted)["result"] == "interrupted"
    assert teardown_of(calls)[0] == "collect (interrupted)" and "iptables -D" in teardown_of(calls)


def test_keep_leaves_the_lab_but_still_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def body(_session: Session) -> None:
        raise Failed("kept for debugging")

    session, calls = run_session(tmp_path, body, keep=True)
    assert teardown_of(calls) == ["collect (failed)"]  # no destroy, undefine or iptables -D
    assert (session.run_dir / "disks").exists() and not (session.run_dir / "state").exists()
    assert report_of(session)["result"] == "failed"
    assert "--keep: VMs left running" in capsys.readouterr().out


def test_passing_run_concludes_from_the_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def body(session: Session) -> None:
        with session.phase("checks"):
            pass

    session, calls = run_session(tmp_path, body)
    assert session.code == 0 and report_of(session)["result"] == "passed"
    assert "checks" in report_of(session)["phases"]
    assert teardown_of(calls)[0] == "collect (passed)" and "iptables -D" in teardown_of(calls)
    out = capsys.readouterr().out
    assert f"unit run {session.run_id}: {session.run_dir}" in out and "unit passed in" in out


def test_setup_failure_before_the_lab_still_reports(tmp_path: Path) -> None:
    with Session(suite="unit", run_name="unit", runs=tmp_path, plan=Path("plan.yaml"),
                 connect=lambda _log: pytest.fail("never connected")) as session:
        raise Failed("imagegen render failed (1): bad plan")
    assert session.code == 1 and report_of(session)["nodes"] == []


# --- check names -------------------------------------------------------------------------------------------

class _CheckNames(ast.NodeVisitor):
    """Names passed to .check(...)/Check(...) (f-strings as written, names resolved to their assignment) and the
    guest.check_* helpers called (their names live in harness/guest.py)."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, ast.expr]] = [{}]
        self.names: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name == "check":  # a recorder's own implementation, not a check
            return
        self.scopes.append({t.id: a.value for a in ast.walk(node) if isinstance(a, ast.Assign)
                            for t in a.targets if isinstance(t, ast.Name)})
        self.generic_visit(node)
        self.scopes.pop()

    def _text(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            for scope in reversed(self.scopes):
                if node.id in scope:
                    return self._text(scope[node.id])
        return ast.unparse(node)

    def visit_Call(self, call: ast.Call) -> None:
        f = call.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name == "check":
            self.names.add(self._text(call.args[1] if len(call.args) >= 3 else call.args[0]))
        elif name == "Check":
            self.names.add(self._text(call.args[1]))
        elif name.startswith("check_"):
            self.names.add(f"<{name}>")
        self.generic_visit(call)


def check_names(*paths: Path) -> set[str]:
    visitor = _CheckNames()
    for path in paths:
        visitor.visit(ast.parse(path.read_text()))
    return visitor.names


# As in cluster_test.py before the scenarios moved to vm-tests/scenarios/ (report.json is compared by these).
CLUSTER_CHECKS = {
    "<check_containerd_mirror>",
    "<check_cri_config>",
    "<check_kube_packages_held>",
    "<check_pod_sandbox_image>",
    "ClusterIP Service answers from the control plane",
    "bootstrap sentinel /var/lib/imagegen/bootstrap.done",
    "day 2: `imagegen token rotate` + `token apply` put the new token into the cluster",
    "etcd snapshot service leaves a snapshot etcdctl snapshot status accepts",
    "f'busybox workload ({BUSYBOX}, imagePullPolicy {ctx.pull_policy}) Running on the worker'",
    "lab: every request was for something the lab holds",  # --stock only
    "f'every Kubernetes node Ready (kubectl via VIP {vip})'",
    "f'kubeadm, kubelet, kubectl at {KUBE_VERSION}'",
    "f'one control plane ({gone.name}) powered off: API via VIP serves, etcd keeps quorum'",
    "f'{daemon} stopped on the VIP holder: VIP moves, API answers through it'",
    "first boot ends with IMAGEGEN-BOOTSTRAP-OK",
    "kube-proxy in ipvs mode (ipvsadm -Ln shows the ClusterIP and the pod behind it)",
    "reboot: Ready again, first-boot bootstrap not run again",
    "systemd cgroup driver (kubelet config and containerd via crictl info)",
    "systemd cgroup driver (kubelet config and docker info)",
    "wrong bootstrap token: IMAGEGEN-BOOTSTRAP-FAILED reason=bootstrap-token-or-ca-hash-rejected",
    "wrong-token node did not become a cluster node",
    # containerd with the bundle baked into the image (scenarios/cluster_boot.py)
    "every image archive of its role preloaded at image build, none imported (bootstrap.log)",
    "every image archive of its role imported from the bundle disk, none preloaded (bootstrap.log)",
    # --day2 (scenarios/cluster_day2.py)
    "day 2: `imagegen kubeconfig renew` writes an admin.conf that works",
    "day 2: `imagegen node remove` deletes the Node, the others stay Ready; its machine destroyed",
    "day 2: certificates renewed, cert-renew.sh restarts the control plane: apiserver notAfter later, kubectl via "
    "VIP works",
    "day 2: etcd restore drill: snapshot, etcd-restore.sh; the namespace made before it is there, the one made after "
    "it is gone, every node Ready again",
    "day 2: etcd-restore.sh refuses a multi-member etcd and changes nothing",
    "day 2: first token expired, a rotated one applied; one more worker in the plan changes no running node (imagegen "
    "diff, manifest.json)",
    "day 2: worker added after the token expired joins and is Ready",
    "packages installed at first boot kept imagegen's configuration files (nginx.conf, keepalived.conf, containerd "
    "config.toml as rendered)",
    "apt: Kubernetes packages at the plan's version from the 1001 pin",
    "day 2: the worker's kubelet rotated its client certificate (short cluster.certificate_signing_duration) and "
    "stays Ready",
    "day 2: worker machine and disk destroyed, `imagegen node replace`, generation bumped: a fresh machine with the "
    "same name, address and MAC joins and is Ready",
}
# As in smoke.py before its steps moved to vm-tests/scenarios/smoke.py.
SMOKE_CHECKS = {
    "<check_cloud_init>", "<check_containerd>", "<check_docker>", "<check_identity>", "<check_journald>",
    "<check_kube_packages_held>", "<check_modules>", "<check_swap_off>", "<check_sysctls>",
    "bootstrap finished (IMAGEGEN-BOOTSTRAP-OK)",
    "expected failure sentinel (join has no control plane)",
    "f'VIP moves when {stop} stops on the holder, and back'",
    "f'exactly one node holds the VIP {vip}'",
    "f'nginx listening on the endpoint port {port}'",
    "cloud-init read the node's own seed",
    "node preparation marker (IMAGEGEN-PREP-OK)",
    "swap file added to /etc/fstab before reboot",
}


def test_cluster_test_defines_exactly_its_checks() -> None:
    assert check_names(VM_TESTS / "cluster_test.py", *sorted((VM_TESTS / "scenarios").glob("cluster*.py"))) \
        == CLUSTER_CHECKS


def test_smoke_defines_exactly_its_checks() -> None:
    assert check_names(VM_TESTS / "smoke.py", VM_TESTS / "scenarios" / "smoke.py") == SMOKE_CHECKS


def test_steps_run_in_the_suites_order() -> None:
    from scenarios import cluster, smoke

    assert [s.__name__ for s in cluster.STEPS] == [
        "wait_bootstrap", "all_ready", "wait_ssh", "node_checks", "workload", "lb_faults", "worker_reboot",
        "control_plane_loss", "start_wrong_token", "etcd_snapshot", "day2_token_apply", "wrong_token_result"]
    assert [s.__name__ for s in smoke.STEPS] == [
        "wait_cloud_init", "wait_bootstrap", "wait_ssh", "node_checks", "vip_failover", "worker_reboot"]
