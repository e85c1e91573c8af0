"""`imagegen image netboot`: what boots over the network, made from an already built node image.

    <image dir>/netboot/  vmlinuz, initrd.img   the image's own kernel and initrd (its drivers, its udev)
                          installer.cpio.gz     appended as a second initrd: a static busybox (Debian's
                                                busybox-static), the installer as the init-premount hook
                                                /scripts/init-premount/imagegen-install (+ ORDER), its settings,
                                                and any NIC/disk driver the image's initrd lacks
                          node.raw.gz           the whole disk image, streamed to the disk by the installer
                          netboot.json          what was made from what (image key, sha256 of every file)

Flow (the image-to-disk flow MAAS and Tinkerbell use): firmware PXE -> iPXE -> `imagegen serve`'s per-MAC script
-> this kernel + both initrds -> the installer writes node.raw.gz to the disk and the node's NoCloud files into the
installed system's /var/lib/cloud/seed/nocloud/ -> reboot -> the node boots from its disk like an ISO-seeded one.
The installer script itself is data: profiles/images/netboot/ (found through imagegen.resources.data_dir()).

Nothing is mounted: the qcow2 is converted to raw in a temporary directory, `sfdisk -J` names the root partition,
`debugfs` reads files out of it at its byte offset. Pure helpers (cpio, partition table, modules.dep parsing) are
separate from the steps that run programs (through imagegen.image.proc).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imagegen.bundle.dockerarchive import sha256_file
from imagegen.image.build import BuiltImage
from imagegen.image.proc import BuildError, query, run
from imagegen.resources import data_dir

FORMAT = 1  # netboot.json's layout; a change rebuilds every netboot directory
ARTEFACTS = ("vmlinuz", "initrd.img", "installer.cpio.gz", "node.raw.gz")
IMAGE_FILE = "node.raw.gz"
HOOK = "scripts/init-premount/imagegen-install"
# Drivers the installer needs before it can reach the server and the disk. Each must be built into the kernel or
# be in the image's initrd; otherwise it is added to installer.cpio.gz from the image's /usr/lib/modules.
NEEDED_MODULES = {"virtio_net": "CONFIG_VIRTIO_NET", "virtio_blk": "CONFIG_VIRTIO_BLK",
                  "virtio_pci": "CONFIG_VIRTIO_PCI"}
LINUX_FS_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GZIP_LEVEL = 1  # 8 GiB of mostly zeros: level 1 takes half the time of 6 for 3 % more bytes


def installer_dir() -> Path:
    return data_dir() / "profiles" / "images" / "netboot"


def default_out(image: BuiltImage) -> Path:
    return image.directory / "netboot"


# --- pure helpers ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RootPartition:
    number: int
    offset: int  # bytes from the start of the disk
    size: int


def root_partition(sfdisk_json: str) -> RootPartition:
    """The root file system's partition from `sfdisk -J`: the one named "root", else the only Linux one."""
    table = json.loads(sfdisk_json)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = table.get("partitions", [])
    named = [p for p in parts if p.get("name") == "root"]
    linux = [p for p in parts if str(p.get("type", "")).upper() == LINUX_FS_TYPE]
    chosen = named or (linux if len(linux) == 1 else [])
    if len(chosen) != 1:
        raise BuildError(f"root partition: expected one partition named 'root' or one Linux file system, found "
                         f"{[p.get('name') or p.get('node') for p in parts]}")
    p = chosen[0]
    node = str(p["node"])  # e.g. "node.raw3": the trailing digits are the partition number
    digits = len(node) - len(node.rstrip("0123456789"))
    number = int(node[-digits:]) if digits else parts.index(p) + 1
    return RootPartition(number, int(p["start"]) * sector, int(p["size"]) * sector)


def symlink_target(debugfs_stat: str) -> str | None:
    """The target of a symbolic link from `debugfs -R 'stat PATH'` (fast links only: short targets)."""
    for line in debugfs_stat.splitlines():
        if line.startswith("Fast link dest:"):
            return line.split(":", 1)[1].strip().strip('"')
    return None


