"""Builds (or finds in the cache) a node image: rootfs -> partitioned disk -> GRUB -> (with a bundle: its images
imported into containerd) -> qcow2/raw/vmdk/ova.

Layout of the cache (default ~/.cache/imagegen/images):
  <name>-<kernel>-<key16>/   image.json, build.log, packages.txt, <name>-<kernel>.qcow2 (+ other formats)
  <name>-<kernel>            symlink to the newest build of that spec and kernel
A build happens in a hidden temporary directory and is renamed into place only when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from imagegen.errors import UsageError
from imagegen.image import content, convert, disk, mmdebstrap, qemu
from imagegen.image.layout import disk_size_for, plan_disk
from imagegen.image.proc import BuildError, run
from imagegen.image.spec import (
    ImageFormat,
    ImageSpec,
    cache_key,
    identity_key,
    parse_spec,
)
from imagegen.profiles import load_distro
from imagegen.resources import data_dir


def spec_dir() -> Path:
    """Where `--spec NAME` is looked up: profiles/images/ of imagegen's data (a checkout, the installed wheel's
    imagegen/_data, or IMAGEGEN_DATA)."""
    return data_dir() / "profiles" / "images"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imagegen" / "images"


@dataclass(frozen=True)
class BuiltImage:
    key: str
    directory: Path
    files: dict[ImageFormat, Path]
    cached: bool
    seconds: float

    @property
    def log(self) -> Path:
        return self.directory / "build.log"

    @property
    def qcow2(self) -> Path:
        return self.files[ImageFormat.QCOW2]


def load_spec(ref: str, *, kernel: str | None = None, bundle: Path | None = None,
              formats: tuple[ImageFormat, ...] | None = None) -> ImageSpec:
    """`ref` is a spec name (profiles/images/<name>.yaml) or a path to a spec file."""
    path = Path(ref)
    specs = spec_dir()
    if not (path.suffix in (".yaml", ".yml") or "/" in ref):
        path = specs / f"{ref}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in specs.glob("*.yaml")))
        raise UsageError(f"--spec {ref!r}: no such image spec ({path}); known specs: {known or 'none'}")
    data = read_spec_document(path)
    if bundle is not None and not bundle.is_dir():
        raise UsageError(f"--bundle {bundle}: not a directory; give the bundle directory (with manifest.json)")
    return parse_spec(data, kernel=kernel, bundle=bundle.resolve() if bundle else None, formats=formats)


def read_spec_document(path: Path) -> object:
    """The spec file as data, with distro package groups resolved (parse_spec validates the rest)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(data, dict) and "distro_packages" in data:
        data = _merge_distro_packages(data)
    return data


def _merge_distro_packages(data: dict[str, object]) -> dict[str, object]:
    """Resolve `distro_packages: {distro: debian-12, groups: [...]}` through the distro the node profiles use
    (imagegen.profiles.load_distro: profiles/distros/<distro>.yaml).

    The node profiles install those groups when missing; baking the same groups keeps image and profiles in
    step, so a baked node never reaches for apt.
    """
    ref = data["distro_packages"]
    if not isinstance(ref, dict) or not isinstance(ref.get("distro"), str) or not isinstance(ref.get("groups"), list):
        raise UsageError(f"image spec: distro_packages: must be {{distro: NAME, groups: [..]}} (got {ref!r})")
    try:
        distro = load_distro(ref["distro"])
    except FileNotFoundError as exc:
        missing = Path(str(exc.filename))
        known = ", ".join(sorted(p.stem for p in missing.parent.glob("*.yaml")))
        raise UsageError(f"image spec: distro_packages.distro: no {missing} (known: {known})") from None
    groups = distro.packages
    merged = dict(data.get("packages") or {})  # type: ignore[call-overload]
    for group in ref["groups"]:
        if group not in groups:
            raise UsageError(f"image spec: distro_packages.groups: {group!r} is not a package group of "
                             f"{distro.name}.yaml (groups: {', '.join(sorted(groups))})")
        merged[f"{ref['distro']}:{group}"] = list(groups[group])
    out = {k: v for k, v in data.items() if k != "distro_packages"}
    out["packages"] = merged
    return out


