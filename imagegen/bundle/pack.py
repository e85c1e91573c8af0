"""Bundle I/O: assemble a bundle directory atomically, verify one, and make its ext4 disk image."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from imagegen.bundle.dockerarchive import ArchiveError, read_docker_archive, sha256_file
from imagegen.bundle.format import (
    DISK_LABEL,
    MANIFEST_NAME,
    OPTIONAL_BINARIES,
    REQUIRED_BINARIES,
    RUNTIMES,
    SUMS_NAME,
    AbsentImage,
    BundleFormatError,
    BundleImage,
    Manifest,
    layout_problems,
    manifest_to_json,
    node_lists,
    normalise_version,
    parse_manifest,
    parse_sha256sums,
    sha256sums_text,
    sums_for,
    validate_relpath,
)
from imagegen.bundle.units import CRI_DOCKERD_UNITS, SYSTEMD_UNITS
from imagegen.proc import capture

# Every file and directory of a packed bundle gets this mtime, so `mke2fs -d` sees identical
# trees for identical inputs. SOURCE_DATE_EPOCH overrides it (reproducible-builds convention).
# Not 0: e2fsprogs treats E2FSPROGS_FAKE_TIME=0 as unset and stamps the superblock with "now".
DEFAULT_EPOCH = 1610496000  # 2021-01-13, the Kubernetes v1.20.2 release day
_CHUNK = 1 << 20
# Fixed namespace: the disk's UUID is derived from manifest.json, so the same bundle gives the
# same filesystem UUID.
_DISK_UUID_NAMESPACE = uuid.UUID("4f1d6c1e-5b8a-4c55-9a51-6d1f1d0a2b10")


class BundleError(Exception):
    """Bad input or a broken bundle. `problems` each name the file and what is wrong."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class PackSpec:
    kubernetes_version: str
    runtime: str
    bin_dir: Path
    images_dir: Path
    cni_dir: Path
    out: Path
    extras_dir: Path | None = None
    created_by: str = "imagegen bundle pack"
    absent_images: tuple[AbsentImage, ...] = ()
    replace: bool = False  # replace an existing --out (the old one is removed only on success)


@dataclass(frozen=True)
class DiskImage:
    path: Path
    size_bytes: int
    uuid: str
    label: str


def source_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_EPOCH


def _copy_hashing(src: Path, dst: Path, mode: int) -> str:
    """Copy src to dst and return the sha256 of the bytes written (one read of src)."""
    h = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fin, dst.open("wb") as fout:
        for chunk in iter(lambda: fin.read(_CHUNK), b""):
            h.update(chunk)
            fout.write(chunk)
    dst.chmod(mode)
    return h.hexdigest()


def _regular_files(directory: Path, option: str) -> list[Path]:
    if not directory.is_dir():
        raise BundleError(f"{option} {directory}: not a directory")
    files = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    problems = [f"{option} {p}: not a regular file" for p in files if not p.is_file()]
    if problems:
        raise BundleError(problems)
    return files


def _collect(spec: PackSpec) -> tuple[dict[str, tuple[Path, int]], list[BundleImage], list[str]]:
    """Map bundle relpath -> (source, mode), the images with their tags and the CNI plugins."""
    problems: list[str] = []
    plan: dict[str, tuple[Path, int]] = {}

    binaries = _regular_files(spec.bin_dir, "--bin")
    names = {p.name for p in binaries}
    for p in binaries:
        if p.name not in REQUIRED_BINARIES + OPTIONAL_BINARIES:
            problems.append(f"--bin {p}: unexpected file; allowed names: "
                            f"{', '.join(REQUIRED_BINARIES + OPTIONAL_BINARIES)}")
        else:
            plan[f"bin/{p.name}"] = (p, 0o755)
    problems += [f"--bin {spec.bin_dir}: {name} is missing" for name in REQUIRED_BINARIES
                 if name not in names]

    images: list[BundleImage] = []
    for p in _regular_files(spec.images_dir, "--images"):
        if p.suffix != ".tar":
            problems.append(f"--images {p}: only uncompressed docker-archive *.tar files belong here")
            continue
        rel = f"images/{p.name}"
        try:
            validate_relpath(rel)
            archive = read_docker_archive(p)
        except (ArchiveError, BundleFormatError) as exc:
            problems.append(f"--images {p}: {exc}")
            continue
        tags = [tag for image in archive for tag in image.tags]
        if not tags or any(not image.tags for image in archive):
            problems.append(f"--images {p}: an image in it has no RepoTags; save it with a tag, e.g. "
                            "skopeo copy docker://REF docker-archive:FILE:REF")
            continue
        images.append(BundleImage(rel, tuple(tags)))
        plan[rel] = (p, 0o644)
    if not images and not problems:
        problems.append(f"--images {spec.images_dir}: no *.tar image archives found")

    cni = []
    for p in _regular_files(spec.cni_dir, "--cni"):
        # Release tarballs of the CNI plugins also carry LICENSE and README.md; a plugin is executable.
        if not os.access(p, os.X_OK):
            problems.append(f"--cni {p}: not executable, so not a CNI plugin; remove it from the directory")
            continue
        plan[f"cni/{p.name}"] = (p, 0o755)
        cni.append(p.name)

    if spec.extras_dir is not None:
        if not spec.extras_dir.is_dir():
            problems.append(f"--extras {spec.extras_dir}: not a directory")
        else:
            for dirpath, _dirs, files in os.walk(spec.extras_dir):
                for name in sorted(files):
                    src = Path(dirpath) / name
                    rel = "extras/" + src.relative_to(spec.extras_dir).as_posix()
                    mode = 0o755 if os.access(src, os.X_OK) else 0o644
                    plan[rel] = (src, mode)

    for rel in plan:
        try:
            validate_relpath(rel)
        except BundleFormatError as exc:
            problems.append(str(exc))
    if problems:
        raise BundleError(problems)
    return plan, images, cni


