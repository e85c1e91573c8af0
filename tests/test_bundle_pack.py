"""Bundle pack/verify round trip on small real files, checked with coreutils' sha256sum too."""

from __future__ import annotations

import argparse
import json
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
from imagegen.bundle.format import (
    BundleFormatError,
    manifest_to_json,
    parse_manifest,
    parse_sha256sums,
)
from imagegen.bundle.pack import (
    DEFAULT_EPOCH,
    BundleError,
    PackSpec,
    pack_bundle,
    verify_bundle,
)

PAUSE_TAG = "k8s.gcr.io/pause:3.2"


def make_inputs(root: Path, binaries: tuple[str, ...] = ("kubeadm", "kubelet", "kubectl")) -> dict[str, Path]:
    """Stand-in release inputs: real executables (copies of /bin/true) and one real image archive."""
    dirs = {name: root / name for name in ("bin", "images", "cni")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for name in binaries:
        shutil.copy("/bin/true", dirs["bin"] / name)
    for name in ("loopback", "bridge", "host-local"):
        shutil.copy("/bin/true", dirs["cni"] / name)
    layer = root / "layer.tar"
    with layer.open("wb") as fh:
        write_layer_tar([LayerEntry("pause", "file", 0o755, source=Path("/bin/true"))], fh)
    write_docker_archive(dirs["images"] / "pause.tar", [PAUSE_TAG], [layer], ImageConfig(entrypoint=("/pause",)))
    return dirs


def spec_for(dirs: dict[str, Path], out: Path, **kw: object) -> PackSpec:
    args: dict[str, object] = {
        "kubernetes_version": "v1.20.2", "runtime": "docker", "bin_dir": dirs["bin"],
        "images_dir": dirs["images"], "cni_dir": dirs["cni"], "out": out,
    }
    args.update(kw)
    return PackSpec(**args)  # type: ignore[arg-type]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="imagegen")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    dirs = make_inputs(tmp_path / "in")
    pack_bundle(spec_for(dirs, tmp_path / "bundle"))
    return tmp_path / "bundle"


def test_pack_layout_and_manifest(bundle: Path) -> None:
    manifest = verify_bundle(bundle)
    assert manifest.kubernetes_version == "1.20.2"
    assert manifest.runtime == "docker"
    assert manifest.tags == (PAUSE_TAG,)
    assert manifest.cni_plugins == ("bridge", "host-local", "loopback")
    assert manifest.binaries == ("kubeadm", "kubectl", "kubelet")
    for rel in ("bin/kubelet", "cni/loopback", "images/pause.tar", "systemd/kubelet.service",
                "systemd/10-kubeadm.conf"):
        assert (bundle / rel).is_file()
    assert (bundle / "bin/kubeadm").stat().st_mode & 0o777 == 0o755
    assert (bundle / "images/pause.tar").stat().st_mode & 0o777 == 0o644
    dropin = (bundle / "systemd/10-kubeadm.conf").read_text()
    assert "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env" in dropin
    assert "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf" in dropin
    assert "KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml" in dropin
    assert "ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS" in dropin
    doc = json.loads((bundle / "manifest.json").read_text())
    assert doc["format"] == 2 and doc["images"] == [{"file": "images/pause.tar", "tags": [PAUSE_TAG]}]
    # Round trip through the pure model gives the same bytes.
    assert manifest_to_json(parse_manifest((bundle / "manifest.json").read_bytes())) == (
        bundle / "manifest.json"
    ).read_bytes()
    # SHA256SUMS covers every manifest file plus manifest.json itself.
    sums = parse_sha256sums((bundle / "SHA256SUMS").read_text())
    lists = {"node/install.list", "node/images-control-plane.list", "node/images-worker.list",
             "node/kubernetes-version"}
    assert set(sums) == set(doc["files"]) | {"manifest.json"} | lists
    # The node's lists: what it installs, the images per role, the version; a shell reads them line by line.
    assert (bundle / "node/install.list").read_text().splitlines() == sorted(
        p for p in doc["files"] if not p.startswith(("images/", "extras/")))
    assert (bundle / "node/images-worker.list").read_text() == "images/pause.tar\n"
    assert (bundle / "node/kubernetes-version").read_text() == doc["kubernetes_version"] + "\n"
    assert not list(bundle.parent.glob(".bundle.tmp-*"))


def test_coreutils_sha256sum_accepts_sums(bundle: Path) -> None:
    ok = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=bundle,
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "bin/kubelet: OK" in ok.stdout and "manifest.json: OK" in ok.stdout
    with (bundle / "cni/bridge").open("ab") as fh:
        fh.write(b"\0")
    bad = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle,
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "cni/bridge: FAILED" in bad.stdout


def test_corrupted_file_is_named(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (bundle / "bin/kubelet").open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff\xfe")
    with pytest.raises(BundleError) as err:
        verify_bundle(bundle)
    assert len(err.value.problems) == 1
    assert "bin/kubelet: checksum mismatch" in err.value.problems[0]
    assert run_cli("bundle", "verify", str(bundle)) == 2
    assert "bin/kubelet: checksum mismatch" in capsys.readouterr().err


def test_missing_unlisted_and_tampered_manifest(bundle: Path) -> None:
    (bundle / "cni/loopback").unlink()
    (bundle / "images/extra.tar").write_bytes(b"x")
    with pytest.raises(BundleError) as err:
        verify_bundle(bundle)
    text = str(err.value)
    assert "cni/loopback: missing" in text
    assert "images/extra.tar: not listed in manifest.json" in text
    manifest = bundle / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"runtime": "docker"', '"runtime": "containerd"'))
    with pytest.raises(BundleError, match="containerd needs bin/crictl"):
        verify_bundle(bundle)


def test_sums_disagreeing_with_manifest(bundle: Path) -> None:
    sums = bundle / "SHA256SUMS"
    lines = sums.read_text().splitlines()
    sums.write_text("\n".join(ln for ln in lines if not ln.endswith("  bin/kubectl")) + "\n")
    with pytest.raises(BundleError, match="entry for bin/kubectl disagrees"):
        verify_bundle(bundle)


def test_verify_cli_ok(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("bundle", "verify", str(bundle)) == 0
    out = capsys.readouterr().out
    assert "ok " in out and PAUSE_TAG in out


def test_pack_is_deterministic(tmp_path: Path) -> None:
    dirs = make_inputs(tmp_path / "in")
    pack_bundle(spec_for(dirs, tmp_path / "one"))
    pack_bundle(spec_for(dirs, tmp_path / "two"))
    for name in ("manifest.json", "SHA256SUMS"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert (tmp_path / "one/bin/kubeadm").stat().st_mtime == DEFAULT_EPOCH


def test_pack_rejects_bad_input_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = make_inputs(tmp_path / "in", binaries=("kubelet", "kubectl"))
    out = tmp_path / "bundle"
    with pytest.raises(BundleError, match="kubeadm is missing"):
        pack_bundle(spec_for(dirs, out))
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))

    shutil.copy("/bin/true", dirs["bin"] / "kubeadm")
    shutil.copy("/bin/true", dirs["bin"] / "kubeadm.sha256")
    assert run_cli("bundle", "pack", "--kubernetes-version", "1.20.2", "--runtime", "docker",
                   "--bin", str(dirs["bin"]), "--images", str(dirs["images"]), "--cni", str(dirs["cni"]),
                   "--out", str(out)) == 2
    assert "kubeadm.sha256: unexpected file" in capsys.readouterr().err
    (dirs["bin"] / "kubeadm.sha256").unlink()

    with pytest.raises(BundleError, match="kubernetes_version 'latest'"):
        pack_bundle(spec_for(dirs, out, kubernetes_version="latest"))
    with pytest.raises(BundleError, match="containerd needs bin/crictl"):
        pack_bundle(spec_for(dirs, out, runtime="containerd"))
    assert not out.exists()

    (dirs["cni"] / "README.md").write_text("plugins\n")
    with pytest.raises(BundleError, match="README.md: not executable"):
        pack_bundle(spec_for(dirs, out))
    (dirs["cni"] / "README.md").unlink()

    untagged = tmp_path / "untagged"
    untagged.mkdir()
    (untagged / "image.tar").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="image.tar: .*not a readable"):
        pack_bundle(spec_for(dirs, out, images_dir=untagged))

    assert run_cli("bundle", "pack", "--kubernetes-version", "1.20.2", "--runtime", "docker",
                   "--bin", str(dirs["bin"]), "--images", str(dirs["images"]), "--cni", str(dirs["cni"]),
                   "--out", str(out)) == 0
    with pytest.raises(BundleError, match="already exists"):
        pack_bundle(spec_for(dirs, out))
    pack_bundle(spec_for(dirs, out, replace=True))
    verify_bundle(out)


def test_extras_are_listed_and_verified(tmp_path: Path) -> None:
    dirs = make_inputs(tmp_path / "in")
    extras = tmp_path / "extras"
    (extras / "manifests").mkdir(parents=True)
    (extras / "manifests" / "cni.yaml").write_text("kind: ConfigMap\n")
    manifest = pack_bundle(spec_for(dirs, tmp_path / "b", extras_dir=extras))
    assert "extras/manifests/cni.yaml" in manifest.files
    verify_bundle(tmp_path / "b")


def test_manifest_parser_names_fields() -> None:
    with pytest.raises(BundleFormatError, match="missing field 'runtime'"):
        parse_manifest(b'{"format": 2, "kubernetes_version": "1.20.2"}')
    with pytest.raises(BundleFormatError, match="format 1 is not supported"):
        parse_manifest(b'{"format": 1}')
    with pytest.raises(BundleFormatError, match="runtime 'cri-o'"):
        parse_manifest(b'{"format": 2, "kubernetes_version": "1.20.2", "runtime": "cri-o"}')
    with pytest.raises(BundleFormatError, match="not allowed in a bundle"):
        parse_manifest(json.dumps({"format": 2, "kubernetes_version": "1.20.2", "runtime": "docker",
                                   "files": {"../etc/passwd": "0" * 64}, "images": [],
                                   "cni_plugins": []}).encode())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
                    reason="systemd-analyze not installed")
def test_systemd_units_pass_systemd_analyze(bundle: Path, tmp_path: Path) -> None:
    # A scratch root laid out like a node after installing the bundle; the host's own units
    # provide the targets kubelet.service hangs off.
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system/kubelet.service.d").mkdir(parents=True)
    shutil.copy(bundle / "systemd/kubelet.service", root / "etc/systemd/system/kubelet.service")
    shutil.copy(bundle / "systemd/10-kubeadm.conf", root / "etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
    (root / "usr/local/bin").mkdir(parents=True)
    shutil.copy(bundle / "bin/kubelet", root / "usr/local/bin/kubelet")
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "kubelet.service"],
                            capture_output=True, text=True, check=False)
    # Unknown keys and unparsable values are only warnings, so any output counts as a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr
