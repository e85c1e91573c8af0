"""The offline Kubernetes bundle format (version 1): manifest model, SHA256SUMS text, validation.

Pure: no file system access. `pack.py` does the I/O. A bundle directory holds

    manifest.json   what is inside (this module's `Manifest`), with a sha256 per file
    SHA256SUMS      the same checksums plus manifest.json's, in `sha256sum -c` format
    bin/            kubeadm kubelet kubectl [etcdctl crictl cri-dockerd]
    images/         docker-archive tarballs
    cni/            CNI plugin binaries
    systemd/        kubelet.service, 10-kubeadm.conf [cri-docker.service cri-docker.socket with cri-dockerd]
    extras/         optional operator files
    node/           what a node installs, in lists shell reads without a second parser (derived from the
                    manifest by `node_lists`, covered by SHA256SUMS): install.list, images-control-plane.list,
                    images-worker.list, kubernetes-version
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

FORMAT_VERSION = 2  # 2: node/ lists
DISK_LABEL = "imagegen-bundle"
RUNTIMES = ("docker", "containerd")
REQUIRED_BINARIES = ("kubeadm", "kubelet", "kubectl")
OPTIONAL_BINARIES = ("etcdctl", "crictl", "cri-dockerd")
SYSTEMD_FILES = ("systemd/kubelet.service", "systemd/10-kubeadm.conf")
# cri-dockerd (Docker with Kubernetes >= 1.24) comes with its own units; both or neither, and only with the binary.
CRI_DOCKERD_UNITS = ("systemd/cri-docker.service", "systemd/cri-docker.socket")
REQUIRED_CNI_PLUGINS = ("loopback",)  # kubelet's pod sandbox always needs the loopback plugin
MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
TOP_LEVEL_DIRS = ("bin", "images", "cni", "systemd", "extras")
NODE_LISTS_DIR = "node"
# An image whose every tag is one of these runs only on control planes: a worker does not load it.
_CONTROL_PLANE_IMAGE = re.compile(r"(^|/)(kube-apiserver|kube-controller-manager|kube-scheduler|etcd):")

_VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
# Conservative on purpose: sha256sum escapes names with backslashes or newlines, and a node
# verifies with coreutils alone, so only plain names are allowed.
_RELPATH_RE = re.compile(r"^[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$")


class BundleFormatError(ValueError):
    """The bundle (or the input for one) breaks the format; the message names the part."""


@dataclass(frozen=True)
class BundleImage:
    file: str  # relative path, images/<name>.tar
    tags: tuple[str, ...]


@dataclass(frozen=True)
class AbsentImage:
    """An image kubeadm expects that the bundle deliberately does not carry."""

    tag: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    kubernetes_version: str  # "1.20.2", no leading v
    runtime: str
    files: Mapping[str, str]  # relpath -> sha256 hex, every file except manifest.json/SHA256SUMS
    images: tuple[BundleImage, ...]
    cni_plugins: tuple[str, ...]
    created_by: str
    absent_images: tuple[AbsentImage, ...] = field(default=())

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(sorted(p.removeprefix("bin/") for p in self.files if p.startswith("bin/")))

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(tag for image in self.images for tag in image.tags)


def normalise_version(value: str) -> str:
    """'v1.20.2' or '1.20.2' -> '1.20.2'; anything else is an error naming the value."""
    version = value.strip().removeprefix("v")
    if not _VERSION_RE.match(version):
        raise BundleFormatError(
            f"kubernetes_version {value!r} is not a release version; use e.g. 1.20.2 or v1.20.2"
        )
    return version


def validate_relpath(path: str) -> str:
    if not _RELPATH_RE.match(path) or any(part in (".", "..") for part in path.split("/")):
        raise BundleFormatError(
            f"file name {path!r} is not allowed in a bundle: use only letters, digits and ._+- "
            "in each path component"
        )
    return path


def manifest_to_json(manifest: Manifest) -> bytes:
    doc: dict[str, object] = {
        "format": FORMAT_VERSION,
        "kubernetes_version": manifest.kubernetes_version,
        "runtime": manifest.runtime,
        "files": dict(sorted(manifest.files.items())),
        "images": [{"file": i.file, "tags": list(i.tags)} for i in manifest.images],
        "cni_plugins": list(manifest.cni_plugins),
        "created_by": manifest.created_by,
    }
    if manifest.absent_images:
        doc["absent_images"] = [{"tag": a.tag, "reason": a.reason} for a in manifest.absent_images]
    return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()


def _need(doc: Mapping[str, object], key: str, kind: type) -> object:
    if key not in doc:
        raise BundleFormatError(f"manifest.json: missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleFormatError(f"manifest.json: field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate manifest.json (structure and cross references, not checksums)."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BundleFormatError(f"manifest.json is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleFormatError("manifest.json must be a JSON object")
    fmt = _need(doc, "format", int)
    if fmt != FORMAT_VERSION:
        raise BundleFormatError(
            f"manifest.json: format {fmt} is not supported (this imagegen reads format {FORMAT_VERSION})"
        )
    version = normalise_version(str(_need(doc, "kubernetes_version", str)))
    runtime = _need(doc, "runtime", str)
    if runtime not in RUNTIMES:
        raise BundleFormatError(f"manifest.json: runtime {runtime!r} must be one of {', '.join(RUNTIMES)}")
    raw_files = _need(doc, "files", dict)
    assert isinstance(raw_files, dict)
    files: dict[str, str] = {}
    for path, digest in raw_files.items():
        validate_relpath(path)
        if not isinstance(digest, str) or not _HEX_RE.match(digest):
            raise BundleFormatError(f"manifest.json: files[{path!r}] must be a lowercase sha256 hex digest")
        files[path] = digest
    images = []
    raw_images = _need(doc, "images", list)
    assert isinstance(raw_images, list)
    for i, item in enumerate(raw_images):
        if not isinstance(item, dict) or not isinstance(item.get("file"), str):
            raise BundleFormatError(f"manifest.json: images[{i}] needs a 'file' string")
        tags = item.get("tags")
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
            raise BundleFormatError(f"manifest.json: images[{i}] ({item['file']}) needs a non-empty 'tags' list")
        images.append(BundleImage(item["file"], tuple(tags)))
    raw_cni = _need(doc, "cni_plugins", list)
    assert isinstance(raw_cni, list)
    if not all(isinstance(c, str) for c in raw_cni):
        raise BundleFormatError("manifest.json: cni_plugins must be a list of plugin names")
    absent = []
    for i, item in enumerate(doc.get("absent_images") or []):
        if not isinstance(item, dict) or not isinstance(item.get("tag"), str):
            raise BundleFormatError(f"manifest.json: absent_images[{i}] needs a 'tag' string")
        absent.append(AbsentImage(item["tag"], str(item.get("reason", ""))))
    manifest = Manifest(
        kubernetes_version=version,
        runtime=str(runtime),
        files=files,
        images=tuple(images),
        cni_plugins=tuple(raw_cni),
        created_by=str(doc.get("created_by", "")),
        absent_images=tuple(absent),
    )
    problems = layout_problems(manifest)
    if problems:
        raise BundleFormatError("manifest.json: " + "; ".join(problems))
    return manifest


def layout_problems(manifest: Manifest) -> list[str]:
    """What a bundle must contain, checked against the manifest's own file list."""
    problems = []
    for name in REQUIRED_BINARIES:
        if f"bin/{name}" not in manifest.files:
            problems.append(f"required file bin/{name} is missing")
    if manifest.runtime == "containerd" and "bin/crictl" not in manifest.files:
        problems.append("runtime containerd needs bin/crictl (kubeadm's preflight fails without it)")
    for path in SYSTEMD_FILES:
        if path not in manifest.files:
            problems.append(f"required file {path} is missing")
    if "bin/cri-dockerd" in manifest.files:
        problems += [f"bin/cri-dockerd needs its unit {path}" for path in CRI_DOCKERD_UNITS
                     if path not in manifest.files]
    else:
        problems += [f"{path} without bin/cri-dockerd" for path in CRI_DOCKERD_UNITS if path in manifest.files]
    for path in manifest.files:
        if path.startswith("systemd/") and path not in SYSTEMD_FILES + CRI_DOCKERD_UNITS:
            problems.append(f"unexpected systemd file {path}; allowed: {', '.join(SYSTEMD_FILES + CRI_DOCKERD_UNITS)}")
    if not manifest.images:
        problems.append("no images: a bundle needs at least the control-plane images")
    for image in manifest.images:
        if not image.file.startswith("images/") or image.file not in manifest.files:
            problems.append(f"image file {image.file} is not listed under images/ in files")
    for plugin in manifest.cni_plugins:
        if f"cni/{plugin}" not in manifest.files:
            problems.append(f"CNI plugin cni/{plugin} is missing")
    for plugin in REQUIRED_CNI_PLUGINS:
        if plugin not in manifest.cni_plugins:
            problems.append(f"required CNI plugin {plugin!r} is missing")
    for path in manifest.files:
        if path.split("/", 1)[0] not in TOP_LEVEL_DIRS or "/" not in path:
            problems.append(f"file {path} is outside {', '.join(d + '/' for d in TOP_LEVEL_DIRS)}")
        if path.startswith("bin/") and path.removeprefix("bin/") not in REQUIRED_BINARIES + OPTIONAL_BINARIES:
            problems.append(f"unexpected binary {path}")
    seen: dict[str, str] = {}
    for image in manifest.images:
        for tag in image.tags:
            if tag in seen:
                problems.append(f"tag {tag} is in both {seen[tag]} and {image.file}")
            seen[tag] = image.file
    return problems


