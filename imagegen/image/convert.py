"""Disk format conversions (qemu-img) and OVA packing (tar) of a finished image."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import IO

from imagegen.bundle.dockerarchive import sha256_file
from imagegen.image.ovf import OvfParams, render_manifest, render_ovf
from imagegen.image.proc import query, run
from imagegen.image.spec import ImageFormat


def image_info(path: Path) -> dict[str, object]:
    out = query(["qemu-img", "info", "--output=json", str(path)], step=f"image info of {path.name} (qemu-img)",
                timeout=120)
    info: dict[str, object] = json.loads(out)
    return info


def convert(src: Path, src_format: str, fmt: ImageFormat, out: Path, log: IO[str]) -> None:
    """Write `out` in `fmt` from `src` (qcow2 or raw). OVA is packed separately, from a VMDK."""
    opts: list[str]
    if fmt is ImageFormat.QCOW2:
        opts = ["-O", "qcow2"]
    elif fmt is ImageFormat.QCOW2_COMPRESSED:
        # zlib, not zstd: older qemu-img and cloud platforms read only zlib-compressed clusters.
        opts = ["-c", "-O", "qcow2", "-o", "compression_type=zlib"]
    elif fmt is ImageFormat.RAW:
        opts = ["-O", "raw", "-S", "4k"]
    elif fmt is ImageFormat.VMDK:
        # streamOptimized is the only VMDK flavour vSphere imports from an OVA; the adapter matches the OVF.
        opts = ["-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=lsilogic"]
    else:
        raise ValueError(f"{fmt} is not a qemu-img format")
    run(["qemu-img", "convert", "-f", src_format, *opts, str(src), str(out)], log,
        step=f"convert to {fmt.value} (qemu-img)", timeout=1800)


def pack_ova(vmdk: Path, out: Path, *, name: str, annotation: str, capacity: int, populated: int) -> None:
    """OVA = ustar of descriptor, manifest, disk in that order (vSphere reads the descriptor first)."""
    ovf_name = f"{name}.ovf"
    ovf_text = render_ovf(OvfParams(name=name, annotation=annotation, vmdk_file=vmdk.name,
                                    vmdk_size=vmdk.stat().st_size, capacity=capacity, populated=populated))
    ovf_bytes = ovf_text.encode()
    mf_bytes = render_manifest({ovf_name: hashlib.sha256(ovf_bytes).hexdigest(), vmdk.name: sha256_file(vmdk)}).encode()
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member_name, data in ((ovf_name, ovf_bytes), (f"{name}.mf", mf_bytes)):
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        info = tar.gettarinfo(str(vmdk), arcname=vmdk.name)
        # Same bytes for the same disk: no host owner or time in the archive.
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o644
        with vmdk.open("rb") as f:
            tar.addfile(info, f)
