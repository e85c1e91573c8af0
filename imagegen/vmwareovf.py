"""`imagegen vmware ovf OUT --ova IMAGE.ova --dest DIR`: one OVF descriptor per node that deploys the image's disk
with the node's VMware guestinfo, so `ovftool DIR/NAME.ovf` or `govc import.ovf DIR/NAME.ovf` needs no
`vm.change` afterwards.

The OVA is per image (`imagegen image build --formats ova`), the node data per render: DIR gets the image's VMDK
once (taken out of the OVA, checked against the OVA's manifest) and, per node, `NAME.ovf` (the image's descriptor
named for the node, with the node's keys as `vmw:ExtraConfig`, see `imagegen.image.ovf.node_ovf`) and `NAME.mf`
(SHA256 of both files, as the OVA's manifest). The keys are `channels.guestinfo()`'s, so the same bytes as the
render's `guestinfo.vmx`, which is checked; a control plane's hold its CA keys, so the descriptors are 0600.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from imagegen import channels
from imagegen.bundle.dockerarchive import sha256_file
from imagegen.errors import UsageError
from imagegen.image.ovf import OvfError, node_ovf, parse_ovf, render_manifest
from imagegen.paths import make_dirs

DEST_MODE = 0o750
DESCRIPTOR_MODE = 0o600  # the guestinfo holds the user-data, and a control plane's its CA keys
DISK_MODE = 0o644
_CHUNK = 1 << 20
_MANIFEST_LINE = re.compile(r"SHA256\((?P<name>[^)]+)\)= (?P<digest>[0-9a-f]{64})")


@dataclass(frozen=True)
class OvaImage:
    """What a node's descriptor needs from the image's OVA: its descriptor and its disk's name, size, digest."""

    descriptor: str
    vmdk: str
    vmdk_size: int
    vmdk_digest: str | None  # from the OVA's manifest; None when it has none


def node_files(image: OvaImage, node: str, guestinfo: Mapping[str, str]) -> dict[str, bytes]:
    """`NAME.ovf` and `NAME.mf` for one node (pure). The disk's digest comes from the OVA's manifest or from
    extracting it."""
    if image.vmdk_digest is None:
        raise ValueError("the disk's digest is needed for the manifest")
    ovf = node_ovf(image.descriptor, node, guestinfo).encode()
    manifest = render_manifest({f"{node}.ovf": hashlib.sha256(ovf).hexdigest(), image.vmdk: image.vmdk_digest})
    return {f"{node}.ovf": ovf, f"{node}.mf": manifest.encode()}


def node_guestinfo(out: Path, node: str) -> dict[str, str]:
    """The node's guestinfo keys from its rendered files, through `channels.guestinfo` (and its size limit); the
    render's own guestinfo.vmx must say the same."""
    base = out / "nodes" / node
    try:
        user_data, meta_data, network_config = ((base / f).read_bytes()
                                                 for f in ("user-data", "meta-data", "network-config"))
        vmx = (base / "guestinfo.vmx").read_text() if (base / "guestinfo.vmx").is_file() else None
    except OSError as exc:
        raise UsageError(f"{out}: cannot read node {node}'s files ({exc}); render again") from None
    # BaseLoader keeps every value a string, as the renderer's mapping has them (a node named `123` stays '123').
    meta = yaml.load(meta_data, Loader=yaml.BaseLoader)
    if not isinstance(meta, dict):
        raise UsageError(f"{base}/meta-data: not a mapping; render again")
    try:
        keys = channels.guestinfo(node, user_data, meta, network_config)
    except channels.ChannelError as exc:
        raise UsageError(str(exc)) from None
    if vmx is not None and channels.vmx_fragment(keys) != vmx:
        raise UsageError(f"{base}/guestinfo.vmx differs from the guestinfo of the node's user-data, meta-data and "
                         "network-config (edited, or another imagegen version's render); render again")
    return keys


def read_ova(ova: Path) -> OvaImage:
    """The descriptor, disk name and the manifest's digest of an OVA `imagegen image build` packed."""
    try:
        with tarfile.open(ova, "r:") as tar:
            members = {m.name: m for m in tar.getmembers()}
            descriptors = [n for n in members if n.endswith(".ovf")]
            if len(descriptors) != 1:
                raise UsageError(f"--ova {ova}: holds {len(descriptors)} .ovf descriptors, not one; give the OVA "
                                 "`imagegen image build --formats ova` wrote")
            text = _member_bytes(tar, members[descriptors[0]]).decode()
            mf_name = descriptors[0][:-len(".ovf")] + ".mf"
            digests = {}
            if mf_name in members:
                for line in _member_bytes(tar, members[mf_name]).decode().splitlines():
                    if match := _MANIFEST_LINE.fullmatch(line):
                        digests[match["name"]] = match["digest"]
    except (OSError, tarfile.TarError, UnicodeDecodeError) as exc:
        raise UsageError(f"--ova {ova}: cannot read it as an OVA ({exc})") from None
    try:
        params = parse_ovf(text)
    except OvfError as exc:
        raise UsageError(f"--ova {ova}: {exc}") from None
    disk = members.get(params.vmdk_file)
    if disk is None or not disk.isfile() or disk.size != params.vmdk_size:
        raise UsageError(f"--ova {ova}: its descriptor names {params.vmdk_file} ({params.vmdk_size} bytes), which "
                         "the archive does not hold at that size; build the OVA again")
    return OvaImage(text, params.vmdk_file, params.vmdk_size, digests.get(params.vmdk_file))


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    if f is None:
        raise tarfile.TarError(f"{member.name} is not a file")
    return f.read()