def bundle_digest(root: Path) -> str:
    """Content hash of a directory tree: relative paths, modes, symlink targets and file bytes."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            h.update(f"{rel}\0{st.st_mode:o}\0".encode())
            if path.is_symlink():
                h.update(os.readlink(path).encode())
            else:
                with path.open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            h.update(b"\0")
    return h.hexdigest()


def _tree_bytes(root: Path) -> int:
    """Bytes of file content under root, each hard-linked inode once (what mke2fs -d will write)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size + 4096  # a block of slack per file for small-file rounding
    return total


# The node lists naming a bundle's image archives (imagegen.bundle.format.node_lists): what the preload boot imports.
PRELOAD_LISTS = ("node/images-control-plane.list", "node/images-worker.list")


def preload_archives(bundle: Path) -> list[str]:
    """The image archives the bundle's node lists name (relative paths, sorted, once each): what the preload boot
    imports into the image's containerd. A bundle without the lists predates them: repack it."""
    rels: set[str] = set()
    for name in PRELOAD_LISTS:
        path = bundle / name
        if not path.is_file():
            raise UsageError(f"--bundle {bundle}: no {name} (a bundle packed before node lists existed); "
                             f"repack it with `imagegen bundle`")
        rels.update(line.strip() for line in path.read_text().splitlines() if line.strip())
    missing = [rel for rel in sorted(rels) if not (bundle / rel).is_file()]
    if missing:
        raise UsageError(f"--bundle {bundle}: its node lists name archives it lacks: {', '.join(missing)}")
    return sorted(rels)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
    return mounts


def _remove_tree(path: Path) -> None:
    # An interrupted mmdebstrap may leave /proc, /sys or a bind of the host's /dev mounted inside the rootfs:
    # deleting through those would delete host files. Refuse instead.
    if not path.exists():
        return
    mounted = _mounts_under(path)
    if mounted:
        raise BuildError(f"not removing {path}: still mounted inside it: {', '.join(mounted)} (umount them first)")
    shutil.rmtree(path)


@contextmanager
def _locked(cache: Path, key: str) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".lock-{key[:16]}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class Progress:
    """One line per step on stderr with the time since the build started; the full story is in build.log."""

    def __init__(self, out: IO[str], total: int) -> None:
        self.out = out
        self.total = total
        self.step = 0
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def begin(self, text: str) -> None:
        self.step += 1
        self.out.write(f"[image {self.elapsed():6.1f}s] ({self.step}/{self.total}) {text}\n")
        self.out.flush()

    def detail(self, text: str) -> None:
        self.out.write(f"[image {self.elapsed():6.1f}s]       {text}\n")
        self.out.flush()


def _render(spec: ImageSpec) -> tuple[str, dict[str, str], tuple[content.RootFile, ...], str]:
    """(cache key, recipe texts, files to stage, customize script). Layout ids do not depend on disk size."""
    digest = bundle_digest(spec.bundle) if spec.bundle else None
    identity = identity_key(spec, bundle_digest=digest)
    files = content.root_files(spec, plan_disk(spec.disk_size_gib, identity)) + content.preload_files(spec)
    script = content.customize_script(spec)
    recipe = {"customize.sh": script, **{f"file:{f.path}:{f.mode:o}": f.content for f in files}}
    return cache_key(identity, recipe), recipe, files, identity


# The umask every image is built under, whatever the caller's: the staged files are copied over the root
# filesystem with `cp -a` (directory modes included) and the customize hook creates directories, so a caller's 077
# (cluster-test runs under it) made /etc, /usr and /var 0700 and every unprivileged service (systemd-networkd,
# systemd-resolved) failed to start on the image.
BUILD_UMASK = 0o022


