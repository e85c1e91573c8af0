"""cluster-test --day2 without VMs: the day-2 steps are registered in order after the normal ones, `--day2` parses
and keeps no state copy, the plan edits an operator makes (one more worker, a bumped generation) are right for the
lab plans, imagegen's own diff of a rotated token and of an added worker is read the way the VM run reads it, and
the lab can destroy a machine and define one more (recording fake libvirt, as tests/test_vm_session.py)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_vm_session import PLAN, VM_TESTS, FakeConnection, FakeNetwork, check_names, fake_runner

ROOT = VM_TESTS.parent  # test_vm_session put vm-tests on sys.path (and stubbed libvirt where it is missing)

from harness.session import Session  # noqa: E402
from harness.xml import HostEntry  # noqa: E402
from scenarios import cluster, cluster_day2  # noqa: E402

LAB_PLANS = sorted((VM_TESTS / "plans").glob("cluster*.yaml"))


def test_day2_steps_run_after_the_normal_ones_in_order() -> None:
    assert [s.__name__ for s in cluster.DAY2_STEPS] == [
        "day2_add_worker", "day2_remove_worker", "day2_kubelet_rotation", "day2_replace_worker", "day2_certificates",
        "day2_etcd_restore"]
    assert not set(cluster.DAY2_STEPS) & set(cluster.STEPS)
    names = check_names(VM_TESTS / "scenarios" / "cluster_day2.py")
    assert len(names) == 9 and all(n.startswith("day 2: ") for n in names)


def test_day2_flag_parses_and_the_state_copies_are_discarded() -> None:
    import cluster_test

    assert cluster_test.parse_args(["--day2"]).day2 and not cluster_test.parse_args([]).day2
    assert cluster_test.parse_args(["--day2", "--docker"]).docker
    source = (VM_TESTS / "cluster_test.py").read_text()
    assert 'discard=("state", "state-wrong-token", "state-day2")' in source
    make = (ROOT / "Makefile").read_text()
    assert "cluster-test-day2: image bundle\n\t$(PY) vm-tests/cluster_test.py --day2\n" in make
    assert " cluster-test-day2 " in make.split(".PHONY:")[1].splitlines()[0]


@pytest.mark.parametrize("plan", LAB_PLANS, ids=lambda p: p.stem)
def test_next_worker_is_free_in_the_lab_network(plan: Path) -> None:
    data = yaml.safe_load(plan.read_text())
    worker = cluster_day2.next_worker(data)
    net = ipaddress.IPv4Network(data["network"]["cidr"])
    ip = ipaddress.IPv4Address(worker["ip"])
    assert ip in net and ip < net.broadcast_address - 10  # below the network's DHCP tail
    assert worker["ip"] not in {n["ip"] for n in data["nodes"]} | {data["endpoint"]["vip"], data["network"]["gateway"]}
    assert worker["mac"] not in {n["mac"].lower() for n in data["nodes"]}
    assert worker["name"] not in {n["name"] for n in data["nodes"]} and worker["name"].endswith("-worker-2")
    grown = cluster_day2.with_node(data, worker)
    assert cluster_day2.next_worker(grown)["name"].endswith("-worker-3")
    assert cluster_day2.without_node(grown, worker["name"]) == data
    bumped = cluster_day2.with_next_generation(data, worker["name"].replace("-2", "-1"))
    assert [n.get("generation") for n in bumped["nodes"] if n["name"].endswith("-worker-1")] == [2]
    assert cluster_day2.with_next_generation(bumped, worker["name"].replace("-2", "-1")) != bumped


def imagegen(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "imagegen", *args], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    return done.stdout


def test_diff_of_a_rotated_token_and_an_added_worker(tmp_path: Path) -> None:
    """What (a) asks imagegen, on the lab plan: the rotated token only changes the token's file (no instance-id);
    one more worker then changes no other node at all, in the diff and in manifest.json."""
    plan, state, out = VM_TESTS / "plans" / "cluster.yaml", tmp_path / "state", tmp_path / "out"
    data = yaml.safe_load(plan.read_text())
    existing = {n["name"] for n in data["nodes"]}
    imagegen("render", str(plan), "--out", str(out), "--state", str(state), "--quiet")
    imagegen("token", "rotate", str(plan), "--state", str(state))
    rotated = json.loads(imagegen("diff", str(plan), "--out", str(out), "--state", str(state), "-o", "json"))
    assert cluster_day2.diff_problems(rotated, existing, frozenset({cluster_day2.TOKEN_ENTRY})) == []
    assert cluster_day2.diff_problems(rotated, existing, frozenset())  # the token's file does change
    imagegen("render", str(plan), "--out", str(out), "--state", str(state), "--quiet")
    before = cluster_day2.node_hashes(out)
    worker = cluster_day2.next_worker(data)
    grown = tmp_path / "plan-day2.yaml"
    cluster_day2.write_plan(grown, cluster_day2.with_node(data, worker), "test")
    added = json.loads(imagegen("diff", str(grown), "--out", str(out), "--state", str(state), "-o", "json"))
    assert cluster_day2.diff_problems(added, existing, frozenset(), new=worker["name"]) == []
    imagegen("render", str(grown), "--out", str(out), "--state", str(state), "--quiet")
    after = cluster_day2.node_hashes(out)
    assert {n: after[n] for n in existing} == before and worker["name"] in after
    cluster_day2.write_plan(grown, cluster_day2.with_next_generation(data, "ct-worker-1"), "test")
    replaced = json.loads(imagegen("diff", str(grown), "--out", str(out), "--state", str(state), "-o", "json"))
    problems = cluster_day2.diff_problems(replaced, existing, frozenset())
    assert any(p.startswith("ct-worker-1: instance-id ") for p in problems)


class DhcpNetwork(FakeNetwork):
    def update(self, command: int, section: int, parent: int, xml: str, flags: int) -> int:
        self.calls.append(f"dhcp {xml}")
        return 0


class Day2Connection(FakeConnection):
    def networkDefineXML(self, xml: str) -> FakeNetwork:  # noqa: N802
        name = xml.split("<name>")[1].split("</name>")[0]
        self.calls.append(f"define network {name}")
        return DhcpNetwork(self.calls, f"network {name}")


def test_lab_destroys_a_machine_and_defines_one_more(tmp_path: Path) -> None:
    calls: list[str] = []
    with Session(suite="unit", run_name="unit", runs=tmp_path, plan=Path("plan.yaml"),
                 discard=("state", "state-day2"), connect=lambda _log: Day2Connection(calls),
                 run=fake_runner(calls)) as session:
        (session.run_dir / "state-day2").mkdir()
        lab = session.open_lab("tcg")
        session.create_network(PLAN, "igut")  # type: ignore[arg-type]
        for n in PLAN.nodes:
            lab.add_node(name=n.name, role=n.role, ip=n.ip, mac=n.mac, image=tmp_path / "node.qcow2", seed=None,
                         memory_mib=512, vcpus=1, extra_disks=(tmp_path / "bundle.img",))
        for node in lab.nodes.values():
            lab.start(node)
        worker = lab.nodes["w-1"]
        worker.serial_log.write_text("first life\n")
        lab.remove_node(worker)
        assert "w-1" not in lab.nodes and lab.removed == [worker]
        assert (session.run_dir / "console" / "w-1.removed-1.log").read_text() == "first life\n"
        lab.add_dhcp_host(HostEntry("52:54:00:00:00:22", "192.168.150.22", "w-2"))
        extra = lab.add_node_like("w-1", name="w-2", ip="192.168.150.22", mac="52:54:00:00:00:22", seed=None)
        again = lab.add_node_like("w-1", name="w-1", ip=worker.ip, mac=worker.mac, seed=None)
        lab.start(extra)
        lab.start(again)
        xml = (session.run_dir / "domains" / "w-2.xml").read_text()
        assert "<memory unit='MiB'>512</memory>" in xml and "bundle.img" in xml
    domain = f"imagegen-{session.run_id}-w-1"
    teardown = calls[calls.index(f"undefine {domain}") + 1:]
    assert 'dhcp <host mac="52:54:00:00:00:22" name="w-2" ip="192.168.150.22"/>' in calls
    # The removed domain is undefined once, when removed; its successor of the same name at the teardown.
    assert calls.count(f"undefine {domain}") == 2 and teardown.count(f"undefine {domain}") == 1
    report: dict[str, Any] = json.loads((session.run_dir / "report.json").read_text())
    assert [n["name"] for n in report["nodes"]] == ["w-1", "lb-1", "w-2", "w-1"]
    assert "removed" in [e[0] for e in report["nodes"][0]["events"]]
    assert not (session.run_dir / "state-day2").exists()


# --- (e) against a fake cluster: the drill's own logic -----------------------------------------------------------

class FakeCluster:
    """Namespaces and Nodes behind a recording kubectl, and a control plane whose snapshot service and
    etcd-restore.sh act on them (restore_works=False: the restore claims success and changes nothing)."""

    def __init__(self, restore_works: bool = True) -> None:
        self.namespaces = {"default", "kube-system"}
        self.snapshot: set[str] = set()
        self.restore_works = restore_works
        self.sudo_calls: list[str] = []

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60) -> tuple[int, str]:
        if args[:3] == ("apply", "-f", "-") and stdin:
            name = yaml.safe_load(stdin)["metadata"]["name"]
            self.namespaces.add(name)
            return 0, f"namespace/{name} created"
        if args[:2] == ("get", "namespace"):
            return 0, f"namespace/{args[2]}" if args[2] in self.namespaces else ""
        if args[:2] == ("get", "nodes"):
            ready = {"type": "Ready", "status": "True"}
            return 0, json.dumps({"items": [{"metadata": {"name": n}, "status": {"conditions": [ready]}}
                                            for n in ("ct-cp-1", "ct-worker-1")]})
        return 1, f"unexpected kubectl {args}"

    def sudo(self, command: str, timeout: float = 120) -> tuple[int, str]:
        self.sudo_calls.append(command)
        if command.startswith("systemctl start imagegen-etcd-snapshot.service"):
            self.snapshot = set(self.namespaces)
            return 0, "/var/backups/etcd/snapshot-ct-cp-1-20261126T000000Z.db\n/var/backups/etcd/snapshot-old.db"
        if command.startswith(cluster_day2.RESTORE):
            if self.restore_works:
                self.namespaces = set(self.snapshot)
            return 0, "etcd lists 1 member(s)\netcd-restore: restored /var/backups/etcd/snapshot-ct-cp-1.db: ..."
        return 1, f"unexpected command {command}"


def drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster_: FakeCluster) -> tuple[bool, str]:
    import time as time_module
    from types import SimpleNamespace

    from harness import guest
    from scenarios.cluster_context import Kubectl

    monkeypatch.setattr(time_module, "sleep", lambda _s: None)
    monkeypatch.setitem(cluster_day2.DAY2_DEADLINES, "gone", 0)
    kubectl = Kubectl(Path("kubectl"), tmp_path / "admin.conf", tmp_path / "cache")
    monkeypatch.setattr(kubectl, "run", cluster_.kubectl)
    checker = guest.Checker("ct-cp-1", None, [])  # type: ignore[arg-type]
    monkeypatch.setattr(checker, "sudo", cluster_.sudo)
    ctx = SimpleNamespace(kubectl=kubectl, run_dir=tmp_path, lab=SimpleNamespace(poll=lambda: []))
    return cluster_day2.restore_drill(ctx, checker)  # type: ignore[arg-type]


def test_restore_drill_reads_the_namespaces_the_right_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCluster()
    ok, detail = drill(tmp_path, monkeypatch, fake)
    assert ok, detail
    assert "drill-before there, drill-after gone" in detail and "ct-worker-1" in detail
    assert fake.sudo_calls[1] == f"{cluster_day2.RESTORE} /var/backups/etcd/snapshot-ct-cp-1-20261126T000000Z.db"
    assert (tmp_path / "etcd-restore.log").read_text().endswith("[exit 0]\n")
    ok, detail = drill(tmp_path, monkeypatch, FakeCluster(restore_works=False))
    assert not ok and "drill-after STILL THERE" in detail


def test_certificate_renewal_wants_the_served_certificate_renewed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import guest
    from scenarios.cluster_context import Kubectl

    def run(served: str) -> tuple[bool, str, list[str]]:
        calls: list[str] = []
        ends = iter(["1800000000", "1830000000"])

        def sudo(command: str, timeout: float = 120) -> tuple[int, str]:
            calls.append(command)
            if command == cluster_day2.CERT_FILE:
                return 0, next(ends)
            if command == cluster_day2.CERT_SERVED:
                return 0, served
            return 0, "renewed; the API server's certificate now expires in 364 days"

        checker = guest.Checker("ct-cp-1", None, [])  # type: ignore[arg-type]
        monkeypatch.setattr(checker, "sudo", sudo)
        kubectl = Kubectl(Path("kubectl"), tmp_path / "admin.conf", tmp_path / "cache")
        monkeypatch.setattr(kubectl, "run", lambda *a, **k: (0, "node/ct-cp-1"))
        ok, detail = cluster_day2.renew_control_plane(checker, kubectl)
        return ok, detail, calls

    ok, detail, calls = run("1830000000")
    assert ok, detail
    assert calls[1] == "/usr/local/lib/imagegen/cert-renew.sh --now"
    ok, detail, _ = run("1800000000")  # the API server still serves the old certificate: not restarted
    assert not ok and "served on the port: 1800000000" in detail


def test_day2_plan_has_short_lifetimes_that_the_parser_takes(tmp_path: Path) -> None:
    """--day2 derives the plan with a 15-minute first token and 20-minute signed certificates: valid plan values,
    short enough to expire and rotate during the run, and the kubelet check reads the same duration."""
    import cluster_test
    from harness.render import derive_plan

    from imagegen.plan import load_plan

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMwoKDnXny6oRg+nsr7lsMSAkU2PGKAIp36XBlKggUZe"
    derived = derive_plan(VM_TESTS / "plans" / "cluster.yaml", tmp_path, key, cluster_test.DAY2_PLAN)
    plan = load_plan(derived)
    assert plan.cluster.token_ttl == "15m" and plan.cluster.certificate_signing_duration == "20m"
    assert cluster_day2.ttl_seconds(plan.cluster.certificate_signing_duration) == 1200  # what the rotation check uses
    assert cluster_day2.ttl_seconds("1h30m45s") == 5445
    assert "cluster.token_ttl: 15m" in derived.read_text().splitlines()[0]
    assert load_plan(derive_plan(VM_TESTS / "plans" / "cluster.yaml", tmp_path, key)).cluster.token_ttl == "24h"