def extract_disk(ova: Path, image: OvaImage, dest: Path) -> OvaImage:
    """DEST/VMDK from the OVA, unless the same disk is there already; returns `image` with the disk's digest.
    A disk whose digest differs from the OVA's manifest is refused (a damaged OVA)."""
    target = dest / image.vmdk
    if image.vmdk_digest is not None and target.is_file() and target.stat().st_size == image.vmdk_size \
            and sha256_file(target) == image.vmdk_digest:
        return image
    fd, tmp_name = tempfile.mkstemp(prefix=f".{image.vmdk}.", dir=dest)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, tarfile.open(ova, "r:") as tar:
            src = tar.extractfile(image.vmdk)
            if src is None:
                raise UsageError(f"--ova {ova}: {image.vmdk} is not a file")
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        digest = h.hexdigest()
        if image.vmdk_digest is not None and digest != image.vmdk_digest:
            raise UsageError(f"--ova {ova}: {image.vmdk} has SHA256 {digest}, its manifest says "
                             f"{image.vmdk_digest}; the OVA is damaged, build or copy it again")
        os.chmod(tmp, DISK_MODE)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return OvaImage(image.descriptor, image.vmdk, image.vmdk_size, digest)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all, created with `mode` (never readable by others for a moment)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_node_ovfs(out: Path, ova: Path, dest: Path, nodes: Iterable[str] = ()) -> list[str]:
    """Every node's (or `nodes`') descriptor and manifest, and the disk once, into `dest`; returns the nodes.
    Everything is checked (nodes, their guestinfo, the OVA) before anything is written."""
    from imagegen.serve import load_output

    names = sorted(load_output(out).nodes)
    wanted = list(dict.fromkeys(nodes)) or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise UsageError(f"--node {', '.join(unknown)}: not in {out}; its nodes are {', '.join(names)}")
    image = read_ova(ova)
    keys = {name: node_guestinfo(out, name) for name in wanted}
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--dest {dest}: is a file; give a directory")
    make_dirs(dest, DEST_MODE)
    image = extract_disk(ova, image, dest)
    for name in wanted:
        for file_name, data in node_files(image, name, keys[name]).items():
            _write_private(dest / file_name, data, DESCRIPTOR_MODE if file_name.endswith(".ovf") else DISK_MODE)
    return wanted


def cmd_vmware_ovf(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    written = write_node_ovfs(Path(args.out), Path(args.ova), dest, args.node or ())
    print(f"wrote {len(written)} descriptors (0600: they hold the nodes' user-data) and the disk to {dest}",
          file=sys.stderr)
    for name in written:
        print(dest / f"{name}.ovf")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    v = sub.add_parser("vmware", help="VMware deployment files for the nodes of a render")
    vsub = v.add_subparsers(dest="vmware_command", required=True, metavar="ACTION")
    o = vsub.add_parser("ovf", help="one OVF per node: the image's disk with the node's guestinfo as ExtraConfig",
                        description="Writes DIR/NAME.ovf (the OVA's descriptor, named NAME, with the node's "
                                    "guestinfo.* keys as vmw:ExtraConfig; 0600), DIR/NAME.mf and the OVA's VMDK "
                                    "(once) for each node, to deploy with `ovftool DIR/NAME.ovf ...` or "
                                    "`govc import.ovf DIR/NAME.ovf`. Read by cloud-init's VMware datasource, "
                                    "as guestinfo.vmx.")
    o.add_argument("out", metavar="OUT", help="the directory `imagegen render --out` wrote")
    o.add_argument("--ova", required=True, metavar="IMAGE.ova", help="the OVA `imagegen image build` wrote")
    o.add_argument("--dest", required=True, metavar="DIR", help="directory to write into (created; the disk in it "
                                                               "is reused when it is the OVA's)")
    o.add_argument("--node", action="append", metavar="NAME", help="only this node (repeatable; default: all)")
    o.set_defaults(func=cmd_vmware_ovf)
