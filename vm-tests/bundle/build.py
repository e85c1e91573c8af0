"""Build the offline Kubernetes v1.20.2 test bundle on this machine, from Debian packages only.

    .venv/bin/python vm-tests/bundle/build.py [--force] [--force-compile] [--crictl PATH] [--cri-dockerd PATH]

Kubernetes is compiled from Debian bookworm's `kubernetes` source package (k8s_compile.py,
cached separately). Images are written as docker-archive tarballs by imagegen's own writer, no
container engine: control-plane binaries on a tiny base, kube-proxy on a Debian minbase rootfs
(iptables, ipset, conntrack, ipvsadm), pause from its C source, etcd from Debian's etcd-server.
CoreDNS is not in Debian and is deliberately absent (no placeholder pretends to be it).
crictl (kubeadm's containerd preflight needs it) is built from upstream cri-tools source (crictl_build.py,
cached separately) unless --crictl names one; with it the one bundle serves containerd and Docker nodes.

Result: ~/.cache/imagegen/bundle/<key>/{bundle/,bundle.img,build.log,build-info.json} and the
symlink ~/.cache/imagegen/bundle/current -> <key>. The key hashes every input, so a second run
is instant.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from buildlib import (
    CACHE_ROOT,
    BuildError,
    BuildLog,
    digest_of,
    ensure_packages,
    extract_debs,
    file_sha256,
)
from crictl_build import DEFAULT_SOURCE, Crictl, build_crictl, given_crictl, is_static
from k8s_compile import KUBE_VERSION, CompiledKubernetes, compile_kubernetes

from imagegen.bundle.dockerarchive import (
    ImageConfig,
    LayerEntry,
    read_docker_archive,
    write_docker_archive,
    write_layer_tar,
)
from imagegen.bundle.format import AbsentImage
from imagegen.bundle.pack import PackSpec, make_disk, pack_bundle, verify_bundle

# Run as a script, so this directory is on sys.path already; imagegen is installed in .venv.
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUNDLE_ROOT = CACHE_ROOT / "bundle"
INPUTS_ROOT = CACHE_ROOT / "bundle-inputs"
MIRROR = "http://deb.debian.org/debian"
# Binary packages whose files go into the bundle (extracted with dpkg -x, never installed).
PAYLOAD_DEBS = ("etcd-server", "etcd-client", "busybox-static", "containernetworking-plugins", "libc6")
HOST_TOOLS = ("mmdebstrap", "e2fsprogs", "binutils", "skopeo")
KUBE_PROXY_PACKAGES = ("iptables", "ipset", "conntrack", "ipvsadm", "kmod")
REGISTRY = "k8s.gcr.io"  # what kubeadm v1.20.2 pulls from
ETCD_TAG = "3.4.13-0"  # the etcd tag kubeadm v1.20.2 expects
ABSENT = (
    AbsentImage(
        f"{REGISTRY}/coredns:1.7.0",
        "CoreDNS is not packaged in Debian bookworm: skip the addon (--skip-phases=addon/coredns) "
        "and ignore the ImagePull preflight for it; cluster DNS is then absent",
    ),
)
BUSYBOX_TAG = "imagegen.local/busybox:1"
SOURCE_FILES = (
    HERE / "build.py",
    HERE / "buildlib.py",
    HERE / "k8s_compile.py",
    HERE / "crictl_build.py",
    REPO / "imagegen" / "bundle" / "dockerarchive.py",
    REPO / "imagegen" / "bundle" / "format.py",
    REPO / "imagegen" / "bundle" / "pack.py",
    REPO / "imagegen" / "bundle" / "units.py",
)

BASE_FILES = (
    LayerEntry("etc/passwd", "file", 0o644,
               data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    LayerEntry("etc/group", "file", 0o644, data=b"root:x:0:\nnogroup:x:65534:\n"),
    LayerEntry("etc/nsswitch.conf", "file", 0o644, data=b"hosts: files dns\n"),
    LayerEntry("tmp", "dir", 0o1777),
    LayerEntry("root", "dir", 0o700),
)


def apt_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Candidate versions in one `apt-cache policy` call (apt-cache show costs ~1 s each)."""
    out = subprocess.run(["apt-cache", "policy", *packages], capture_output=True, text=True,
                         check=True).stdout
    versions: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
        elif line.strip().startswith("Candidate:") and current:
            versions[current] = line.split(":", 1)[1].strip()
    missing = [p for p in packages if versions.get(p, "(none)") == "(none)"]
    if missing:
        raise BuildError(f"apt has no candidate for {', '.join(missing)}")
    return versions