def _normalise_times(root: Path, epoch: int) -> None:
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            os.utime(Path(dirpath) / name, (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def pack_bundle(spec: PackSpec) -> Manifest:
    """Build the bundle in a temporary sibling of spec.out, then rename it into place."""
    try:
        version = normalise_version(spec.kubernetes_version)
    except BundleFormatError as exc:
        raise BundleError(f"--kubernetes-version: {exc}") from exc
    if spec.runtime not in RUNTIMES:
        raise BundleError(f"--runtime {spec.runtime!r}: use one of {', '.join(RUNTIMES)}")
    out = spec.out.absolute()
    if out.exists() and not spec.replace:
        raise BundleError(f"--out {out}: already exists; remove it or choose another directory")
    plan, images, cni = _collect(spec)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        files: dict[str, str] = {}
        for rel, (src, mode) in sorted(plan.items()):
            files[rel] = _copy_hashing(src, tmp / rel, mode)
        units = dict(SYSTEMD_UNITS)
        if "bin/cri-dockerd" in plan:
            units.update(CRI_DOCKERD_UNITS)
        for rel, text in units.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(0o644)
            files[rel] = hashlib.sha256(text.encode()).hexdigest()
        manifest = Manifest(
            kubernetes_version=version,
            runtime=spec.runtime,
            files=files,
            images=tuple(images),
            cni_plugins=tuple(cni),
            created_by=spec.created_by,
            absent_images=spec.absent_images,
        )
        problems = layout_problems(manifest)
        if problems:
            raise BundleError(problems)
        manifest_bytes = manifest_to_json(manifest)
        (tmp / MANIFEST_NAME).write_bytes(manifest_bytes)
        for rel, data in node_lists(manifest).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
            (tmp / rel).chmod(0o644)
        sums = sums_for(manifest, hashlib.sha256(manifest_bytes).hexdigest())
        (tmp / SUMS_NAME).write_text(sha256sums_text(sums))
        for name in (MANIFEST_NAME, SUMS_NAME):
            (tmp / name).chmod(0o644)
        for directory in tmp.rglob("*"):
            if directory.is_dir():
                directory.chmod(0o755)
        _normalise_times(tmp, source_epoch())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def verify_bundle(bundle: Path, check_images: bool = True) -> Manifest:
    """Check manifest, SHA256SUMS, every checksum, modes and the image archives.

    Raises BundleError with one line per problem, each naming the file.
    """
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a directory")
    manifest_path = bundle / MANIFEST_NAME
    sums_path = bundle / SUMS_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; not a bundle directory")
    manifest_bytes = manifest_path.read_bytes()
    try:
        manifest = parse_manifest(manifest_bytes)
    except BundleFormatError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from exc
    problems: list[str] = []
    expected_sums = sums_for(manifest, hashlib.sha256(manifest_bytes).hexdigest())
    if not sums_path.is_file():
        problems.append(f"{sums_path}: missing")
    else:
        try:
            sums = parse_sha256sums(sums_path.read_text())
        except (BundleFormatError, UnicodeDecodeError) as exc:
            problems.append(f"{sums_path}: {exc}")
            sums = expected_sums
        for rel in sorted(set(sums) | set(expected_sums)):
            if sums.get(rel) != expected_sums.get(rel):
                problems.append(f"{sums_path}: entry for {rel} disagrees with manifest.json")

    for rel, digest in sorted(manifest.files.items()):
        path = bundle / rel
        if not path.is_file() or path.is_symlink():
            problems.append(f"{path}: missing (listed in manifest.json)")
            continue
        actual = sha256_file(path)
        if actual != digest:
            problems.append(f"{path}: checksum mismatch (manifest {digest[:12]}..., file {actual[:12]}...)")
            continue
        if rel.startswith(("bin/", "cni/")) and not path.stat().st_mode & stat.S_IXUSR:
            problems.append(f"{path}: not executable")

    lists = node_lists(manifest)
    for rel, data in sorted(lists.items()):
        path = bundle / rel
        if not path.is_file() or path.is_symlink() or path.read_bytes() != data:
            problems.append(f"{path}: missing or not what manifest.json says (re-pack the bundle)")
    known = set(manifest.files) | set(lists) | {MANIFEST_NAME, SUMS_NAME}
    for dirpath, _dirs, names in os.walk(bundle):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(bundle).as_posix()
            if rel not in known:
                problems.append(f"{bundle / rel}: not listed in manifest.json (added after packing?)")

    if check_images and not problems:
        for image in manifest.images:
            try:
                tags = [t for a in read_docker_archive(bundle / image.file) for t in a.tags]
            except ArchiveError as exc:
                problems.append(str(exc))
                continue
            if sorted(tags) != sorted(image.tags):
                problems.append(f"{bundle / image.file}: RepoTags {tags} differ from manifest.json {list(image.tags)}")
    if problems:
        raise BundleError(problems)
    return manifest


# --- ext4 disk image -----------------------------------------------------------------------------

def _disk_blocks(bundle: Path, block: int = 4096) -> tuple[int, int]:
    """(blocks, inodes) for a filesystem holding bundle with comfortable slack."""
    data_blocks = 0
    inodes = 16
    for dirpath, dirs, files in os.walk(bundle):
        inodes += len(dirs) + len(files)
        data_blocks += 1 + len(dirs)
        for name in files:
            data_blocks += math.ceil((Path(dirpath) / name).stat().st_size / block)
    # Extent trees, group descriptors, bitmaps and inode tables: ~3 % plus a fixed 8 MiB.
    blocks = int(data_blocks * 1.03) + (8 << 20) // block + inodes * 256 // block
    return blocks, inodes + 64


def _debugfs_normalise_script(bundle: Path, epoch: int) -> str:
    """debugfs commands giving every inode the same owner and times.

    `mke2fs -d` copies owners and atime/mtime/ctime from the source tree; ctime cannot be set
    from user space, so it is rewritten in the image afterwards.
    """
    paths = ["/"]
    for dirpath, dirs, files in os.walk(bundle):
        for name in sorted(dirs + files):
            paths.append("/" + (Path(dirpath) / name).relative_to(bundle).as_posix())
    lines = []
    for path in sorted(paths):
        # debugfs reads a bare number as YYYYMMDD...; "@N" means seconds since the epoch.
        for fld, value in (("uid", "0"), ("gid", "0"), ("atime", f"@{epoch}"), ("mtime", f"@{epoch}"),
                           ("ctime", f"@{epoch}"), ("crtime", f"@{epoch}")):
            lines.append(f'sif "{path}" {fld} {value}')
    return "\n".join(lines) + "\n"


def make_disk(bundle: Path, out: Path, verify: bool = True) -> DiskImage:
    """Raw ext4 image labelled imagegen-bundle holding the bundle, built without mounting."""
    manifest_path = bundle / MANIFEST_NAME
    if verify:
        verify_bundle(bundle)
    elif not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; not a bundle directory")
    for tool in ("mke2fs", "debugfs"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise BundleError(f"{tool} not found: install e2fsprogs")
    fs_uuid = str(uuid.uuid5(_DISK_UUID_NAMESPACE, sha256_file(manifest_path)))
    epoch = source_epoch()
    blocks, inodes = _disk_blocks(bundle)
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch), "E2FSPROGS_SKIP_PROGRESS": "1",
           "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    try:
        tmp.unlink(missing_ok=True)
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", DISK_LABEL, "-U", fs_uuid,
              # No journal: the disk is attached read-only and never needs recovery.
              "-O", "^has_journal", "-m", "0", "-b", "4096", "-I", "256", "-N", str(inodes),
              "-E", f"hash_seed={fs_uuid},root_owner=0:0,lazy_itable_init=0,nodiscard",
              "-d", str(bundle), str(tmp), str(blocks)], env)
        script = tmp.with_name(tmp.name + ".debugfs")
        script.write_text(_debugfs_normalise_script(bundle, epoch))
        try:
            _run(["debugfs", "-w", "-f", str(script), str(tmp)], env)
        finally:
            script.unlink(missing_ok=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return DiskImage(out, out.stat().st_size, fs_uuid, DISK_LABEL)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = capture(cmd, env=env)
    # debugfs exits 0 even when a command fails; anything on stderr besides its banner is an error.
    noise = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("debugfs ")]
    if proc.returncode != 0 or (cmd[0] == "debugfs" and noise):
        raise BundleError(f"{cmd[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
