"""Write and read docker-archive tarballs (the `docker save` format) without a container engine.

A docker-archive is an uncompressed tar holding `manifest.json`, one image config JSON and one
uncompressed `layer.tar` per layer. `docker load`, `ctr images import` and
`skopeo ... docker-archive:` all accept it. Output is deterministic: fixed mtimes, sorted
entries, uid/gid 0 and no user/group names, so the same inputs give the same bytes (and thus the
same image IDs on every node).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

# Fixed timestamp for every tar member and the image's "created": reproducibility beats realism.
DEFAULT_MTIME = 0
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """A docker-archive (or a layer being written) is malformed; the message names the part."""


@dataclass(frozen=True)
class LayerEntry:
    """One member of a layer tar. `path` is relative to the image root, without a leading '/'."""

    path: str
    kind: Literal["file", "dir", "symlink"]
    mode: int = 0o755
    data: bytes | None = None  # file content given inline ...
    source: Path | None = None  # ... or read from a host file
    linkname: str = ""  # symlink target


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI/Docker image config."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = DEFAULT_ENV
    workdir: str = "/"
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    architecture: str = "amd64"


@dataclass(frozen=True)
class ArchiveImage:
    """One image listed in a docker-archive's manifest.json."""

    config: str
    tags: tuple[str, ...]
    layers: tuple[str, ...] = field(default=())


# --- pure parts ----------------------------------------------------------------------------

def _normalise(path: str) -> str:
    clean = os.path.normpath(path.lstrip("/"))
    if clean in ("", ".") or clean.startswith(".."):
        raise ArchiveError(f"layer entry path {path!r} is empty or leaves the image root")
    return clean


def _with_parents(entries: Iterable[LayerEntry]) -> list[LayerEntry]:
    """Entries sorted by path, each parent directory present exactly once."""
    by_path: dict[str, LayerEntry] = {}
    for entry in entries:
        path = _normalise(entry.path)
        if path in by_path:
            raise ArchiveError(f"layer entry {path!r} given twice")
        by_path[path] = LayerEntry(path, entry.kind, entry.mode, entry.data, entry.source,
                                   entry.linkname)
    for path in list(by_path):
        parent = os.path.dirname(path)
        while parent and parent not in by_path:
            by_path[parent] = LayerEntry(parent, "dir", 0o755)
            parent = os.path.dirname(parent)
    for path in by_path:
        parent = os.path.dirname(path)
        if parent and by_path[parent].kind != "dir":
            raise ArchiveError(f"layer entry {path!r} sits below {parent!r}, which is not a directory")
    return [by_path[p] for p in sorted(by_path)]


def image_config_json(config: ImageConfig, diff_ids: Sequence[str], mtime: int = DEFAULT_MTIME) -> bytes:
    """The image config blob; its sha256 is the image ID."""
    created = _rfc3339(mtime)
    runtime: dict[str, object] = {"Env": list(config.env), "WorkingDir": config.workdir}
    if config.entrypoint:
        runtime["Entrypoint"] = list(config.entrypoint)
    if config.cmd:
        runtime["Cmd"] = list(config.cmd)
    if config.user:
        runtime["User"] = config.user
    if config.labels:
        runtime["Labels"] = dict(config.labels)
    doc = {
        "architecture": config.architecture,
        "os": "linux",
        "created": created,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": created, "created_by": "imagegen dockerarchive"} for _ in diff_ids],
    }
    return _json_bytes(doc)


def archive_manifest_json(config_name: str, tags: Sequence[str], layer_names: Sequence[str]) -> bytes:
    if not tags:
        raise ArchiveError("an image needs at least one tag (RepoTags), e.g. registry/name:tag")
    for tag in tags:
        validate_tag(tag)
    return _json_bytes([{"Config": config_name, "RepoTags": list(tags), "Layers": list(layer_names)}])


def validate_tag(tag: str) -> None:
    """A fully qualified `name:tag` reference (digests are not tags)."""
    name, sep, version = tag.rpartition(":")
    if not sep or not name or not version or "/" in version or "@" in tag or tag != tag.strip():
        raise ArchiveError(f"image tag {tag!r} is not of the form registry/name:tag")


