#!/usr/bin/env python3
"""The lab's package repositories and registry, for nodes booted from a stock image with no internet.

    python vm-tests/lab/repo.py build [--force]     # once: Debian packages, Kubernetes .debs, registry storage
    python vm-tests/lab/repo.py serve --address 10.80.0.1
    python vm-tests/lab/repo.py show                # the JSON index of what was built

Built under ~/.cache/imagegen/lab-repo (IMAGEGEN_LAB_REPO overrides):
  www/debian/                       signed `bookworm main`: what each profile package group (and the Kubernetes
                                    packages' Debian dependencies) adds to the stock image (lab/debian.py)
  www/core:/stable:/v1.20/deb/      pkgs.k8s.io's layout and names, from the bundle (lab/kubedebs.py)
  registry/storage                  docker-registry storage with the bundle's images (lab/registry.py)
  lab-repo.asc, lab-repo.gpg        the throwaway signing key (armoured, binary); gnupg/ holds its secret half
  index.json                        what was built, from which inputs, and how long it took

A harness serves them with `LabRepos` (both apt repositories over one Python HTTP server, the registry as a
process), each with a request log; `missing()` lists every request the lab could not answer, so a test can fail on
anything a node wanted that the lab does not hold.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
for _p in (str(HERE.parent), str(REPO_ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from imagegen.image.build import load_spec  # noqa: E402
from imagegen.profiles import load_distro  # noqa: E402
from lab import aptrepo, kubedebs, registry  # noqa: E402
from lab.aptroot import PrivateApt  # noqa: E402
from lab.debian import build_debian_repo  # noqa: E402

# Bump when what `build` makes changes in a way its inputs do not show: everything is rebuilt once.
RECIPE = 2
CACHE = Path(os.environ.get("IMAGEGEN_LAB_REPO", Path.home() / ".cache" / "imagegen" / "lab-repo"))
BUNDLE = Path.home() / ".cache" / "imagegen" / "bundle" / "current" / "bundle"
IMAGES = Path.home() / ".cache" / "imagegen" / "images"
STOCK_SPEC = "stock"
DISTRO = "debian-12"
DEBIAN_PATH = "debian"
ORIGIN = "imagegen-lab"
TOOLS = ("apt-get", "dpkg-deb", "gpg", "gpgconf", "skopeo")
# The Debian packages kubelet's and kubeadm's packages depend on (kubedebs.KUBELET_DEPENDS, unversioned).
KUBE_DEBIAN_DEPENDS = ["iptables", "iproute2", "socat", "util-linux", "mount", "ebtables", "ethtool", "conntrack"]


def kube_path(kube_version: str) -> str:
    """pkgs.k8s.io's path for a version's minor: core:/stable:/v1.20/deb/ (imagegen.plan's default URL)."""
    return f"core:/stable:/v{'.'.join(kube_version.split('.')[:2])}/deb/"


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


@dataclass(frozen=True)
class Inputs:
    bundle: Path
    kube_version: str
    stock_packages: tuple[str, ...]
    mirror: str
    suite: str
    groups: dict[str, list[str]]
    packages_txt: Path | None

    def keys(self) -> dict[str, str]:
        """One key per part: a part is rebuilt when its key changes."""
        manifest = (self.bundle / "manifest.json").read_bytes()

        def h(*parts: object) -> str:
            return hashlib.sha256(json.dumps([RECIPE, *parts], sort_keys=True, default=str).encode()).hexdigest()

        stock_txt = self.packages_txt.read_text() if self.packages_txt else ""
        return {"debian": h(self.stock_packages, stock_txt, self.mirror, self.suite, self.groups),
                "kubernetes": h(manifest.decode(), kubedebs.REVISION, kubedebs.CRI_TOOLS_VERSION,
                                kubedebs.CNI_VERSION, Path(kubedebs.__file__).read_text()),
                "registry": h(json.loads(manifest).get("images"), json.loads(manifest).get("files"))}


def inputs(bundle: Path = BUNDLE) -> Inputs:
    spec = load_spec(STOCK_SPEC)
    distro = load_distro(DISTRO)
    groups = {g: list(p) for g, p in sorted(distro.packages.items())}
    groups["kubernetes-depends"] = KUBE_DEBIAN_DEPENDS
    manifest = json.loads((bundle / "manifest.json").read_text())
    txt = IMAGES / spec.artefact_name / "packages.txt"
    return Inputs(bundle, str(manifest["kubernetes_version"]), spec.packages, spec.mirror, spec.suite, groups,
                  txt if txt.is_file() else None)


def image_pushes(bundle: Path, kube_version: str) -> list[tuple[str, str, str, str]]:
    """(archive, tag in it, name to push as, why a placeholder or ""): every tag of the bundle's images, plus
    the images kubeadm lists (its own `config images list`) that no bundle can hold. Only CoreDNS is allowed to be
    missing: the lab plans skip its addon, but kubeadm's preflight still pulls it through the mirror, so the
    lab holds the pause image under its name (as the bundle path tags it on the node, kubeadm.sh's
    ensure_offline_images), never run."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    out = [(str(i["file"]), str(t), str(t), "") for i in manifest["images"] for t in i["tags"]]
    held = {t for _, _, t, _ in out}
    paths: dict[str, str] = {}
    for archive, tag, _, _ in out:  # one registry mirrors several: two names must not share a path
        if paths.setdefault(registry.mirror_path(tag), archive) != archive:
            raise RuntimeError(f"{tag} and another image of the bundle would share {registry.mirror_path(tag)} "
                               "in the lab registry")
    listed = subprocess.run([str(bundle / "bin" / "kubeadm"), "config", "images", "list", "--kubernetes-version",
                             f"v{kube_version}"], capture_output=True, text=True, check=True).stdout.split()
    pause = next(((a, t) for a, t, _, _ in out if "/pause:" in t), None)
    for image in listed:
        if image in held:
            continue
        if "coredns" not in image or pause is None:
            raise RuntimeError(f"kubeadm lists {image}, which the bundle lacks: make bundle")
        out.append((pause[0], pause[1], image, f"{pause[1]} (the CoreDNS addon is skipped; kubeadm's preflight "
                                                "pulls it all the same)"))
    return out


def read_index(cache: Path = CACHE) -> dict[str, Any]:
    path = cache / "index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def is_current(cache: Path = CACHE, bundle: Path = BUNDLE) -> bool:
    """Built, and built from these inputs."""
    index = read_index(cache)
    return bool(index) and index.get("keys") == inputs(bundle).keys()


def _log(msg: str) -> None:
    print(f"lab-repo: {msg}", flush=True)


def build(cache: Path = CACHE, bundle: Path = BUNDLE, *, force: bool = False) -> dict[str, Any]:
    """Build what is missing or stale; returns the index (also written to cache/index.json)."""
    absent = missing_tools()
    if absent:
        raise RuntimeError(f"missing tools: {', '.join(absent)} (apt-get install {' '.join(absent)})")
    if not (bundle / "manifest.json").is_file():
        raise RuntimeError(f"no bundle at {bundle}: make bundle")
    cache.mkdir(parents=True, exist_ok=True)
    inp = inputs(bundle)
    keys = inp.keys()
    index = read_index(cache)
    old_keys = index.get("keys", {}) if not force else {}
    timings: dict[str, float] = dict(index.get("timings", {}))
    built_now: list[str] = []
    key = aptrepo.signing_key(cache)
    www = cache / "www"
    apt = PrivateApt(cache / "apt")

    if old_keys.get("debian") != keys["debian"] or not (www / DEBIAN_PATH / "dists").is_dir():
        t = time.monotonic()
        result = build_debian_repo(
            apt_root=cache / "apt", out=www / DEBIAN_PATH, mirror=inp.mirror, suite=inp.suite,
            stock_packages=inp.stock_packages, packages_txt=inp.packages_txt, groups=inp.groups,
            publish=functools.partial(aptrepo.publish_dists, suite=inp.suite, key=key, origin=ORIGIN,
                                      label="imagegen lab Debian"), log=_log)
        index["debian"] = {"path": f"{DEBIAN_PATH}/", "suite": inp.suite, "component": "main",
                           "mirror": inp.mirror, **asdict(result)}
        timings["debian"] = round(time.monotonic() - t, 1)
        built_now.append("debian")
    else:
        apt.setup((cache / "apt" / "etc/apt/sources.list").read_text())

    kpath = kube_path(inp.kube_version)
    if old_keys.get("kubernetes") != keys["kubernetes"] or not (www / kpath / "InRelease").is_file():
        t = time.monotonic()
        shutil.rmtree(www / kpath, ignore_errors=True)
        _log(f"Kubernetes {inp.kube_version} packages from {bundle} (dpkg-deb --build)")
        debs = kubedebs.build_kube_debs(bundle, inp.kube_version, cache / "work", www / kpath / "amd64")
        aptrepo.publish_flat(www / kpath, key, origin=ORIGIN, label="imagegen lab Kubernetes")
        index["kubernetes"] = {"path": kpath, "version": inp.kube_version, "revision": kubedebs.REVISION,
                               "packages": [{"package": s.package, "version": s.full_version,
                                             "file": f"amd64/{s.filename}",
                                             "sha256": hashlib.sha256(d.read_bytes()).hexdigest(),
                                             "paths": [dest for _, dest in s.files]}
                                            for s, d in zip(kubedebs.deb_specs(bundle, inp.kube_version), debs,
                                                           strict=True)]}
        timings["kubernetes"] = round(time.monotonic() - t, 1)
        built_now.append("kubernetes")

    reg = cache / "registry"
    if old_keys.get("registry") != keys["registry"] or not (reg / "storage" / "docker").is_dir():
        t = time.monotonic()
        binary = registry.fetch_registry(apt, reg)
        shutil.rmtree(reg / "storage", ignore_errors=True)
        proc = registry.RegistryProcess(binary, reg / "storage", "127.0.0.1", registry.free_port(),
                                        reg / "push.log")
        pushes = image_pushes(bundle, inp.kube_version)
        pushed = []
        proc.start()
        try:
            for archive, tag, as_name, why in pushes:
                _log(f"skopeo copy {archive} {tag}" + (f" as {as_name}" if as_name != tag else ""))
                registry.push_archive(bundle / archive, tag, proc.netloc, as_name=as_name)
                pushed.append({"image": as_name, "repository": registry.mirror_path(as_name), "file": archive,
                               **({"placeholder": why} if why else {})})
        finally:
            proc.stop()
        index["registry"] = {"binary": str(binary.relative_to(cache)), "storage": "registry/storage",
                             "images": pushed}
        timings["registry"] = round(time.monotonic() - t, 1)
        built_now.append("registry")

    index.update({"keys": keys, "timings": timings, "key_fingerprint": key.fingerprint,
                  "key": {"armored": key.armored.name, "keyring": key.keyring.name},
                  "bundle": str(bundle), "stock_spec": STOCK_SPEC,
                  "built_at": index.get("built_at") if index.get("keys") == keys else
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    (cache / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return {**index, "built_now": built_now}


# --- serving ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    server: str      # "http" (the apt repositories) or "registry"
    method: str
    path: str
    status: int


class _Handler(http.server.SimpleHTTPRequestHandler):
    sink: list[Request]
    log_file: Path
    lock: threading.Lock

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = int(code.value if hasattr(code, "value") else code) if str(code) != "-" else 0
        req = Request("http", self.command or "", self.path, status)
        with self.lock:
            self.sink.append(req)
            with self.log_file.open("a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {self.client_address[0]} {req.method} {req.path} "
                        f"{req.status}\n")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # log_request records every request; nothing on stderr


class LabRepos:
    """The lab's apt repositories (one HTTP server) and registry, listening on `address` (the lab bridge's
    gateway address once the libvirt network exists; 127.0.0.1 in tests). Ports 0: a free one each."""

    def __init__(self, address: str, *, http_port: int = 8080, registry_port: int = 5000, cache: Path = CACHE,
                 log_dir: Path | None = None) -> None:
        index = read_index(cache)
        if not index:
            raise RuntimeError(f"no lab repository in {cache}: python vm-tests/lab/repo.py build")
        self.index = index
        self.cache = cache
        self.address = address
        self.http_port = http_port or registry.free_port(address)
        self.registry_port = registry_port or registry.free_port(address)
        self.log_dir = log_dir or cache / "logs"
        self._requests: list[Request] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._registry = registry.RegistryProcess(cache / index["registry"]["binary"], cache / "registry" / "storage",
                                                  address, self.registry_port, self.log_dir / "registry.log")

    # What a plan points at.
    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.http_port}/"

    @property
    def debian_url(self) -> str:
        return self.base_url + self.index["debian"]["path"]

    @property
    def kubernetes_url(self) -> str:
        return self.base_url + self.index["kubernetes"]["path"]

    @property
    def registry_url(self) -> str:
        return f"http://{self._registry.netloc}"

    @property
    def keyring(self) -> Path:
        return self.cache / self.index["key"]["keyring"]

    @property
    def armored_key(self) -> Path:
        return self.cache / self.index["key"]["armored"]

    def debian_source(self, keyring: str = "/etc/apt/keyrings/imagegen-lab.gpg") -> str:
        """The sources.list line a node needs for the lab's Debian repository, with the lab key (armoured_key,
        dearmored) at `keyring`."""
        debian = self.index["debian"]
        return f"deb [signed-by={keyring}] {self.debian_url} {debian['suite']} {debian['component']}"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / "http.log").write_text("")
        handler = type("LabHandler", (_Handler,), {"sink": self._requests, "log_file": self.log_dir / "http.log",
                                                   "lock": threading.Lock()})
        self._server = http.server.ThreadingHTTPServer(
            (self.address, self.http_port), functools.partial(handler, directory=str(self.cache / "www")))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="lab-repos-http", daemon=True)
        self._thread.start()
        try:
            self._registry.start()
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        self._registry.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> LabRepos:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def requests(self) -> list[Request]:
        reg = [Request("registry", r.method, r.path, r.status) for r in self._registry.requests()]
        return [*self._requests, *reg]

    def missing(self) -> list[Request]:
        """Requests for anything the lab does not hold (404): a node wanted a package, index or image it lacks."""
        return [r for r in self.requests() if r.status == 404]

    def describe(self) -> dict[str, str]:
        return {"debian": self.debian_url, "kubernetes": self.kubernetes_url, "registry": self.registry_url,
                "key": str(self.armored_key), "http_log": str(self.log_dir / "http.log"),
                "registry_log": str(self._registry.log)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build what is missing or stale (Debian's mirror is the only network used)")
    b.add_argument("--force", action="store_true", help="rebuild everything")
    b.add_argument("--bundle", type=Path, default=BUNDLE)
    s = sub.add_parser("serve", help="serve the repositories and the registry until Ctrl-C")
    s.add_argument("--address", default="127.0.0.1")
    s.add_argument("--http-port", type=int, default=8080)
    s.add_argument("--registry-port", type=int, default=5000)
    sub.add_parser("show", help="print index.json")
    args = p.parse_args(argv)
    if args.command == "build":
        t = time.monotonic()
        try:
            index = build(bundle=args.bundle, force=args.force)
        except RuntimeError as exc:
            print(f"lab-repo: {exc}", file=sys.stderr)
            return 2
        built = index.get("built_now") or ["nothing (up to date)"]
        _log(f"done in {time.monotonic() - t:.1f} s, built: {', '.join(built)}; {CACHE / 'index.json'}")
        return 0
    if args.command == "show":
        print(json.dumps(read_index(), indent=2))
        return 0
    with LabRepos(args.address, http_port=args.http_port, registry_port=args.registry_port) as lab:
        for k, v in lab.describe().items():
            print(f"{k:<13} {v}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        for r in lab.missing():
            print(f"404 {r.server} {r.method} {r.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