def sha256sums_text(checksums: Mapping[str, str]) -> str:
    """`sha256sum -c` input: '<hex>  <relpath>' lines, sorted by path."""
    return "".join(f"{checksums[p]}  {p}\n" for p in sorted(checksums))


def parse_sha256sums(text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        digest, sep, path = line.partition("  ")
        if not sep or not _HEX_RE.match(digest):
            raise BundleFormatError(f"SHA256SUMS line {lineno} is not '<sha256>  <path>': {line!r}")
        sums[validate_relpath(path)] = digest
    return sums


def node_lists(manifest: Manifest) -> dict[str, bytes]:
    """What a node needs to know about the bundle, as plain line lists (the node program reads these, never
    manifest.json): the files it installs, the image archives per role in manifest order, the version."""
    def lines(items: list[str]) -> bytes:
        return "".join(f"{i}\n" for i in items).encode()

    install = sorted(p for p in manifest.files if p.split("/", 1)[0] in ("bin", "cni", "systemd"))
    every = [i.file for i in manifest.images]
    worker = [i.file for i in manifest.images if not all(_CONTROL_PLANE_IMAGE.search(t) for t in i.tags)]
    return {
        f"{NODE_LISTS_DIR}/install.list": lines(install),
        f"{NODE_LISTS_DIR}/images-control-plane.list": lines(every),
        f"{NODE_LISTS_DIR}/images-worker.list": lines(worker),
        f"{NODE_LISTS_DIR}/kubernetes-version": lines([manifest.kubernetes_version]),
    }


def sums_for(manifest: Manifest, manifest_sha256: str) -> dict[str, str]:
    """SHA256SUMS covers every file, the node lists and manifest.json, so coreutils alone verifies the lot."""
    lists = {p: hashlib.sha256(data).hexdigest() for p, data in node_lists(manifest).items()}
    return {**manifest.files, **lists, MANIFEST_NAME: manifest_sha256}