def parse_archive_manifest(data: bytes) -> list[ArchiveImage]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ArchiveError(f"manifest.json is not JSON: {exc}") from exc
    if not isinstance(doc, list) or not doc:
        raise ArchiveError("manifest.json must be a non-empty JSON list of images")
    images = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise ArchiveError(f"manifest.json[{i}] lacks a Config string")
        tags = item.get("RepoTags") or []
        layers = item.get("Layers") or []
        if not all(isinstance(t, str) for t in tags) or not all(isinstance(x, str) for x in layers):
            raise ArchiveError(f"manifest.json[{i}]: RepoTags and Layers must be lists of strings")
        images.append(ArchiveImage(item["Config"], tuple(tags), tuple(layers)))
    return images


def _json_bytes(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _rfc3339(epoch: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- writing ---------------------------------------------------------------------------------

def _tarinfo(name: str, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layer_tar(entries: Iterable[LayerEntry], out: BinaryIO, mtime: int = DEFAULT_MTIME) -> None:
    """Write an uncompressed, deterministic layer tar of entries (parents added as 0755 dirs)."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in _with_parents(entries):
            info = _tarinfo(entry.path, mtime)
            info.mode = entry.mode & 0o7777
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.linkname
                tar.addfile(info)
            elif entry.data is not None:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            elif entry.source is not None:
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                raise ArchiveError(f"layer file {entry.path!r} has neither data nor source")


def entries_from_directory(root: Path, prefix: str = "") -> list[LayerEntry]:
    """Layer entries for a host directory tree (regular files, dirs, symlinks; modes kept)."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = os.path.join(prefix, os.path.relpath(full, root))
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries.append(LayerEntry(rel, "symlink", 0o777, linkname=os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(LayerEntry(rel, "dir", stat.S_IMODE(st.st_mode)))
            elif stat.S_ISREG(st.st_mode):
                entries.append(LayerEntry(rel, "file", stat.S_IMODE(st.st_mode), source=full))
            else:
                raise ArchiveError(f"{full}: only regular files, directories and symlinks go in a layer")
    return entries


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks: the one file digest of the bundle and image code."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def write_docker_archive(
    out: Path,
    tags: Sequence[str],
    layers: Sequence[Path],
    config: ImageConfig,
    mtime: int = DEFAULT_MTIME,
) -> str:
    """Write a docker-archive from uncompressed layer tars (bottom first). Returns the image ID.

    Written to a temporary name first and renamed, so a failure never leaves a half archive.
    """
    if not layers:
        raise ArchiveError(f"{out}: an image needs at least one layer")
    diff_hex = [sha256_file(layer) for layer in layers]
    config_blob = image_config_json(config, [f"sha256:{h}" for h in diff_hex], mtime)
    config_hex = hashlib.sha256(config_blob).hexdigest()
    layer_names = [f"{h}/layer.tar" for h in diff_hex]
    manifest = archive_manifest_json(f"{config_hex}.json", tags, layer_names)

    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tmp.open("wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            def add_bytes(name: str, blob: bytes) -> None:
                info = _tarinfo(name, mtime)
                info.mode = 0o644
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))

            add_bytes(f"{config_hex}.json", config_blob)
            written: set[str] = set()
            for hexdigest, layer in zip(diff_hex, layers, strict=True):
                if hexdigest in written:  # the same layer twice in one image is stored once
                    continue
                written.add(hexdigest)
                info = _tarinfo(hexdigest, mtime)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                info = _tarinfo(f"{hexdigest}/layer.tar", mtime)
                info.mode = 0o644
                info.size = layer.stat().st_size
                with layer.open("rb") as lf:
                    tar.addfile(info, lf)
            add_bytes("manifest.json", manifest)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return f"sha256:{config_hex}"


# --- reading ---------------------------------------------------------------------------------

def read_docker_archive(path: Path) -> list[ArchiveImage]:
    """Images of a docker-archive, checking that the config and layers it names are present."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            names = set(tar.getnames())
            try:
                member = tar.extractfile("manifest.json")
            except KeyError:
                member = None
            if member is None:
                raise ArchiveError(f"{path}: no manifest.json; not a docker-archive (docker save / "
                                   "skopeo copy ... docker-archive:FILE:TAG)")
            images = parse_archive_manifest(member.read())
    except tarfile.TarError as exc:
        raise ArchiveError(f"{path}: not a readable uncompressed tar ({exc})") from exc
    for image in images:
        for name in (image.config, *image.layers):
            if name not in names:
                raise ArchiveError(f"{path}: manifest.json names {name!r}, which the archive lacks")
    return images
