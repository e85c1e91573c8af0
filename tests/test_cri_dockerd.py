"""cri-dockerd's pause image (issue 11, defect 6).

cri-dockerd creates pod sandboxes from its own default, registry.k8s.io/pause:3.9 (upstream
core/sandbox_helpers.go, `defaultSandboxImage`), unless started with --pod-infra-container-image; since Kubernetes
1.27 the kubelet no longer passes that flag on. With a private image_repository (or offline) sandboxes then cannot
start. imagegen sets it to the plan's pause image in a cri-docker.service drop-in. The upstream default is an
upstream fact kept here as test data; cri-dockerd itself cannot run here (not packaged in Debian).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from imagegen import kubeadm
from imagegen.bundle.units import CRI_DOCKERD_UNITS
from imagegen.plan import load_plan
from imagegen.render import render_cluster
from imagegen.state import ensure_state
from tests.conftest import ROOT, Rendered

DROPIN = "/etc/systemd/system/cri-docker.service.d/10-imagegen-pause.conf"
UPSTREAM_DEFAULT_SANDBOX = "registry.k8s.io/pause:3.9"  # cri-dockerd v0.3.x core/sandbox_helpers.go


def exec_start(dropin: str) -> list[str]:
    return [ln.split("=", 1)[1] for ln in dropin.splitlines() if ln.startswith("ExecStart=")]


def render_variant(tmp_path: Path, **cluster: object) -> Rendered:
    doc = yaml.safe_load((ROOT / "tests/plans/k8s-1.28-docker.yaml").read_text())
    doc["cluster"].update(cluster)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(doc))
    plan = load_plan(path)
    state = ensure_state(tmp_path / "state", plan)
    return Rendered(plan, state, render_cluster(plan, state))


def test_dropin_sets_the_plans_pause_image(rendered: dict[str, Rendered]) -> None:
    r = rendered["k8s-1.28-docker"]
    pause = kubeadm.pause_image(r.plan)
    for node in r.plan.nodes:
        files = r.files(node.name)
        if not node.is_kubernetes:
            assert DROPIN not in files
            continue
        # The reset line, then exactly one command with the plan's image.
        assert exec_start(files[DROPIN]["content"]) == [
            "", f"cri-dockerd --container-runtime-endpoint fd:// --pod-infra-container-image={pause}"]
        assert "unix:///var/run/cri-dockerd.sock" in files["/etc/crictl.yaml"]["content"]


def test_private_image_repository_reaches_the_dropin(tmp_path: Path) -> None:
    r = render_variant(tmp_path, image_repository="registry.example.internal/k8s")
    pause = kubeadm.pause_image(r.plan)
    assert pause.startswith("registry.example.internal/k8s/pause:") and pause != UPSTREAM_DEFAULT_SANDBOX
    worker = next(n for n in r.plan.nodes if n.role == "worker")
    assert f"--pod-infra-container-image={pause}" in r.file(worker.name, DROPIN)


def test_no_dropin_without_cri_dockerd(rendered: dict[str, Rendered]) -> None:
    for name, r in rendered.items():
        if r.plan.cluster.cri_dockerd:
            continue
        for node in r.plan.nodes:
            assert DROPIN not in r.files(node.name), f"{name}/{node.name}"
            if r.plan.cluster.container_runtime == "docker":
                assert "/etc/crictl.yaml" not in r.files(node.name), f"{name}/{node.name}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
                    reason="systemd-analyze not installed")
@pytest.mark.parametrize("binary_dir", ["usr/local/bin", "usr/bin"])  # from the bundle / from the .deb
def test_dropin_with_the_unit_passes_systemd_analyze(rendered: dict[str, Rendered], tmp_path: Path,
                                                     binary_dir: str) -> None:
    r = rendered["k8s-1.28-docker"]
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    (units / "cri-docker.service.d").mkdir(parents=True)
    for rel, text in CRI_DOCKERD_UNITS.items():
        (units / Path(rel).name).write_text(text.replace("/usr/local/bin/", f"/{binary_dir}/"))
    (units / "cri-docker.service.d/10-imagegen-pause.conf").write_text(r.file("wk-a", DROPIN))
    (root / binary_dir).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/true", root / binary_dir / "cri-dockerd")
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/kill", root / "bin/kill")
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "cri-docker.service"],
                            capture_output=True, text=True, check=False)
    # Unknown keys and unparsable values are only warnings, so any output counts as a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
