"""Runtime helpers in the bundle: bin/crictl (containerd) and bin/cri-dockerd with its systemd units (issue 11,
defect 5: cri-dockerd was only ever downloaded from GitHub, and the format rejected it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from imagegen.bundle.format import Manifest, layout_problems
from imagegen.bundle.pack import BundleError, pack_bundle, verify_bundle
from imagegen.bundle.units import CRI_DOCKERD_PATH
from tests.test_bundle_pack import make_inputs, spec_for

ALL = ("kubeadm", "kubelet", "kubectl", "crictl", "cri-dockerd")


def test_one_bundle_with_crictl_and_cri_dockerd(tmp_path: Path) -> None:
    dirs = make_inputs(tmp_path / "in", binaries=ALL)
    manifest = pack_bundle(spec_for(dirs, tmp_path / "bundle", runtime="containerd"))
    assert manifest.binaries == tuple(sorted(ALL))
    verified = verify_bundle(tmp_path / "bundle")
    for rel in ("bin/crictl", "bin/cri-dockerd", "systemd/cri-docker.service", "systemd/cri-docker.socket"):
        assert rel in verified.files
    sums = (tmp_path / "bundle/SHA256SUMS").read_text()
    assert "  systemd/cri-docker.service\n" in sums and "  bin/cri-dockerd\n" in sums
    service = (tmp_path / "bundle/systemd/cri-docker.service").read_text()
    assert f"ExecStart={CRI_DOCKERD_PATH} --container-runtime-endpoint fd://" in service
    assert "Requires=cri-docker.socket" in service


def test_without_cri_dockerd_no_units(tmp_path: Path) -> None:
    dirs = make_inputs(tmp_path / "in", binaries=("kubeadm", "kubelet", "kubectl", "crictl"))
    manifest = pack_bundle(spec_for(dirs, tmp_path / "bundle", runtime="containerd"))
    assert not [p for p in manifest.files if "cri-docker" in p]


def _manifest(files: list[str]) -> Manifest:
    base = ["bin/kubeadm", "bin/kubelet", "bin/kubectl", "systemd/kubelet.service", "systemd/10-kubeadm.conf",
            "cni/loopback", "images/pause.tar"]
    from imagegen.bundle.format import BundleImage
    return Manifest("1.28.15", "docker", {p: "0" * 64 for p in base + files},
                    (BundleImage("images/pause.tar", ("x/pause:1",)),), ("loopback",), "test")


def test_layout_rules_for_cri_dockerd_units() -> None:
    assert layout_problems(_manifest(["bin/cri-dockerd", "systemd/cri-docker.service",
                                      "systemd/cri-docker.socket"])) == []
    assert layout_problems(_manifest(["bin/cri-dockerd"])) == [
        "bin/cri-dockerd needs its unit systemd/cri-docker.service",
        "bin/cri-dockerd needs its unit systemd/cri-docker.socket"]
    assert layout_problems(_manifest(["systemd/cri-docker.socket"])) == [
        "systemd/cri-docker.socket without bin/cri-dockerd"]
    assert any("unexpected systemd file systemd/evil.service" in p
               for p in layout_problems(_manifest(["systemd/evil.service"])))


def test_pack_still_rejects_unknown_binaries(tmp_path: Path) -> None:
    dirs = make_inputs(tmp_path / "in", binaries=("kubeadm", "kubelet", "kubectl", "runc"))
    with pytest.raises(BundleError, match="unexpected file"):
        pack_bundle(spec_for(dirs, tmp_path / "bundle"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
                    reason="systemd-analyze not installed")
def test_cri_dockerd_units_pass_systemd_analyze(tmp_path: Path) -> None:
    dirs = make_inputs(tmp_path / "in", binaries=ALL)
    pack_bundle(spec_for(dirs, tmp_path / "bundle"))
    bundle = tmp_path / "bundle"
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in ("cri-docker.service", "cri-docker.socket"):
        shutil.copy(bundle / "systemd" / unit, root / "etc/systemd/system" / unit)
    (root / "usr/local/bin").mkdir(parents=True)
    shutil.copy(bundle / "bin/cri-dockerd", root / "usr/local/bin/cri-dockerd")
    (root / "bin").mkdir()
    shutil.copy("/bin/kill", root / "bin/kill")  # ExecReload
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "cri-docker.socket",
                             "cri-docker.service"], capture_output=True, text=True, check=False)
    # Unknown keys and unparsable values are only warnings, so any output counts as a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
