"""cluster-test --stock without VMs: the flag parses and picks the stock plan and image, the derived plan gets the
lab's Debian repository as cluster.distro_mirror and passes `imagegen validate` (and its user-data asks cloud-init's
apt module for exactly the lab's suite), `make cluster-test-stock` builds what the run needs in order, the lab
check fails on a 404, and the session stops LabRepos before it removes the lab network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from .test_vm_session import VM_TESTS, run_session, teardown_of

ROOT = VM_TESTS.parent  # test_vm_session put vm-tests on sys.path (and stubbed libvirt where it is missing)

import cluster_test  # noqa: E402
from harness.render import derive_plan  # noqa: E402
from harness.session import Session  # noqa: E402
from lab.repo import LabRepos, Request  # noqa: E402
from scenarios.cluster_workload import workload_manifest  # noqa: E402

from imagegen.plan import load_plan  # noqa: E402
from imagegen.render import render_user_data  # noqa: E402
from imagegen.state import ensure_state  # noqa: E402

STOCK_PLAN = VM_TESTS / "plans" / "cluster-stock.yaml"
KEY = ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ0labBYJKwYBBAHaRw8BAQdAlabkeylabkeylabkeylabkeylabkeylabkey\n"
       "=AbCd\n-----END PGP PUBLIC KEY BLOCK-----\n")


@pytest.fixture
def lab_repos(tmp_path: Path) -> LabRepos:
    """LabRepos over a lab cache holding only what a plan points at (index.json and the armored key): never
    started."""
    cache = tmp_path / "lab-repo"
    cache.mkdir()
    (cache / "lab-repo.asc").write_text(KEY)
    (cache / "index.json").write_text(json.dumps({
        "debian": {"path": "debian/", "suite": "bookworm", "component": "main"},
        "kubernetes": {"path": "core:/stable:/v1.20/deb/"},
        "registry": {"binary": "registry/docker-registry"},
        "key": {"armored": "lab-repo.asc", "keyring": "lab-repo.gpg"}}))
    gateway = str(load_plan(STOCK_PLAN).network.gateway)
    return LabRepos(gateway, http_port=cluster_test.LAB_HTTP_PORT, registry_port=cluster_test.LAB_REGISTRY_PORT,
                    cache=cache, log_dir=tmp_path / "logs")


def test_stock_flag_parses() -> None:
    args = cluster_test.parse_args(["--stock"])
    assert args.stock and args.spec is None and not cluster_test.parse_args([]).stock
    assert cluster_test.parse_args(["--stock", "--day2"]).day2
    source = (VM_TESTS / "cluster_test.py").read_text()
    assert '"cluster-stock.yaml" if args.stock' in source and '("stock" if args.stock else "node")' in source
    # No bundle disk on --stock (and no baked image: bakes_bundle is false there).
    assert cluster_test.boot_media("worker", "st-worker-1", badjoin=(), plain=Path("stock.qcow2"), baked=None,
                                   disk=Path("bundle.img"), stock=True) == (Path("stock.qcow2"), ())
    assert not cluster_test.bakes_bundle(args, STOCK_PLAN)


def test_derived_plan_has_the_lab_mirror_and_validates(tmp_path: Path, lab_repos: LabRepos) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    derived = derive_plan(STOCK_PLAN, run_dir, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0Xlab0key0for0the0test0run0 ct")
    cluster_test.with_lab_mirror(derived, lab_repos)
    text = derived.read_text()
    assert text.startswith(f"# derived from {STOCK_PLAN}") and "\n# cluster_test.py --stock: " in text
    data = yaml.safe_load(text)
    assert data["cluster"]["distro_mirror"] == {"url": "http://10.82.0.1:8080/debian/", "key_file": "lab-repo.asc",
                                                "suites": ["bookworm"]}
    assert data["ssh_authorized_keys"][-1].endswith(" ct")  # derive_plan's own edit is kept
    assert (run_dir / "lab-repo.asc").read_text() == KEY
    done = subprocess.run([sys.executable, "-m", "imagegen", "validate", str(derived)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = load_plan(derived)
    assert plan.cluster.distro_mirror is not None and plan.cluster.distro_mirror.key == KEY
    worker = next(n for n in plan.nodes if n.role == "worker")
    apt = yaml.safe_load(render_user_data(plan, worker, ensure_state(tmp_path / "state", plan)))["apt"]
    assert apt["sources_list"] == "deb $PRIMARY bookworm main\n"
    assert apt["primary"] == [{"arches": ["default"], "uri": lab_repos.debian_url}]
    assert apt["sources"] == {"imagegen-mirror": {"key": KEY}}
    assert plan.bundle.source == "online"  # so the workload pulls: imagePullPolicy IfNotPresent


def test_workload_pulls_only_without_a_bundle() -> None:
    assert "imagePullPolicy: IfNotPresent" in workload_manifest("st-worker-1", "IfNotPresent")
    assert "imagePullPolicy: Never" in workload_manifest("ct-worker-1")
    from scenarios.cluster_context import ClusterContext

    for plan_name, policy in (("cluster-stock.yaml", "IfNotPresent"), ("cluster.yaml", "Never")):
        ctx = SimpleNamespace(plan=load_plan(VM_TESTS / "plans" / plan_name))
        assert ClusterContext.pull_policy.fget(ctx) == policy  # type: ignore[attr-defined]


def test_makefile_target_builds_image_bundle_and_lab_then_runs() -> None:
    make = (ROOT / "Makefile").read_text()
    assert ("cluster-test-stock: vm-deps\n"
            "\t$(PY) -m imagegen image build --spec stock\n"
            "\t$(MAKE) bundle\n"
            "\t$(PY) vm-tests/lab/repo.py build\n"
            "\t$(PY) vm-tests/cluster_test.py --stock\n") in make
    assert " cluster-test-stock " in make.split(".PHONY:")[1].splitlines()[0]


def test_lab_check_fails_on_a_404(lab_repos: LabRepos) -> None:
    ok_requests = [Request("http", "GET", "/debian/dists/bookworm/InRelease", 200)]
    fine = SimpleNamespace(requests=lambda: ok_requests, missing=lambda: [])
    assert cluster_test.lab_holds_everything(fine) == (True, "1 requests, none for something the lab lacks")  # type: ignore[arg-type]
    # A node asking for a package the lab does not hold: LabRepos's own missing() sees the 404.
    lab_repos._requests.extend([*ok_requests, Request("http", "GET", "/debian/pool/main/n/nginx_1.22.deb", 404)])
    ok, detail = cluster_test.lab_holds_everything(lab_repos)
    assert not ok and detail == "1 of 2 requests got 404: http GET /debian/pool/main/n/nginx_1.22.deb"


def test_session_stops_lab_repos_before_removing_the_network(tmp_path: Path) -> None:
    def body(session: Session) -> None:
        assert session.lab is not None
        calls = session.lab.conn.calls  # the fake libvirt connection's record, in order
        session.on_teardown(lambda: calls.append("stop lab repos"))

    session, calls = run_session(tmp_path, body)
    network = f"network imagegen-{session.run_id}"
    teardown = teardown_of(calls)
    assert teardown[:2] == ["collect (passed)", "stop lab repos"]  # after the guest logs, before any destroy
    assert teardown.index("stop lab repos") < teardown.index(f"destroy {network}")
    assert json.loads((session.run_dir / "report.json").read_text())["cleanup_problems"] == []


def test_a_failing_stop_is_a_cleanup_problem_not_a_crash(tmp_path: Path) -> None:
    def broken() -> None:
        raise OSError("address already gone")

    session, calls = run_session(tmp_path, lambda s: s.on_teardown(broken))
    problems = json.loads((session.run_dir / "report.json").read_text())["cleanup_problems"]
    assert len(problems) == 1 and "address already gone" in problems[0]
    assert f"undefine network imagegen-{session.run_id}" in teardown_of(calls)  # the lab is still removed
