"""The control planes' certificate renewal (cert-renew.sh, run daily by imagegen-cert-renew.timer), rendered from a
plan and run under bash in a temporary directory: real `openssl` certificates (10 and 400 days) and real `date`,
stand-ins for kubeadm, curl, etcdctl, sleep and systemctl on PATH that record their calls. The curl stand-in plays
the kubelet: a component answers while its manifest is in the manifests directory. What kubeadm and the kubelet
really do is for a VM run; this shows the script's own decisions: renew only when due, restart one component at a
time, put every manifest back, resume after a failure, leave etcd alone while a member is unhealthy."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Rendered

SCRIPT = "/usr/local/lib/imagegen/cert-renew.sh"
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]

FAKES = {
    "kubeadm": 'echo "kubeadm $*" >>"$T/calls"\n'
               '[ "$*" = "certs renew all" ] && cp "$T/renewed.crt" "$T/kube/pki/apiserver.crt"\n'
               'exit "$(cat "$T/kubeadm-rc" 2>/dev/null || echo 0)"\n',
    "curl": 'url=${*: -1}\necho "curl $url" >>"$T/calls"\n'
            'case "$url" in\n  *:2381/*) c=etcd ;;\n  *:10257/*) c=kube-controller-manager ;;\n'
            '  *:10259/*) c=kube-scheduler ;;\n  *) c=kube-apiserver ;;\nesac\n'
            'grep -qx "$c" "$T/never-up" 2>/dev/null && exit 7\n'
            '[ -f "$T/kube/manifests/$c.yaml" ] || exit 7\n',
    "etcdctl": 'echo "etcdctl $*" >>"$T/calls"\n[ ! -e "$T/etcd-sick" ]\n',
    "sleep": 'echo "sleep $*" >>"$T/sleeps"\n',
    "systemctl": 'echo "systemctl $*" >>"$T/calls"\n',
}


def openssl_cert(path: Path, days: int) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(path.with_suffix(".key")), "-out", str(path), "-days", str(days),
                    "-subj", "/CN=kube-apiserver"], check=True, capture_output=True)


class Node:
    """A control plane's /etc/kubernetes, kubeadm.yaml and state directory under tmp_path, and the script."""

    def __init__(self, tmp_path: Path, script: str, days: int) -> None:
        self.t = tmp_path
        self.kube = tmp_path / "kube"
        (self.kube / "pki").mkdir(parents=True)
        (self.kube / "manifests").mkdir()
        for c in COMPONENTS:
            (self.kube / "manifests" / f"{c}.yaml").write_text(f"kind: Pod\nmetadata: {{name: {c}}}\n")
        openssl_cert(self.kube / "pki" / "apiserver.crt", days)
        openssl_cert(tmp_path / "renewed.crt", 365)
        (tmp_path / "kubeadm.yaml").write_text("localAPIEndpoint:\n  advertiseAddress: 192.168.10.12\n"
                                               "  bindPort: 8443\n")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, body in FAKES.items():
            (bin_dir / name).write_text(f"#!/bin/bash\nT={tmp_path}\n{body}")
            (bin_dir / name).chmod(0o755)
        for line, new in (("KUBE_DIR=/etc/kubernetes", f"KUBE_DIR={self.kube}"),
                          ("KUBEADM_CONFIG=/etc/imagegen/kubeadm.yaml", f"KUBEADM_CONFIG={tmp_path}/kubeadm.yaml"),
                          ("STATE_DIR=/var/lib/imagegen/cert-renew", f"STATE_DIR={tmp_path}/state")):
            assert f"\n{line}\n" in script
            script = script.replace(f"\n{line}\n", f"\n{new}\n")
        self.script = tmp_path / "cert-renew.sh"
        self.script.write_text(script)
        self.manifests = {c: (self.kube / "manifests" / f"{c}.yaml").read_text() for c in COMPONENTS}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        (self.t / "calls").unlink(missing_ok=True)
        env = {"PATH": f"{self.t}/bin:/usr/bin:/bin", "HOME": str(self.t)}
        return subprocess.run(["bash", str(self.script), *args], capture_output=True, text=True, env=env,
                              timeout=120)

    @property
    def calls(self) -> list[str]:
        path = self.t / "calls"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def pending(self) -> list[str] | None:
        path = self.t / "state" / "restart-pending"
        return path.read_text().split() if path.exists() else None

    def manifests_in_place(self) -> bool:
        here = {c: (self.kube / "manifests" / f"{c}.yaml").read_text() for c in COMPONENTS
                if (self.kube / "manifests" / f"{c}.yaml").exists()}
        held = self.kube / "imagegen-held-manifests"
        return here == self.manifests and not (held.exists() and any(held.iterdir()))


@pytest.fixture
def script(rendered: dict[str, Rendered]) -> str:
    return rendered["ha"].file("cp-2", SCRIPT)