def resolve_in_root(path: str, target: str) -> str:
    """An absolute path for a link `path` -> `target` inside the image."""
    if target.startswith("/"):
        return target
    return "/".join([*path.rstrip("/").split("/")[:-1], target]).replace("//", "/")


@dataclass(frozen=True)
class CpioEntry:
    name: str  # without a leading '/'
    mode: int  # full st_mode (type and permissions)
    data: bytes = b""


def cpio_newc(entries: Iterable[CpioEntry]) -> bytes:
    """An uncompressed `newc` (SVR4, no CRC) archive, as the kernel's initramfs unpacker reads it. Fixed owner
    root, mtime 0 and inode numbers by position: the same entries give the same bytes."""
    out = bytearray()

    def add(ino: int, e: CpioEntry) -> None:
        name = e.name.encode() + b"\0"
        fields = (ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, 0, 0, len(name), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + name)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(e.data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, entry in enumerate(entries, start=1):
        add(ino, entry)
    add(0, CpioEntry("TRAILER!!!", 0))
    out.extend(b"\0" * (-len(out) % 512))
    return bytes(out)


def _cpio_walk(data: bytes, pos: int = 0) -> Iterator[tuple[str, int, bytes, int]]:
    """(name, mode, contents, end offset) of each member of the `newc` archive at `pos`, trailer included."""
    while pos + 110 <= len(data):
        header = data[pos:pos + 110]
        if header[:6] not in (b"070701", b"070702"):
            raise ValueError(f"not a newc cpio archive at byte {pos}")
        mode, size, name_size = int(header[14:22], 16), int(header[54:62], 16), int(header[94:102], 16)
        name = data[pos + 110:pos + 110 + name_size - 1].decode(errors="replace")
        body = (pos + 110 + name_size + 3) & ~3
        pos = (body + size + 3) & ~3
        yield name, mode, data[body:body + size], pos
        if name == "TRAILER!!!":
            return


def cpio_members(data: bytes) -> Iterator[tuple[str, int, bytes]]:
    """(name, mode, contents) of a `newc` archive; stops at its trailer."""
    for name, mode, body, _end in _cpio_walk(data):
        if name != "TRAILER!!!":
            yield name, mode, body


def initrd_segments(data: bytes) -> tuple[list[bytes], bytes]:
    """An initrd is uncompressed cpio archives (early microcode) followed by at most one compressed one: returns
    the uncompressed archives and the compressed rest (b"" if none)."""
    plain: list[bytes] = []
    pos = 0
    while data[pos:pos + 6] in (b"070701", b"070702"):
        end = max((member[3] for member in _cpio_walk(data, pos)), default=pos)
        while end < len(data) and data[end] == 0:  # padding between archives
            end += 1
        plain.append(data[pos:end])
        pos = end
    return plain, data[pos:]


def compression_of(data: bytes) -> str:
    magics = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ": "xz", b"\x02\x21\x4c\x18": "lz4"}
    for magic, name in magics.items():
        if data.startswith(magic):
            return name
    return "unknown"


def module_closure(wanted: Iterable[str], modules_dep: str) -> list[str]:
    """Module paths (relative to /usr/lib/modules/RELEASE) for `wanted` module names and everything they depend
    on, dependencies first, from the image's modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
        base = path.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")
        by_name[base] = path
    ordered: list[str] = []

    def visit(path: str) -> None:
        if path in ordered:
            return
        for dep in reversed(deps.get(path, [])):  # modules.dep lists the deepest dependency last
            visit(dep)
        ordered.append(path)

    for name in wanted:
        found = by_name.get(name.replace("-", "_"))
        if found is None:
            raise BuildError(f"netboot: module {name} is neither built into the image's kernel nor in its "
                             f"modules.dep")
        visit(found)
    return ordered


def missing_modules(initrd_names: Iterable[str], kernel_config: str) -> list[str]:
    """Needed drivers neither built in (=y) nor in the initrd."""
    have = {n.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_") for n in initrd_names if ".ko" in n}
    builtin = {line.split("=", 1)[0] for line in kernel_config.splitlines() if line.endswith("=y")}
    return [m for m, option in NEEDED_MODULES.items() if m not in have and option not in builtin]


def install_conf(root: RootPartition, modules: Iterable[str]) -> str:
    """/imagegen/install.conf, read by the installer (shell assignments)."""
    mods = " ".join(modules)
    return (f"# written by imagegen image netboot\nROOT_PARTITION={root.number}\nIMAGE_FILE={IMAGE_FILE}\n"
            f"MODULES=\"{mods}\"\n")


def order_file(hooks: Iterable[str]) -> str:
    """initramfs-tools' ORDER for a scripts directory (what mkinitramfs writes)."""
    return "".join(f"/{h} \"$@\"\n[ -e /conf/param.conf ] && . /conf/param.conf\n" for h in hooks)


def installer_entries(busybox: bytes, installer: Path, conf: str, premount_hooks: list[str],
                      modules: dict[str, bytes]) -> list[CpioEntry]:
    """The second initrd's members. `premount_hooks`: the init-premount scripts the image's initrd already has
    (the ORDER written here replaces its own, so they keep running first)."""
    d, f, x, lnk = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755, stat.S_IFLNK | 0o777
    entries = [CpioEntry("imagegen", d), CpioEntry("imagegen/bin", d), CpioEntry("imagegen/bin/busybox", x, busybox),
               CpioEntry("imagegen/bin/sh", lnk, b"busybox"),
               CpioEntry("imagegen/install.conf", f, conf.encode()),
               CpioEntry("imagegen/udhcpc.script", x, (installer / "udhcpc.script").read_bytes()),
               CpioEntry("scripts", d), CpioEntry("scripts/init-premount", d),
               CpioEntry(HOOK, x, (installer / "imagegen-install").read_bytes()),
               CpioEntry("scripts/init-premount/ORDER", f, order_file([*premount_hooks, HOOK]).encode())]
    made_dirs = {e.name for e in entries if stat.S_ISDIR(e.mode)}
    for path, data in modules.items():
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in made_dirs:
                entries.append(CpioEntry(parent, d))
                made_dirs.add(parent)
        entries.append(CpioEntry(path.strip("/"), f, data))
    return entries


# --- steps that run programs -------------------------------------------------------------------------------------
class _Image:
    """Read-only access to the root file system of a raw disk image at a byte offset (debugfs, no mount)."""

    def __init__(self, raw: Path, root: RootPartition, log: IO[str]) -> None:
        self.device = f"{raw}?offset={root.offset}"
        self.log = log

    def stat(self, path: str) -> str:
        return query(["debugfs", "-R", f"stat {path}", self.device], step=f"netboot: debugfs stat {path}")

    def cat(self, path: str) -> str:
        return query(["debugfs", "-R", f"cat {path}", self.device], step=f"netboot: debugfs cat {path}")

    def resolve(self, path: str) -> str:
        for _ in range(8):
            target = symlink_target(self.stat(path))
            if target is None:
                return path
            path = resolve_in_root(path, target)
        raise BuildError(f"netboot: too many symbolic links at {path} in the image")

    def dump(self, path: str, dest: Path) -> None:
        run(["debugfs", "-R", f"dump {path} {dest}", self.device], self.log, step=f"netboot: debugfs dump {path}")
        if not dest.is_file() or dest.stat().st_size == 0:
            raise BuildError(f"netboot: {path} not found in the image (debugfs wrote nothing)")


def busybox_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imagegen" / "netboot" / "busybox-static"


def fetch_busybox(log: IO[str]) -> Path:
    """Debian's static busybox: `apt-get download busybox-static` + `dpkg -x` into the cache, never installed on
    this host. Returns the binary; kept across builds (one per package version)."""
    cache = busybox_cache()
    found = sorted(cache.glob("*/busybox"))
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
        run(["sh", "-c", 'cd "$1" && exec apt-get download busybox-static', "sh", tmp], log,
            step="netboot: apt-get download busybox-static")
        debs = sorted(Path(tmp).glob("busybox-static_*.deb"))
        if not debs:
            raise BuildError("netboot: apt-get download busybox-static left no .deb")
        version = debs[-1].name.split("_")[1].replace("%3a", ":")
        run(["dpkg", "-x", debs[-1], Path(tmp, "x")], log, step="netboot: dpkg -x busybox-static")
        binary = Path(tmp, "x", "bin", "busybox")
        if not binary.is_file():
            raise BuildError("netboot: busybox-static's package has no bin/busybox")
        dest = cache / version.replace(":", "_")
        dest.mkdir(exist_ok=True)
        shutil.copy2(binary, dest / "busybox")
        (dest / "package").write_text(f"busybox-static {version}\n")
    return dest / "busybox"


def _decompress(data: bytes, work: Path, log: IO[str]) -> bytes:
    kind = compression_of(data)
    if kind == "gzip":
        return gzip.decompress(data)
    if kind in ("zstd", "xz", "lz4"):
        packed, unpacked = work / f"initrd-main.{kind}", work / "initrd-main.cpio"
        packed.write_bytes(data)
        tool = {"zstd": ["zstd", "-q", "-d", "-f", "-o"], "xz": ["xz", "-d", "-c"], "lz4": ["lz4", "-d", "-f"]}[kind]
        if kind == "zstd":
            run([*tool, unpacked, packed], log, step="netboot: zstd -d initrd")
        else:
            run(["sh", "-c", f'{" ".join(tool)} "$1" > "$2"', "sh", packed, unpacked], log,
                step=f"netboot: {kind} -d initrd")
        return unpacked.read_bytes()
    raise BuildError(f"netboot: the image's initrd is compressed with {kind}; expected gzip, zstd, xz or lz4")


def initrd_names(initrd: Path, work: Path, log: IO[str]) -> list[str]:
    """Every member name of the image's initrd (all segments), as `lsinitramfs` lists them."""
    plain, rest = initrd_segments(initrd.read_bytes())
    names = [n for seg in plain for n, _m, _d in cpio_members(seg)]
    if rest:
        names += [n for n, _m, _d in cpio_members(_decompress(rest, work, log))]
    return names


def gzip_file(src: Path, dest: Path, progress: IO[str]) -> None:
    """gzip -1 in Python, streamed (the raw image is 8 GiB, mostly holes), mtime 0 so it is reproducible."""
    size = src.stat().st_size
    step, done, last = 64 << 20, 0, time.monotonic()
    with src.open("rb") as fin, dest.open("wb") as raw_out, \
            gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=raw_out, mtime=0) as out:
        while chunk := fin.read(step):
            out.write(chunk)
            done += len(chunk)
            if time.monotonic() - last > 15:
                progress.write(f"[netboot] compressing the disk image: {done * 100 // size} %\n")
                progress.flush()
                last = time.monotonic()


