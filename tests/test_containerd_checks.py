"""cluster-test's containerd checks (vm-tests/harness/guest.py) read real output correctly.

The in-guest commands are answered from recordings of the real programs: `crictl info` of crictl 1.25.0 against
Debian's containerd 1.6.20 running imagegen's rendered config.toml for the cluster-test plan (recorded by
running vm-tests/bundle/check_import.py's private containerd; tests/data/containerd/crictl-info-1.6.20.json, paths
of the private daemon replaced by the node's), and `containerd config dump` run live with the unpacked bookworm
containerd. So a check that misreads the shape of that output fails here, not after a 40-minute VM run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen import kubeadm
from imagegen.plan import load_plan
from imagegen.render import render_cluster
from imagegen.state import ensure_state
from tests.conftest import CACHE, ROOT, Rendered

sys.path.insert(0, str(ROOT / "vm-tests"))
from harness import guest  # noqa: E402
from harness.report import Check  # noqa: E402
from harness.ssh import Result  # noqa: E402

CRICTL_INFO = ROOT / "tests/data/containerd/crictl-info-1.6.20.json"
PLAN = ROOT / "vm-tests/plans/cluster.yaml"


class FakeSsh:
    """Answers `sudo -n sh -c '<command>'` from a table of command -> output."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def run(self, command: str, timeout: float = 0, connect_timeout: float = 0) -> Result:
        inner = command.removeprefix("sudo -n sh -c ")
        inner = inner[1:-1].replace("'\"'\"'", "'") if inner.startswith("'") else inner
        self.asked.append(inner)
        if inner not in self.answers:
            return Result(1, "", f"unexpected command {inner}")
        return Result(0, self.answers[inner], "")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, str]:
    plan = load_plan(PLAN)
    state = ensure_state(tmp_path_factory.mktemp("state"), plan)
    r = Rendered(plan, state, render_cluster(plan, state))
    return r, next(n.name for n in plan.nodes if n.role == "worker")


def config_dump(config_toml: str, tmp_path: Path) -> str:
    binary = CACHE / "containerd/bookworm/root/usr/bin/containerd"
    if not binary.exists():
        pytest.fail(f"containerd (bookworm) is not unpacked under {binary.parent}: run `make deps`")
    path = tmp_path / "config.toml"
    path.write_text(config_toml)
    return subprocess.run([str(binary), "--config", str(path), "config", "dump"], capture_output=True, text=True,
                          check=True).stdout


def test_cri_config_check_reads_crictl_info(node: tuple[Rendered, str]) -> None:
    r, _ = node
    checks: list[Check] = []
    c = guest.Checker("w", FakeSsh({"crictl info": CRICTL_INFO.read_text()}), checks)  # type: ignore[arg-type]
    guest.check_cri_config(c, kubeadm.pause_image(r.plan))
    assert checks[-1].ok, checks[-1].detail
    assert "SystemdCgroup=True" in checks[-1].detail and "configPath=/etc/containerd/certs.d" in checks[-1].detail
    guest.check_cri_config(c, "registry.example.internal/pause:3.9")
    assert not checks[-1].ok


def test_cri_config_check_fails_on_cgroupfs() -> None:
    info = json.loads(CRICTL_INFO.read_text())
    info["config"]["containerd"]["runtimes"]["runc"]["options"] = {}
    checks: list[Check] = []
    c = guest.Checker("w", FakeSsh({"crictl info": json.dumps(info)}), checks)  # type: ignore[arg-type]
    guest.check_cri_config(c, info["config"]["sandboxImage"])
    assert not checks[-1].ok and "SystemdCgroup=None" in checks[-1].detail


def test_mirror_check_reads_config_dump_and_hosts_toml(node: tuple[Rendered, str], tmp_path: Path) -> None:
    r, worker = node
    files = r.files(worker)
    answers = {
        "containerd config dump": config_dump(files["/etc/containerd/config.toml"]["content"], tmp_path),
        "cat /etc/containerd/certs.d/docker.io/hosts.toml":
            files["/etc/containerd/certs.d/docker.io/hosts.toml"]["content"],
    }
    checks: list[Check] = []
    c = guest.Checker(worker, FakeSsh(answers), checks)  # type: ignore[arg-type]
    mirrors = list(r.plan.cluster.registry_mirrors)
    guest.check_containerd_mirror(c, mirrors)
    assert checks[-1].ok, checks[-1].detail
    guest.check_containerd_mirror(c, [*mirrors, "https://other.example.internal"])
    assert not checks[-1].ok
    answers["containerd config dump"] = config_dump(
        files["/etc/containerd/config.toml"]["content"].replace("config_path", "config_dir"), tmp_path)
    guest.check_containerd_mirror(c, mirrors)
    assert not checks[-1].ok, "a config without config_path must fail the check"


def test_pod_sandbox_check(node: tuple[Rendered, str]) -> None:
    r, _ = node
    pause = kubeadm.pause_image(r.plan)
    pod = "4f0c1d2e3b4a5f60718293a4b5c6d7e8f90112233445566778899aabbccddeef"
    answers = {
        "crictl pods --label 'app=ct-web' --state ready -q": pod + "\n",
        f"crictl inspectp {pod}": json.dumps({"status": {"id": pod}, "info": {"image": pause}}),
    }
    checks: list[Check] = []
    c = guest.Checker("w", FakeSsh(answers), checks)  # type: ignore[arg-type]
    guest.check_pod_sandbox_image(c, "app=ct-web", pause)
    assert checks[-1].ok, checks[-1].detail
    # Recorded by image ID instead of the tag: resolved through crictl inspecti.
    answers[f"crictl inspectp {pod}"] = json.dumps({"info": {"image": "sha256:80d28bed"}})
    answers[f"crictl inspecti -o json '{pause}'"] = json.dumps({"status": {"id": "sha256:80d28bed"}})
    guest.check_pod_sandbox_image(c, "app=ct-web", pause)
    assert checks[-1].ok, checks[-1].detail
    answers[f"crictl inspectp {pod}"] = json.dumps({"info": {"image": "registry.k8s.io/pause:3.9"}})
    guest.check_pod_sandbox_image(c, "app=ct-web", pause)
    assert not checks[-1].ok
