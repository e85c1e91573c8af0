"""Shared helpers for building the offline test bundle on this machine.

Every subprocess goes through `BuildLog.run` so its output lands in one log file and the
console only shows progress lines; a failure raises with the tail of that output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("IMAGEGEN_CACHE", Path.home() / ".cache" / "imagegen"))
DEB_SRC_FILE = Path("/etc/apt/sources.list.d/imagegen-deb-src.sources")
# One deb-src stanza for bookworm main is all `apt-get source kubernetes` needs.
DEB_SRC_STANZA = """\
# Added by imagegen vm-tests/bundle: Kubernetes is built from Debian's source package.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


class BuildError(RuntimeError):
    """A build step failed; the message names the step and points at the log."""


class BuildLog:
    """Appends command output to a log file and prints short progress lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def note(self, message: str) -> None:
        line = f"[bundle] {message}"
        print(line, flush=True)
        with self.path.open("a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.note(f"{title} ...")
        start = time.monotonic()
        yield
        self.note(f"{title}: done in {time.monotonic() - start:.0f} s")

    def run(
        self,
        cmd: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        capture: bool = False,
    ) -> str:
        """Run cmd; output goes to the log (or is returned when capture=True)."""
        args = [str(c) for c in cmd]
        with self.path.open("a") as fh:
            fh.write(f"$ {' '.join(args)}\n")
            fh.flush()
            proc = subprocess.run(
                args,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdout=subprocess.PIPE if capture else fh,
                stderr=fh,
                text=True,
                check=False,
            )
        if proc.returncode != 0:
            raise BuildError(
                f"command failed (exit {proc.returncode}): {' '.join(args)}\n"
                f"--- last lines of {self.path} ---\n{tail(self.path)}"
            )
        return proc.stdout if capture else ""


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def digest_of(obj: object) -> str:
    """Stable short hash of a JSON-able object (cache keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- apt (host package manager) -------------------------------------------------------------

def _apt_env() -> dict[str, str]:
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def apt_retry(log: BuildLog, cmd: Sequence[str], attempts: int = 30) -> None:
    """Other agents share dpkg on this machine: wait for the lock instead of failing."""
    for attempt in range(attempts):
        try:
            log.run(["apt-get", "-o", "DPkg::Lock::Timeout=120", *cmd], env=_apt_env())
            return
        except BuildError:
            if attempt == attempts - 1:
                raise
            log.note(f"apt-get {cmd[0]} failed (lock busy?), retrying in 10 s")
            time.sleep(10)


def ensure_deb_src(log: BuildLog) -> None:
    probe = subprocess.run(
        ["apt-cache", "showsrc", "kubernetes"], capture_output=True, text=True, check=False
    )
    if probe.returncode == 0 and "Package: kubernetes" in probe.stdout:
        return
    log.note(f"adding deb-src for bookworm in {DEB_SRC_FILE}")
    DEB_SRC_FILE.write_text(DEB_SRC_STANZA)
    apt_retry(log, ["update", "-q"])


def installed_version(package: str) -> str | None:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status} ${Version}", package],
        capture_output=True, text=True, check=False,
    )
    parts = proc.stdout.split()
    if proc.returncode == 0 and parts[:3] == ["install", "ok", "installed"]:
        return parts[3]
    return None


def ensure_packages(log: BuildLog, packages: Sequence[str]) -> None:
    missing = [p for p in packages if installed_version(p) is None]
    if missing:
        log.note(f"apt-get install {' '.join(missing)}")
        apt_retry(log, ["install", "-y", "-q", "--no-install-recommends", *missing])


def source_version(package: str) -> str:
    """Highest version of a source package apt knows (several stanzas when suites overlap)."""
    out = subprocess.run(
        ["apt-cache", "showsrc", package], capture_output=True, text=True, check=True
    ).stdout
    versions = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Version:")]
    if not versions:
        raise BuildError(f"apt knows no source package {package}: is there a deb-src line?")
    best = versions[0]
    for v in versions[1:]:
        if subprocess.run(["dpkg", "--compare-versions", v, "gt", best], check=False).returncode == 0:
            best = v
    return best


def extract_debs(log: BuildLog, packages: Sequence[str], dest: Path) -> dict[str, str]:
    """apt-get download + dpkg -x: files of a package without installing it on the host.

    Installing etcd-server here would try to start an etcd; extracting is side-effect free.
    Returns {package: version}.
    """
    dest.mkdir(parents=True, exist_ok=True)
    debs = dest / "debs"
    root = dest / "root"
    if debs.exists():
        shutil.rmtree(debs)
    debs.mkdir()
    for attempt in range(3):
        try:
            log.run(["apt-get", "download", "-q", *packages], cwd=debs)
            break
        except BuildError:
            if attempt == 2:
                raise
            time.sleep(5)
    versions: dict[str, str] = {}
    for deb in sorted(debs.glob("*.deb")):
        name, version = log.run(
            ["dpkg-deb", "-f", deb, "Package", "Version"], capture=True
        ).split("\n")[:2]
        versions[name.split(":", 1)[1].strip()] = version.split(":", 1)[1].strip()
        log.run(["dpkg-deb", "-x", deb, root])
    return versions