def installer_digest() -> str:
    """What installer.cpio.gz is made of besides the image: the installer data files and this module."""
    h = hashlib.sha256(f"format {FORMAT}\n".encode())
    for path in sorted(installer_dir().iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Netboot:
    directory: Path
    files: dict[str, Path]
    cached: bool
    seconds: float
    info: dict[str, object]


def build_netboot(image: BuiltImage, out: Path | None = None, *, force: bool = False,
                  progress: IO[str] = sys.stderr) -> Netboot:
    """The netboot artefacts of `image` in `out` (default <image dir>/netboot), reused when netboot.json says they
    were made from this image with this installer."""
    started = time.monotonic()
    out = Path(out) if out is not None else default_out(image)
    digest = installer_digest()
    info_path = out / "netboot.json"
    reuse: Path | None = None
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            info = {}
        if info.get("image_key") == image.key and info.get("installer_digest") == digest and not force \
                and all((out / name).is_file() for name in ARTEFACTS):
            return Netboot(out, {n: out / n for n in ARTEFACTS}, True, time.monotonic() - started, info)
        if info.get("image_key") == image.key and (out / IMAGE_FILE).is_file() and not force:
            reuse = out / IMAGE_FILE  # only the installer changed: keep the compressed disk image
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    work.chmod(0o755)
    try:
        with (work / "netboot.log").open("w") as log:
            info = _build(image, work, digest, log, progress, reuse)
        info["seconds"] = round(time.monotonic() - started, 1)
        (work / "netboot.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        for junk in ("raw", "tmp"):
            shutil.rmtree(work / junk, ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Netboot(out, {n: out / n for n in ARTEFACTS}, False, time.monotonic() - started, info)


def _build(image: BuiltImage, work: Path, digest: str, log: IO[str], progress: IO[str],
           reuse: Path | None) -> dict[str, object]:
    def say(text: str) -> None:
        progress.write(f"[netboot] {text}\n")
        progress.flush()

    tmp = work / "tmp"
    tmp.mkdir()
    raw = work / "raw" / "node.raw"
    raw.parent.mkdir()
    say(f"converting {image.qcow2.name} to raw")
    run(["qemu-img", "convert", "-O", "raw", image.qcow2, raw], log, step="netboot: qemu-img convert")
    root = root_partition(query(["sfdisk", "-J", raw], step="netboot: sfdisk -J"))
    fs = _Image(raw, root, log)

    kernel, initrd = fs.resolve("/vmlinuz"), fs.resolve("/initrd.img")
    release = kernel.rsplit("vmlinuz-", 1)[-1]
    say(f"kernel {kernel}, initrd {initrd} (root partition {root.number})")
    fs.dump(kernel, work / "vmlinuz")
    fs.dump(initrd, work / "initrd.img")

    names = initrd_names(work / "initrd.img", tmp, log)
    for needed in ("init", "scripts/functions"):
        if needed not in names:
            raise BuildError(f"netboot: the image's initrd has no {needed}; only initramfs-tools initrds are "
                             "supported")
    premount = sorted(n for n in names if n.startswith("scripts/init-premount/") and not n.endswith("/ORDER"))
    config = fs.cat(f"/boot/config-{release}")
    missing = missing_modules(names, config)
    modules: dict[str, bytes] = {}
    if missing:
        say(f"adding drivers the image's initrd lacks: {', '.join(missing)}")
        for rel in module_closure(missing, fs.cat(f"/usr/lib/modules/{release}/modules.dep")):
            dest = tmp / rel.replace("/", "_")
            fs.dump(f"/usr/lib/modules/{release}/{rel}", dest)
            modules[f"usr/lib/modules/{release}/{rel}"] = dest.read_bytes()

    busybox = fetch_busybox(log)
    conf = install_conf(root, [f"/{p}" for p in modules])
    entries = installer_entries(busybox.read_bytes(), installer_dir(), conf, premount, modules)
    (work / "installer.cpio.gz").write_bytes(gzip.compress(cpio_newc(entries), compresslevel=9, mtime=0))

    if reuse is not None:
        say(f"keeping {reuse} (made from this image)")
        os.link(reuse, work / IMAGE_FILE)
    else:
        say(f"compressing the disk image ({raw.stat().st_size >> 20} MiB, sparse) to {IMAGE_FILE}")
        gzip_file(raw, work / IMAGE_FILE, progress)
    return {
        "format": FORMAT, "image_key": image.key, "image": str(image.qcow2), "installer_digest": digest,
        "kernel": kernel, "initrd": initrd, "kernel_release": release, "root_partition": root.number,
        "disk_bytes": raw.stat().st_size, "added_modules": sorted(modules),
        "busybox": (busybox.parent / "package").read_text().strip() if (busybox.parent / "package").is_file()
        else str(busybox),
        "sha256": {name: sha256_file(work / name) for name in ARTEFACTS},
    }
