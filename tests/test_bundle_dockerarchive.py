"""docker-archive writer: structure read back with tarfile, determinism, and skopeo as a real consumer."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from imagegen.bundle.dockerarchive import (
    ArchiveError,
    ImageConfig,
    LayerEntry,
    entries_from_directory,
    read_docker_archive,
    write_docker_archive,
    write_layer_tar,
)

TAGS = ("k8s.gcr.io/pause:3.2", "imagegen.local/pause:test")


def _build(tmp: Path, name: str) -> Path:
    base = tmp / f"{name}-base.tar"
    top = tmp / f"{name}-top.tar"
    with base.open("wb") as fh:
        write_layer_tar(
            [
                LayerEntry("etc/passwd", "file", 0o644, data=b"root:x:0:0:root:/:/bin/true\n"),
                LayerEntry("tmp", "dir", 0o1777),
                LayerEntry("bin/sh", "symlink", linkname="true"),
            ],
            fh,
        )
    with top.open("wb") as fh:
        write_layer_tar([LayerEntry("/bin/true", "file", 0o755, source=Path("/bin/true"))], fh)
    out = tmp / f"{name}.tar"
    write_docker_archive(out, TAGS, [base, top], ImageConfig(entrypoint=("/bin/true",), user="65535:65535"))
    return out


def test_archive_structure_reads_back(tmp_path: Path) -> None:
    archive = _build(tmp_path, "a")
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert len(manifest) == 1
        assert manifest[0]["RepoTags"] == list(TAGS)
        config_blob = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
        # The config's file name is its own digest, as docker save writes it.
        assert manifest[0]["Config"] == hashlib.sha256(config_blob).hexdigest() + ".json"
        config = json.loads(config_blob)
        layer_digests = []
        for name in manifest[0]["Layers"]:
            blob = tar.extractfile(name).read()  # type: ignore[union-attr]
            layer_digests.append("sha256:" + hashlib.sha256(blob).hexdigest())
            with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
                for member in layer.getmembers():
                    assert (member.uid, member.gid, member.mtime) == (0, 0, 0)
                    assert not member.name.startswith("/")
        for member in tar.getmembers():
            assert (member.uid, member.gid, member.mtime, member.uname) == (0, 0, 0, "")
    assert config["rootfs"] == {"type": "layers", "diff_ids": layer_digests}
    assert config["config"]["Entrypoint"] == ["/bin/true"]
    assert config["config"]["User"] == "65535:65535"
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert len(config["history"]) == 2

    images = read_docker_archive(archive)
    assert [i.tags for i in images] == [TAGS]


def test_layer_has_parents_and_modes(tmp_path: Path) -> None:
    archive = _build(tmp_path, "a")
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        base = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(base)) as layer:
        members = {m.name: m for m in layer.getmembers()}
    assert list(members) == sorted(members)
    assert members["bin"].isdir() and members["etc"].isdir()
    assert members["tmp"].mode == 0o1777
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "true"


def test_output_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = _build(tmp_path / "one", "x").read_bytes()
    second = _build(tmp_path / "two", "x").read_bytes()
    assert first == second


def test_untagged_and_bad_tags_are_rejected(tmp_path: Path) -> None:
    layer = tmp_path / "l.tar"
    with layer.open("wb") as fh:
        write_layer_tar([LayerEntry("f", "file", data=b"x")], fh)
    with pytest.raises(ArchiveError, match="at least one tag"):
        write_docker_archive(tmp_path / "o.tar", [], [layer], ImageConfig())
    with pytest.raises(ArchiveError, match="registry/name:tag"):
        write_docker_archive(tmp_path / "o.tar", ["no-tag-here"], [layer], ImageConfig())
    assert not (tmp_path / "o.tar").exists()
    with pytest.raises(ArchiveError, match="leaves the image root"), (tmp_path / "bad.tar").open("wb") as fh:
        write_layer_tar([LayerEntry("../etc/x", "file", data=b"")], fh)


def test_reader_rejects_non_archives(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add("/bin/true", arcname="true")
    with pytest.raises(ArchiveError, match="no manifest.json"):
        read_docker_archive(plain)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ArchiveError, match="not a readable"):
        read_docker_archive(junk)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (apt install skopeo)")
def test_skopeo_accepts_archive(tmp_path: Path) -> None:
    archive = _build(tmp_path, "s")
    inspect = subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, text=True, check=True
    )
    info = json.loads(inspect.stdout)
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert len(info["Layers"]) == 2
    # A full copy reads every layer and checks it against the config's diff_ids.
    subprocess.run(
        ["skopeo", "copy", "-q", f"docker-archive:{archive}:{TAGS[0]}", f"oci:{tmp_path / 'oci'}:x"],
        capture_output=True, text=True, check=True,
    )
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "x"


def test_entries_from_directory_keep_modes_and_links(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy("/bin/true", root / "usr/bin/tool")
    (root / "usr/bin/tool").chmod(0o750)
    (root / "usr/bin/alias").symlink_to("tool")
    entries = {e.path: e for e in entries_from_directory(root, prefix="opt")}
    assert entries["opt/usr/bin/tool"].mode == 0o750 and entries["opt/usr/bin/tool"].kind == "file"
    assert entries["opt/usr/bin/alias"].kind == "symlink" and entries["opt/usr/bin/alias"].linkname == "tool"
    (root / "fifo").unlink(missing_ok=True)
    os.mkfifo(root / "fifo")
    with pytest.raises(ArchiveError, match="fifo: only regular files"):
        entries_from_directory(root)
