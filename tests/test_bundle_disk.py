"""`imagegen bundle disk`: real mke2fs output, read back with debugfs/dumpe2fs/blkid (no mount)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imagegen.bundle import cli
from imagegen.bundle.dockerarchive import (
    ImageConfig,
    LayerEntry,
    write_docker_archive,
    write_layer_tar,
)
from imagegen.bundle.pack import BundleError, PackSpec, make_disk, pack_bundle

SBIN = "/usr/sbin:/sbin"
pytestmark = pytest.mark.skipif(
    shutil.which("mke2fs", path=os.environ.get("PATH", "") + ":" + SBIN) is None,
    reason="e2fsprogs not installed",
)


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN)
    assert found, f"{name} not installed"
    return found


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    for d in ("bin", "images", "cni"):
        (src / d).mkdir(parents=True)
    for name in ("kubeadm", "kubelet", "kubectl"):
        shutil.copy("/bin/true", src / "bin" / name)
    shutil.copy("/bin/true", src / "cni" / "loopback")
    layer = tmp_path / "layer.tar"
    with layer.open("wb") as fh:
        write_layer_tar([LayerEntry("pause", "file", 0o755, source=Path("/bin/true"))], fh)
    write_docker_archive(src / "images" / "pause.tar", ["k8s.gcr.io/pause:3.2"], [layer], ImageConfig())
    out = tmp_path / "bundle"
    pack_bundle(PackSpec("1.20.2", "docker", src / "bin", src / "images", src / "cni", out))
    return out


def test_disk_image_label_and_contents(bundle: Path, tmp_path: Path) -> None:
    img = tmp_path / "bundle.img"
    disk = make_disk(bundle, img)
    assert disk.label == "imagegen-bundle" and img.stat().st_size == disk.size_bytes
    header = subprocess.run([_tool("dumpe2fs"), "-h", str(img)], capture_output=True, text=True,
                            check=True).stdout
    assert "Filesystem volume name:   imagegen-bundle" in header
    assert f"Filesystem UUID:          {disk.uuid}" in header
    label = subprocess.run([_tool("blkid"), "-p", "-o", "value", "-s", "LABEL", str(img)],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert label == "imagegen-bundle"
    listing = subprocess.run([_tool("debugfs"), "-R", "ls -l /bin", str(img)], capture_output=True,
                             text=True, check=True).stdout
    for name in ("kubeadm", "kubelet", "kubectl"):
        assert name in listing
    assert "100755" in listing  # modes survive, so the node can run the binaries in place
    # Owners and times are normalised (root, the fixed epoch 2021-01-13), not copied from the host.
    for line in listing.splitlines():
        if line.strip():
            assert "     0      0 " in line and "13-Jan-2021" in line, line
    manifest = subprocess.run([_tool("debugfs"), "-R", "cat /manifest.json", str(img)],
                              capture_output=True, check=True).stdout
    assert manifest == (bundle / "manifest.json").read_bytes()
    fsck = subprocess.run([_tool("e2fsck"), "-fn", str(img)], capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_disk_image_is_deterministic(bundle: Path, tmp_path: Path) -> None:
    first = make_disk(bundle, tmp_path / "one.img")
    # chmod to the same mode changes only ctime, which mke2fs -d would copy: it must not matter.
    for path in bundle.rglob("*"):
        path.chmod(path.stat().st_mode)
    second = make_disk(bundle, tmp_path / "two.img")
    assert first.uuid == second.uuid
    assert (tmp_path / "one.img").read_bytes() == (tmp_path / "two.img").read_bytes()


def test_disk_refuses_broken_bundle(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "systemd/kubelet.service").write_text("tampered\n")
    with pytest.raises(BundleError, match="kubelet.service: checksum mismatch"):
        make_disk(bundle, tmp_path / "x.img")
    assert not (tmp_path / "x.img").exists()
    parser = argparse.ArgumentParser(prog="imagegen")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bundle", "disk", str(bundle), str(tmp_path / "x.img")])
    assert args.func(args) == 2
    assert "systemd/kubelet.service" in capsys.readouterr().err
