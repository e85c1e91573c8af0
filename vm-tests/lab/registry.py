"""The lab's container registry: Debian's docker-registry (distribution 2.8), unpacked from its .deb into the
cache and run from there (never installed), with its storage in the cache, filled once with the bundle's images by
`skopeo copy docker-archive:… docker://…`.

Where an image lands: its name without the registry host, as a mirror of that registry is asked for it
(containerd asks a mirror of k8s.gcr.io for /v2/kube-apiserver/manifests/v1.20.2; Docker Hub names gain
`library/`). So one registry mirrors k8s.gcr.io, docker.io and imagegen.local at once.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lab.aptroot import PrivateApt

REGISTRY_PACKAGE = "docker-registry"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def mirror_path(reference: str) -> str:
    """`k8s.gcr.io/kube-apiserver:v1.20.2` -> `kube-apiserver:v1.20.2`; `busybox:1` -> `library/busybox:1`."""
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return rest
    return reference if "/" in reference else f"library/{reference}"


def fetch_registry(apt: PrivateApt, dest: Path) -> Path:
    """`apt-get download docker-registry` + `dpkg -x`: the registry binary under `dest`."""
    binary = dest / "root" / "usr/bin/docker-registry"
    if binary.is_file():
        return binary
    debs = dest / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    apt.run("download", REGISTRY_PACKAGE, cwd=debs)
    deb = sorted(debs.glob(f"{REGISTRY_PACKAGE}_*.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest / "root")], check=True, capture_output=True)
    return binary


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RegistryRequest:
    method: str
    path: str
    status: int


class RegistryProcess:
    """One docker-registry serving `storage` on address:port, its output (access log included) in `log`."""

    def __init__(self, binary: Path, storage: Path, address: str, port: int, log: Path) -> None:
        self.binary, self.storage, self.address, self.port, self.log = binary, storage, address, port, log
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def netloc(self) -> str:
        return f"{self.address}:{self.port}"

    def config_text(self) -> str:
        return "\n".join([
            "version: 0.1",
            "log: {level: info, formatter: text, accesslog: {disabled: false}}",
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}, delete: {{enabled: false}}}}",
            f"http: {{addr: '{self.netloc}', headers: {{X-Content-Type-Options: [nosniff]}}}}",
            "",
        ])

    def start(self, timeout: float = 30) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.log.with_suffix(".yml")
        config.write_text(self.config_text())
        self._out = self.log.open("wb")  # one log per start: requests() and the lab's 404s are this run's
        self._proc = subprocess.Popen([str(self.binary), "serve", str(config)], stdout=self._out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self._proc.returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(f"http://{self.netloc}/v2/", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"docker-registry on {self.netloc} did not answer /v2/ within {timeout} s: see {self.log}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def requests(self) -> list[RegistryRequest]:
        """The access log's requests (combined log format lines)."""
        if not self.log.is_file():
            return []
        return [RegistryRequest(m["method"], m["path"], int(m["status"]))
                for m in map(_ACCESS.search, self.log.read_text(errors="replace").splitlines()) if m]


def push_archive(archive: Path, tag: str, netloc: str, *, as_name: str = "") -> str:
    """One tag of a docker-archive into the registry (under `as_name`'s mirror path, default the tag's);
    returns the reference it got there."""
    dest = f"{netloc}/{mirror_path(as_name or tag)}"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                    f"docker-archive:{archive}:{tag}", f"docker://{dest}"], check=True, capture_output=True,
                   text=True)
    return dest