class ImageBuilder:
    """Writes layers and docker-archives into a staging directory."""

    def __init__(self, work: Path, log: BuildLog) -> None:
        self.layers = work / "layers"
        self.images = work / "images"
        self.layers.mkdir(parents=True)
        self.images.mkdir(parents=True)
        self.log = log
        self.base = self.layer("base", list(BASE_FILES))

    def layer(self, name: str, entries: list[LayerEntry]) -> Path:
        path = self.layers / f"{name}.tar"
        with path.open("wb") as fh:
            write_layer_tar(entries, fh)
        return path

    def image(self, file: str, tags: list[str], layers: list[Path], config: ImageConfig) -> None:
        image_id = write_docker_archive(self.images / f"{file}.tar", tags, layers, config)
        size = (self.images / f"{file}.tar").stat().st_size
        self.log.note(f"image {tags[0]}: {size / 1e6:.0f} MB, id {image_id[:19]}")


def binary_image(builder: ImageBuilder, compiled: CompiledKubernetes, name: str) -> None:
    top = builder.layer(name, [LayerEntry(f"usr/local/bin/{name}", "file", 0o755,
                                          source=compiled.bin_dir / name)])
    builder.image(name, [f"{REGISTRY}/{name}:{KUBE_VERSION}"], [builder.base, top],
                  ImageConfig(entrypoint=(f"/usr/local/bin/{name}",)))


def kube_proxy_rootfs(log: BuildLog) -> Path:
    """Debian minbase with the netfilter tools kube-proxy shells out to (cached by its recipe)."""
    recipe = {"packages": KUBE_PROXY_PACKAGES, "suite": "bookworm", "rev": 1,
              "versions": apt_versions(KUBE_PROXY_PACKAGES)}
    out = INPUTS_ROOT / f"kube-proxy-rootfs-{digest_of(recipe)}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.tar")
    with log.step("mmdebstrap kube-proxy rootfs (minbase + iptables ipset conntrack ipvsadm)"):
        log.run([
            "mmdebstrap", "--variant=minbase", f"--include={','.join(KUBE_PROXY_PACKAGES)}",
            "--aptopt=Acquire::Languages \"none\"",
            # Docs and locales are dead weight in an image that only runs kube-proxy.
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
            "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
            # Device nodes come from the container runtime, not the image.
            "--skip=output/dev",
            "bookworm", str(tmp), MIRROR,
        ], env={**os.environ, "SOURCE_DATE_EPOCH": "1610496000"})
    os.replace(tmp, out)
    return out


def busybox_entries(busybox: Path) -> list[LayerEntry]:
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    entries = [*BASE_FILES, LayerEntry("bin/busybox", "file", 0o755, source=busybox)]
    for applet in sorted(set(applets)):
        if applet == "bin/busybox":
            continue
        depth = applet.count("/")
        entries.append(LayerEntry(applet, "symlink", linkname="../" * depth + "bin/busybox"))
    return entries