@contextmanager
def _build_umask() -> Iterator[None]:
    previous = os.umask(BUILD_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def build_image(spec: ImageSpec, *, cache: Path | None = None, force: bool = False,
                out: IO[str] = sys.stderr) -> BuiltImage:
    """The image for `spec`, from the cache or built now (under BUILD_UMASK, whatever the caller's umask)."""
    with _build_umask():
        return _build_image(spec, cache=cache, force=force, out=out)


def _build_image(spec: ImageSpec, *, cache: Path | None, force: bool, out: IO[str]) -> BuiltImage:
    cache = cache or default_cache()
    started = time.monotonic()
    key, _recipe, files, identity = _render(spec)
    final = cache / f"{spec.artefact_name}-{key[:16]}"
    with _locked(cache, key):
        if final.is_dir() and (final / "image.json").is_file() and not force:
            made = _derive_missing(spec, final, out)
            _point_latest(cache, spec, final)
            return BuiltImage(key, final, made, True, time.monotonic() - started)
        work = cache / f".build-{key[:16]}-{os.getpid()}"
        _remove_tree(work)
        work.mkdir(parents=True)
        log_path = work / "build.log"
        try:
            with log_path.open("w") as log:
                meta = _build(spec, key, identity, files, work, log, out)
            if final.exists():
                trash = cache / f".old-{key[:16]}-{os.getpid()}"
                final.rename(trash)
                shutil.rmtree(trash)
            meta["seconds"] = round(time.monotonic() - started, 1)
            (work / "image.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            work.rename(final)
        except BaseException:
            failed_log = cache / f"failed-{spec.artefact_name}-{key[:16]}.log"
            if log_path.exists():
                shutil.copyfile(log_path, failed_log)
                out.write(f"[image] build failed; log kept at {failed_log}\n")
            try:
                _remove_tree(work)
            except BuildError as exc:
                out.write(f"[image] {exc}\n")
            raise
        _point_latest(cache, spec, final)
        made = {fmt: final / (spec.artefact_name + fmt.suffix) for fmt in _kept_formats(spec)}
        return BuiltImage(key, final, made, False, time.monotonic() - started)


def _kept_formats(spec: ImageSpec) -> list[ImageFormat]:
    """qcow2 is always kept: it is the master other formats are derived from on a cache hit."""
    wanted = [ImageFormat.QCOW2, *spec.formats]
    if ImageFormat.OVA in wanted:
        wanted.append(ImageFormat.VMDK)
    return list(dict.fromkeys(wanted))


def _point_latest(cache: Path, spec: ImageSpec, final: Path) -> None:
    link = cache / spec.artefact_name
    tmp = cache / f".{spec.artefact_name}.link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(final.name)
    tmp.replace(link)


def _build(spec: ImageSpec, key: str, identity: str, files: tuple[content.RootFile, ...], work: Path,
           log: IO[str], out: IO[str]) -> dict[str, object]:
    formats = _kept_formats(spec)
    archives = preload_archives(spec.bundle) if spec.bundle else []
    progress = Progress(out, 5 + len(formats) + (1 if spec.bundle else 0))
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]) -> object:
        t0 = time.monotonic()
        result = fn()
        timings[name] = round(time.monotonic() - t0, 1)
        progress.detail(f"{name}: {timings[name]} s")
        return result

    log.write(f"imagegen image build {spec.artefact_name} key={key}\n")
    staging = work / "staging"
    for f in files:
        target = staging / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content)
        target.chmod(f.mode)
    customize = work / "customize.sh"
    customize.write_text(content.customize_script(spec))
    rootfs = work / "rootfs"

    progress.begin(f"root filesystem from Debian {spec.suite} ({len(spec.packages)} packages, mmdebstrap)")
    timed("rootfs", lambda: mmdebstrap.build_rootfs(spec, rootfs, customize=customize, staging=staging,
                                                   bundle=spec.bundle, log=log, progress=progress.detail))

    progress.begin("checking the kernel and recording package versions")
    vmlinuz, initrd, release = mmdebstrap.kernel_files(rootfs)
    missing = content.missing_modules(spec.required_modules, *mmdebstrap.module_index(rootfs, release))
    if missing:
        raise BuildError(f"kernel {release} lacks required modules: {', '.join(missing)} "
                         f"(choose --kernel generic or drop them from required_modules)")
    versions = run(["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n"], log,
                   step="package list (dpkg-query)")
    (work / "packages.txt").write_text(versions)
    kernel_dir = work / "kernel"
    kernel_dir.mkdir()
    shutil.copy2(vmlinuz, kernel_dir / "vmlinuz")
    shutil.copy2(initrd, kernel_dir / "initrd.img")

    content_bytes = _tree_bytes(rootfs)
    # The preload boot writes each archive's bytes twice more: containerd's content store and the unpacked layers.
    preload_bytes = 2 * sum((spec.bundle / rel).stat().st_size for rel in archives) if spec.bundle else 0
    size_gib = disk_size_for(content_bytes + preload_bytes, spec.disk_size_gib)
    layout = plan_disk(size_gib, identity)
    raw = work / (spec.artefact_name + ".raw")
    progress.begin(f"partitioned disk {size_gib} GiB (GPT: BIOS boot, ESP, root; content {content_bytes >> 20} MiB)")
    timed("disk", lambda: disk.write_disk(raw, layout, rootfs, log))
    _remove_tree(rootfs)

    accel = qemu.probe_accel()
    progress.begin(f"installing GRUB for BIOS and UEFI (one boot of the image's kernel, {accel})")
    timed("grub", lambda: qemu.install_grub(raw, kernel=kernel_dir / "vmlinuz", initrd=kernel_dir / "initrd.img",
                                            accel=accel, serial_log=work / "grub-setup.console.log", log=log))
    if spec.bundle:
        progress.begin(f"importing the bundle's {len(archives)} image archives into containerd "
                       f"(one boot of the image's kernel, {accel})")
        timed("preload", lambda: qemu.preload_images(raw, kernel=kernel_dir / "vmlinuz",
                                                     initrd=kernel_dir / "initrd.img", accel=accel,
                                                     serial_log=work / "preload-images.console.log", log=log))
    shutil.rmtree(kernel_dir)

    populated = raw.stat().st_blocks * 512
    sizes: dict[str, int] = {}
    for fmt in formats:
        target = work / (spec.artefact_name + fmt.suffix)
        progress.begin(f"writing {target.name}")
        if fmt is ImageFormat.RAW:
            timings["raw"] = 0.0
        elif fmt is ImageFormat.OVA:
            def pack(t: Path = target) -> None:
                convert.pack_ova(work / (spec.artefact_name + ImageFormat.VMDK.suffix), t, name=spec.artefact_name,
                                 annotation=spec.description, capacity=layout.total, populated=populated)
            timed("ova", pack)
        else:
            def conv(f: ImageFormat = fmt, t: Path = target) -> None:
                convert.convert(raw, "raw", f, t, log)
            timed(fmt.value, conv)
        sizes[fmt.value] = target.stat().st_blocks * 512 if fmt is ImageFormat.RAW else target.stat().st_size
    if ImageFormat.RAW not in formats:
        raw.unlink()

    shutil.rmtree(staging)
    progress.begin("done")
    return {
        "key": key,
        "name": spec.name,
        "kernel": spec.kernel.value,
        "kernel_release": release,
        "spec": spec.identity(),
        "bundle": str(spec.bundle) if spec.bundle else None,
        "disk_size_bytes": layout.total,
        "root_fs_uuid": layout.root_fs_uuid,
        "content_bytes": content_bytes,
        "preloaded_archives": archives,
        "file_bytes": sizes,
        "timings": timings,
        "accel": accel,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _derive_missing(spec: ImageSpec, final: Path, out: IO[str]) -> dict[ImageFormat, Path]:
    """Cache hit: every format already there is reused; missing ones are converted from the qcow2 master."""
    master = final / (spec.artefact_name + ImageFormat.QCOW2.suffix)
    made: dict[ImageFormat, Path] = {}
    wanted = _kept_formats(spec)
    for fmt in sorted(wanted, key=lambda f: f is ImageFormat.OVA):  # the VMDK before the OVA made from it
        target = final / (spec.artefact_name + fmt.suffix)
        if not target.exists():
            out.write(f"[image] cached build {final.name}: adding {target.name}\n")
            tmp = final / f".{target.name}.tmp"
            with (final / "build.log").open("a") as log:
                if fmt is ImageFormat.OVA:
                    info = convert.image_info(master)
                    convert.pack_ova(final / (spec.artefact_name + ImageFormat.VMDK.suffix), tmp,
                                     name=spec.artefact_name, annotation=spec.description,
                                     capacity=int(str(info["virtual-size"])), populated=int(str(info["actual-size"])))
                else:
                    convert.convert(master, "qcow2", fmt, tmp, log)
            tmp.rename(target)
        made[fmt] = target
    return made