def test_rendered_for_control_planes_only(rendered: dict[str, Rendered], script: str, tmp_path: Path) -> None:
    r = rendered["ha"]
    for cp in ("cp-1", "cp-2", "cp-3"):
        files = r.files(cp)
        assert files[SCRIPT]["permissions"] == "0755"
        assert {"/etc/systemd/system/imagegen-cert-renew.service",
                "/etc/systemd/system/imagegen-cert-renew.timer"} <= set(files)
    assert SCRIPT not in r.files("worker-1") and SCRIPT not in r.files("lb-1")
    timers = {r.file(cp, "/etc/systemd/system/imagegen-cert-renew.timer") for cp in ("cp-1", "cp-2", "cp-3")}
    assert len(timers) == 3 and all("RandomizedDelaySec=" in t for t in timers)  # a different hour each
    (tmp_path / "s.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "s.sh")]).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck:  # also in test_shell_and_units for every rendered script
        result = subprocess.run([shellcheck, "-S", "style", str(tmp_path / "s.sh")], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_not_due_changes_nothing(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, days=400)
    result = node.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"apiserver\.crt expires in (399|400) days; renewal starts 30 days before", result.stdout)
    assert node.calls == [] and node.pending is None and node.manifests_in_place()


def test_now_renews_whatever_the_days_left(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, days=400)
    result = node.run("--now")
    assert result.returncode == 0, result.stdout + result.stderr
    assert node.calls[0] == "kubeadm certs renew all" and node.pending is None and node.manifests_in_place()
    assert node.run("--later").returncode == 2


def test_due_renews_then_restarts_one_at_a_time(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, days=10)
    result = node.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"apiserver\.crt expires in (9|10) days \(renewal at 30, --now: 0\): kubeadm certs renew all",
                     result.stdout)
    urls = {"etcd": "http://127.0.0.1:2381/health", "kube-apiserver": "https://127.0.0.1:8443/healthz",
            "kube-controller-manager": "https://127.0.0.1:10257/healthz",
            "kube-scheduler": "https://127.0.0.1:10259/healthz"}
    # Renew first; then each component: down once its manifest is out, up once it is back, before the next.
    expected = ["kubeadm certs renew all", next(c for c in node.calls if c.startswith("etcdctl"))]
    for c in COMPONENTS:
        expected += [f"curl {urls[c]}", f"curl {urls[c]}"]
    assert node.calls == expected
    assert "endpoint health --cluster" in expected[1]
    assert node.manifests_in_place() and node.pending is None
    assert re.search(r"now expires in (364|365) days", result.stdout)
    assert not any(c.startswith("systemctl") for c in node.calls)
    assert node.run().returncode == 0 and not any(c.startswith("kubeadm") for c in node.calls)  # done for a year


def test_a_component_that_does_not_come_back_stops_the_run_and_is_resumed(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, days=10)
    (tmp_path / "never-up").write_text("kube-controller-manager\n")
    result = node.run()
    assert result.returncode == 1
    assert "kube-controller-manager: not healthy 300s after its manifest came back" in result.stdout
    assert "kube-scheduler" not in result.stdout  # never taken down while the one before is not back
    assert node.pending == ["kube-controller-manager", "kube-scheduler"] and node.manifests_in_place()
    (tmp_path / "never-up").unlink()
    result = node.run()
    assert result.returncode == 0, result.stdout
    assert "finishing the restarts of an earlier renewal" in result.stdout
    assert not any(c.startswith("kubeadm") for c in node.calls)
    assert [c for c in node.calls if "10259" in c] == ["curl https://127.0.0.1:10259/healthz"] * 2
    assert node.pending is None and node.manifests_in_place()


def test_etcd_is_not_restarted_while_a_member_is_unhealthy(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, days=10)
    (tmp_path / "etcd-sick").touch()
    result = node.run()
    assert result.returncode == 1 and "not every member is healthy" in result.stdout
    assert not any(c.startswith("curl") for c in node.calls) and node.manifests_in_place()
    assert node.pending == COMPONENTS
    (tmp_path / "etcd-sick").unlink()
    assert node.run().returncode == 0 and node.pending is None and node.manifests_in_place()


def test_failed_renewal_restarts_nothing(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, days=10)
    (tmp_path / "kubeadm-rc").write_text("1")
    result = node.run()
    assert result.returncode == 1 and "nothing restarted" in result.stdout
    assert node.calls == ["kubeadm certs renew all"] and node.pending is None


def test_a_manifest_held_by_a_killed_run_goes_back(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, days=400)
    held = node.kube / "imagegen-held-manifests"
    held.mkdir()
    (node.kube / "manifests" / "etcd.yaml").rename(held / "etcd.yaml")
    result = node.run()
    assert result.returncode == 0 and "put back etcd.yaml" in result.stdout
    assert node.manifests_in_place()