def build_images(builder: ImageBuilder, compiled: CompiledKubernetes, debs: Path, log: BuildLog) -> None:
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        binary_image(builder, compiled, name)

    rootfs = kube_proxy_rootfs(log)
    proxy_top = builder.layer("kube-proxy", [LayerEntry("usr/local/bin/kube-proxy", "file", 0o755,
                                                       source=compiled.bin_dir / "kube-proxy")])
    builder.image("kube-proxy", [f"{REGISTRY}/kube-proxy:{KUBE_VERSION}"], [rootfs, proxy_top],
                  ImageConfig(entrypoint=("/usr/local/bin/kube-proxy",)))

    pause = builder.layer("pause", [LayerEntry("pause", "file", 0o755, source=compiled.bin_dir / "pause")])
    builder.image("pause", [f"{REGISTRY}/pause:3.2"], [pause],
                  ImageConfig(entrypoint=("/pause",), user="65535:65535", env=()))

    # Debian's etcd is dynamically linked against glibc: ship the loader and libc from libc6.
    root = debs / "root"
    etcd_version = json.loads((debs / "versions.json").read_text())["etcd-server"].split("-")[0]
    etcd = builder.layer("etcd", [
        LayerEntry("usr/local/bin/etcd", "file", 0o755, source=root / "usr/bin/etcd"),
        LayerEntry("usr/local/bin/etcdctl", "file", 0o755, source=root / "usr/bin/etcdctl"),
        LayerEntry("lib/x86_64-linux-gnu/libc.so.6", "file", 0o755,
                   source=root / "lib/x86_64-linux-gnu/libc.so.6"),
        LayerEntry("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "file", 0o755,
                   source=root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        LayerEntry("lib64/ld-linux-x86-64.so.2", "symlink",
                   linkname="/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        LayerEntry("var/lib/etcd", "dir", 0o700),
    ])
    # Tagged as kubeadm expects (it is etcd 3.4, a newer patch release) and by its true version.
    builder.image("etcd", [f"{REGISTRY}/etcd:{ETCD_TAG}", f"imagegen.local/etcd:{etcd_version}"],
                  [builder.base, etcd], ImageConfig(entrypoint=("/usr/local/bin/etcd",)))

    busybox = builder.layer("busybox", busybox_entries(root / "bin/busybox"))
    builder.image("busybox", [BUSYBOX_TAG], [busybox], ImageConfig(cmd=("sh",)))


def sanity_checks(compiled: CompiledKubernetes, provided: set[str], log: BuildLog) -> dict[str, object]:
    """kubeadm must report v1.20.2 and want exactly our images (CoreDNS excepted)."""
    kubeadm = str(compiled.bin_dir / "kubeadm")
    version = log.run([kubeadm, "version", "-o", "short"], capture=True).strip()
    if version != KUBE_VERSION:
        raise BuildError(f"kubeadm version -o short printed {version!r}, expected {KUBE_VERSION}")
    wanted = set(log.run([kubeadm, "config", "images", "list", "--kubernetes-version", KUBE_VERSION],
                         capture=True).split())
    missing = sorted(wanted - provided)
    unexpected_missing = sorted(set(missing) - {a.tag for a in ABSENT})
    if unexpected_missing:
        raise BuildError(f"kubeadm wants images the bundle lacks: {', '.join(unexpected_missing)}")
    versions = {name: log.run([str(compiled.bin_dir / name), "--version"], capture=True).strip()
                for name in ("kubelet", "kube-apiserver", "kube-proxy")}
    kubectl = log.run([str(compiled.bin_dir / "kubectl"), "version", "--client", "--short"], capture=True)
    statics = {}
    for name in ("kubeadm", "kubelet", "kubectl", "kube-apiserver", "pause"):
        dyn = subprocess.run(["readelf", "-l", str(compiled.bin_dir / name)], capture_output=True,
                             text=True, check=True).stdout
        statics[name] = "INTERP" not in dyn
    if not all(statics.values()):
        raise BuildError(f"expected static binaries: {statics}")
    result = {
        "kubeadm_version": version,
        "kubeadm_images": sorted(wanted),
        "missing_images": missing,
        "extra_images": sorted(provided - wanted),
        "versions": {**versions, "kubectl": kubectl.strip()},
        "static": statics,
    }
    log.note(f"kubeadm version -o short: {version}")
    log.note(f"kubeadm config images list: {len(wanted)} images; bundle lacks: {', '.join(missing) or 'none'}; "
             f"extra: {', '.join(result['extra_images']) or 'none'}")  # type: ignore[arg-type]
    return result


# Command run inside each image's unpacked rootfs (chroot) and text its output must contain.
SMOKE_COMMANDS: dict[str, list[tuple[list[str], str]]] = {
    "kube-apiserver": [(["/usr/local/bin/kube-apiserver", "--version"], "Kubernetes v1.20.2")],
    "kube-controller-manager": [(["/usr/local/bin/kube-controller-manager", "--version"], "Kubernetes v1.20.2")],
    "kube-scheduler": [(["/usr/local/bin/kube-scheduler", "--version"], "Kubernetes v1.20.2")],
    "kube-proxy": [
        (["/usr/local/bin/kube-proxy", "--version"], "Kubernetes v1.20.2"),
        (["iptables", "--version"], "iptables v"),
        (["ipset", "--version"], "ipset v"),
        (["conntrack", "--version"], "conntrack v"),
        # ipvsadm cannot even print its version without the host's ip_vs module; presence only.
        (["sh", "-c", "command -v ipvsadm"], "/ipvsadm"),
    ],
    "pause": [(["/pause", "-v"], "pause.c v3.2")],
    "etcd": [(["/usr/local/bin/etcd", "--version"], "etcd Version: 3.4"),
             (["/usr/local/bin/etcdctl", "version"], "etcdctl version: 3.4")],
    "busybox": [(["/bin/sh", "-c", "echo busybox-ok; ls /bin | wc -l"], "busybox-ok")],
}


def smoke_test_images(images: Path, scratch: Path, log: BuildLog) -> dict[str, str]:
    """Read every archive with skopeo (a real consumer) and run its binaries from its own layers.

    No container engine is available here, so the layers are unpacked in order with tar and the
    commands run under chroot: this proves the layers are complete (libc for etcd, iptables for
    kube-proxy) without pretending to be a runtime.
    """
    results: dict[str, str] = {}
    for archive in sorted(images.glob("*.tar")):
        name = archive.stem
        info = json.loads(log.run(["skopeo", "inspect", f"docker-archive:{archive}"], capture=True))
        root = scratch / name
        root.mkdir(parents=True)
        for member in info["Layers"]:
            # skopeo reports layers by diff_id; docker-archive stores them as <hex>/layer.tar.
            hexdigest = member.split(":", 1)[1]
            with tarfile.open(archive) as outer:
                blob = outer.extractfile(f"{hexdigest}/layer.tar")
                assert blob is not None
                subprocess.run(["tar", "-x", "-C", str(root), "--no-same-owner", "-f", "-"],
                               input=blob.read(), check=True)
        for cmd, expected in SMOKE_COMMANDS.get(name, []):
            out = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, check=False)
            text = (out.stdout + out.stderr).strip()
            if out.returncode != 0 or expected not in text:
                raise BuildError(f"image {name}: `{' '.join(cmd)}` gave exit {out.returncode}: {text[:300]}")
            results[f"{name}: {' '.join(cmd)}"] = text.splitlines()[0]
        shutil.rmtree(root)
    log.note(f"image smoke checks passed: {len(results)} commands in {len(list(images.glob('*.tar')))} images")
    return results


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def point_current(target: Path) -> None:
    link = BUNDLE_ROOT / "current"
    tmp = BUNDLE_ROOT / f".current.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    os.replace(tmp, link)


def prune_old_bundles(keep: Path, log: BuildLog) -> None:
    """Each bundle is ~1.5 GB with its disk image; only `current` is part of the contract."""
    for entry in BUNDLE_ROOT.iterdir():
        if entry != keep and entry.is_dir() and not entry.is_symlink() and re.fullmatch(r"[0-9a-f]{16}", entry.name):
            shutil.rmtree(entry)
            log.note(f"removed old bundle {entry}")
        elif entry.name.startswith("failed-") and entry.name != f"failed-{keep.name}.log":
            entry.unlink()


def report(final: Path) -> None:
    info = json.loads((final / "build-info.json").read_text())
    print(f"bundle:      {final / 'bundle'}")
    print(f"disk image:  {final / 'bundle.img'} (ext4, label imagegen-bundle)")
    print(f"current:     {BUNDLE_ROOT / 'current'} -> {final.name}")
    print(f"build log:   {final / 'build.log'}")
    t = info["seconds"]
    print(f"times:       compile {t['compile']:.0f} s (cached: {t['compile_cached']}), images {t['images']:.0f} s, "
          f"pack+disk {t['pack_disk']:.0f} s, total {t['total']:.0f} s")
    sizes = info["bytes"]
    print(f"sizes:       bundle {sizes['bundle'] / 1e6:.0f} MB, disk image {sizes['disk'] / 1e6:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the offline Kubernetes v1.20.2 test bundle.")
    parser.add_argument("--force", action="store_true", help="rebuild the bundle even if cached")
    parser.add_argument("--force-compile", action="store_true", help="also recompile Kubernetes")
    parser.add_argument("--crictl", type=Path, default=None, metavar="PATH",
                        help="use this crictl binary instead of building cri-tools from source (make CRICTL=...)")
    parser.add_argument("--cri-tools-source", type=Path, default=DEFAULT_SOURCE, metavar="TARBALL",
                        help=f"cri-tools source for crictl (default {DEFAULT_SOURCE}; make CRI_TOOLS_SRC=...)")
    parser.add_argument("--cri-dockerd", type=Path, default=None, metavar="PATH",
                        help="also carry this cri-dockerd binary, with its systemd units (Docker, Kubernetes >= 1.24)")
    args = parser.parse_args()
    start = time.monotonic()
    BUNDLE_ROOT.mkdir(parents=True, exist_ok=True)
    prep_log = BuildLog(BUNDLE_ROOT / "prepare.log")
    try:
        ensure_packages(prep_log, HOST_TOOLS)
        compile_start = time.monotonic()
        compiled = compile_kubernetes(force=args.force_compile)
        compile_wall = time.monotonic() - compile_start
        crictl = given_crictl(args.crictl) if args.crictl else build_crictl(args.cri_tools_source)
        cri_dockerd = args.cri_dockerd.resolve() if args.cri_dockerd else None
        if cri_dockerd is not None and not (cri_dockerd.is_file() and os.access(cri_dockerd, os.X_OK)):
            raise BuildError(f"--cri-dockerd {cri_dockerd}: not an executable file")
        inputs = {
            "compile": compiled.key,
            "crictl": file_sha256(crictl.path),
            "cri_dockerd": file_sha256(cri_dockerd) if cri_dockerd else None,
            "debs": apt_versions(PAYLOAD_DEBS),
            "kube_proxy": apt_versions(KUBE_PROXY_PACKAGES),
            "sources": {p.name: file_sha256(p) for p in SOURCE_FILES},
        }
        key = digest_of(inputs)
        final = BUNDLE_ROOT / key
        if (final / "build-info.json").exists() and not args.force:
            point_current(final)
            print("[bundle] up to date (cached)")
            report(final)
            return 0
        work = BUNDLE_ROOT / f".{key}.tmp-{os.getpid()}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        log = BuildLog(work / "build.log")
        log.note(f"building bundle {key} (Kubernetes {KUBE_VERSION}, compile {compiled.key})")
        try:
            build(work, log, compiled, crictl, cri_dockerd, inputs)
            info = json.loads((work / "build-info.json").read_text())
            info["seconds"]["compile"] = compiled.seconds
            info["seconds"]["compile_cached"] = compiled.cached
            info["seconds"]["compile_wall_this_run"] = round(compile_wall, 1)
            info["seconds"]["total"] = round(time.monotonic() - start, 1)
            (work / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(work, final)
        except BaseException:
            failed = BUNDLE_ROOT / f"failed-{key}.log"
            if (work / "build.log").exists():
                shutil.copy(work / "build.log", failed)
                print(f"[bundle] build failed; log kept at {failed}", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
            raise
        point_current(final)
        prune_old_bundles(final, BuildLog(final / "build.log"))
        report(final)
        return 0
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def build(work: Path, log: BuildLog, compiled: CompiledKubernetes, crictl: Crictl, cri_dockerd: Path | None,
          inputs: dict[str, object]) -> None:
    timings: dict[str, float] = {}
    staging = work / "inputs"
    with log.step("extract Debian payload packages (" + ", ".join(PAYLOAD_DEBS) + ")"):
        debs = work / "debs"
        versions = extract_debs(log, PAYLOAD_DEBS, debs)
        (debs / "versions.json").write_text(json.dumps(versions, indent=2))
    root = debs / "root"

    t0 = time.monotonic()
    with log.step("write docker-archive images"):
        builder = ImageBuilder(staging, log)
        build_images(builder, compiled, debs, log)
    timings["images"] = round(time.monotonic() - t0, 1)

    bindir = staging / "bin"
    bindir.mkdir()
    for name in ("kubeadm", "kubelet", "kubectl"):
        shutil.copy2(compiled.bin_dir / name, bindir / name)
    shutil.copy2(root / "usr/bin/etcdctl", bindir / "etcdctl")
    shutil.copy2(crictl.path, bindir / "crictl")
    log.note(f"crictl: {crictl.version}, {crictl.origin}")
    if cri_dockerd is not None:
        shutil.copy2(cri_dockerd, bindir / "cri-dockerd")
        log.note(f"cri-dockerd: {cri_dockerd}")
    cni = root / "usr/lib/cni"

    provided: set[str] = set()
    for archive in sorted(builder.images.glob("*.tar")):
        provided.update(t for image in read_docker_archive(archive) for t in image.tags)
    checks = sanity_checks(compiled, provided, log)
    checks["crictl"] = {"version": crictl.version, "origin": crictl.origin, "static": is_static(bindir / "crictl")}
    with log.step("image smoke checks (skopeo inspect, chroot into unpacked layers)"):
        checks["image_smoke"] = smoke_test_images(builder.images, work / "smoke", log)
        shutil.rmtree(work / "smoke")

    t0 = time.monotonic()
    with log.step("pack bundle and verify"):
        spec = PackSpec(
            kubernetes_version=KUBE_VERSION,
            # containerd: the bundle carries crictl, so it serves containerd nodes; its docker-archive images and
            # binaries serve Docker nodes just the same.
            runtime="containerd",
            bin_dir=bindir,
            images_dir=builder.images,
            cni_dir=cni,
            out=work / "bundle",
            created_by=f"imagegen vm-tests/bundle/build.py: Debian kubernetes {compiled.source_version}, "
                       f"{compiled.go_version}",
            absent_images=ABSENT,
        )
        manifest = pack_bundle(spec)
        verify_bundle(work / "bundle")
    with log.step("make ext4 disk image bundle.img"):
        disk = make_disk(work / "bundle", work / "bundle.img", verify=False)
    timings["pack_disk"] = round(time.monotonic() - t0, 1)
    shutil.rmtree(staging)
    shutil.rmtree(debs)

    info = {
        "key_inputs": inputs,
        "deb_versions": versions,
        "kubernetes_source": compiled.source_version,
        "go": compiled.go_version,
        "crictl": {"version": crictl.version, "origin": crictl.origin, "seconds": crictl.seconds,
                   "cached": crictl.cached},
        "images": {i.file: list(i.tags) for i in manifest.images},
        "absent_images": [a.tag for a in ABSENT],
        "checks": checks,
        "seconds": timings,
        "bytes": {"bundle": tree_size(work / "bundle"), "disk": disk.size_bytes},
        "disk_uuid": disk.uuid,
        "manifest_sha256": hashlib.sha256((work / "bundle" / "manifest.json").read_bytes()).hexdigest(),
    }
    (work / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
