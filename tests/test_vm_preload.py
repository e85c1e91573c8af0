"""cluster-test with the bundle baked into the image, without VMs: which runs boot the baked image, and the checks
that read install_kubernetes's log lines (the lines the node program really writes, rendered and run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Rendered
from tests.test_bundle_node_install import PRELOAD_CALL, pack_two_images, run

from .test_vm_session import VM_TESTS

PLANS = VM_TESTS / "plans"  # test_vm_session put vm-tests on sys.path (and stubbed libvirt where it is missing)

import cluster_test  # noqa: E402
from scenarios import cluster_boot  # noqa: E402

from imagegen.image.content import BUNDLE_DIR  # noqa: E402


@pytest.mark.parametrize("argv,plan,baked", [
    ([], "cluster.yaml", True),
    (["--day2"], "cluster.yaml", True),
    (["--docker"], "cluster-docker.yaml", False),
    (["--ha"], "cluster-ha.yaml", False),
    (["--stock"], "cluster-stock.yaml", False),
])
def test_which_runs_boot_the_baked_image(argv: list[str], plan: str, baked: bool) -> None:
    args = cluster_test.parse_args(argv)
    assert cluster_test.bakes_bundle(args, PLANS / plan) is baked


class FakeChecker:
    """guest.Checker's sudo, answering with the node's bootstrap.log lines the check greps for."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.commands: list[str] = []

    def sudo(self, command: str, timeout: float = 120) -> tuple[int, str]:
        self.commands.append(command)
        lines = [ln for ln in self.log.splitlines()
                 if "] installing Kubernetes from the bundle at " in ln or "] image " in ln]
        return (0 if lines else 1), "\n".join(lines)


def bundle_dir(tmp_path: Path) -> Path:
    (tmp_path / "node").mkdir(parents=True)
    (tmp_path / "node" / "images-control-plane.list").write_text("images/etcd.tar\nimages/pause.tar\n")
    (tmp_path / "node" / "images-worker.list").write_text("images/pause.tar\n")
    return tmp_path


def node_log(rendered: Rendered, tmp_path: Path, record: bool, role: str = "worker") -> str:
    """install_kubernetes's log from the rendered node program (test_bundle_node_install's stand-ins), as the
    bootstrap writes it: `<time> [install_kubernetes] <text>`."""
    bundle = pack_two_images(tmp_path)
    sums = dict(reversed(ln.split("  ", 1)) for ln in (bundle / "SHA256SUMS").read_text().splitlines())
    rec = tmp_path / "record"
    rec.write_text(f"{sums['images/pause.tar']}\timages/pause.tar\tk8s.gcr.io/pause:3.2\n" if record else "")
    where = BUNDLE_DIR if record else cluster_boot.BUNDLE_DISK_MOUNT
    call = PRELOAD_CALL.replace('log() { echo "log: $*" >>"$CALLS"; }',
                                'log() { echo "2026-01-01T00:00:00Z [install_kubernetes] $*" >>"$CALLS"; }')
    _, calls = run(rendered, "worker-1", bundle, tmp_path, call + 'install_from_bundle "$BUNDLE"',
                   RECORD=str(rec), IMAGES="k8s.gcr.io/pause:3.2", NODE_ROLE=role)
    return "\n".join(calls).replace("from the bundle at B", f"from the bundle at {where}")


def test_a_baked_node_passes_the_preload_check(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    log = node_log(rendered["ha"], tmp_path, record=True)
    c = FakeChecker(log)
    ok, detail = cluster_boot.images_preloaded(c, cluster_boot.role_images(bundle_dir(tmp_path / "b"), "worker"))
    assert ok, detail
    assert "/var/log/imagegen/bootstrap.log" in c.commands[0]
    ok, detail = cluster_boot.images_imported_from_disk(c, {"images/pause.tar"})
    assert not ok


def test_a_disk_node_passes_the_disk_check(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    log = node_log(rendered["ha"], tmp_path, record=False)
    c = FakeChecker(log)
    ok, detail = cluster_boot.images_imported_from_disk(c, {"images/pause.tar"})
    assert ok, detail
    ok, detail = cluster_boot.images_preloaded(c, {"images/pause.tar"})
    assert not ok and "imported ['images/pause.tar']" in detail


def test_a_check_needs_every_archive_of_the_role(tmp_path: Path) -> None:
    log = ("t [install_kubernetes] installing Kubernetes from the bundle at /opt/imagegen/bundle\n"
           "t [install_kubernetes] image images/pause.tar: preloaded at image build, not imported\n")
    want = cluster_boot.role_images(bundle_dir(tmp_path), "control-plane")
    ok, detail = cluster_boot.images_preloaded(FakeChecker(log), want)
    assert not ok and "images/etcd.tar" in detail
    assert not cluster_boot.images_preloaded(FakeChecker(""), want)[0]


@pytest.mark.parametrize("role,name,baked,stock,want", [
    ("control-plane", "ct-cp-1", True, False, ("baked", ())),
    ("worker", "ct-worker-1", True, False, ("baked", ())),
    ("worker", "ct-badjoin", True, False, ("plain", ("disk",))),  # the disk's import stays proven
    ("load-balancer", "ct-lb-1", True, False, ("plain", ())),
    ("control-plane", "ct-cp-1", False, False, ("plain", ("disk",))),  # --docker, --ha
    ("worker", "ct-badjoin", False, False, ("plain", ("disk",))),
    ("worker", "st-worker-1", False, True, ("plain", ())),  # --stock: no bundle at all
])
def test_boot_media(role: str, name: str, baked: bool, stock: bool, want: tuple[str, tuple[str, ...]]) -> None:
    image, extra = cluster_test.boot_media(role, name, badjoin=("ct-badjoin",), plain=Path("plain"),
                                           baked=Path("baked") if baked else None, disk=Path("disk"), stock=stock)
    assert (str(image), tuple(map(str, extra))) == want
