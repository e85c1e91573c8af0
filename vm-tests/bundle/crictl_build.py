"""crictl for the test bundle: built from upstream cri-tools source with Debian's Go, or taken as given.

kubeadm's preflight with a containerd criSocket hard-fails without crictl, and Debian bookworm has no
cri-tools package. ../shared/third-party/cri-tools-1.25.0.tar.gz is upstream v1.25.0 with its Go modules
vendored (see that directory's README); `go build -mod=vendor ./cmd/crictl` with bookworm's Go 1.19 builds it
offline in about a minute. The result is cached under ~/.cache/imagegen/crictl-build/<key>/ where the key
covers the tarball's sha256, the Go toolchain and the recipe, like the Kubernetes compile.

Run alone: `python vm-tests/bundle/crictl_build.py [--force]` (prints the binary's path).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from buildlib import CACHE_ROOT, BuildError, BuildLog, digest_of, ensure_packages, file_sha256

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CRI_TOOLS_VERSION = "1.25.0"
# The checkout sits beside the shared notes: /work/main -> /work/shared/third-party.
DEFAULT_SOURCE = REPO.parent / "shared" / "third-party" / f"cri-tools-{CRI_TOOLS_VERSION}.tar.gz"
SOURCE_SHA256 = "7facfa692da6100dedfa5d840dc354155ee8c11e54a20b8bd63a6106f1da5f81"
MODULE = "github.com/kubernetes-sigs/cri-tools"  # what upstream's Makefile passes -X to
RECIPE_REVISION = 1


@dataclass(frozen=True)
class Crictl:
    path: Path
    version: str  # what `crictl --version` printed
    origin: str  # "built from <tarball> (<key>)" or "given: <path>"
    seconds: float
    cached: bool


def ldflags() -> str:
    return f"-s -w -buildid= -X {MODULE}/pkg/version.Version={CRI_TOOLS_VERSION}"


def crictl_version(binary: Path) -> str:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    out = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or not out.startswith("crictl version"):
        raise BuildError(f"{binary} --version gave exit {done.returncode}: {out[:200]}")
    return out


def is_static(binary: Path) -> bool:
    headers = subprocess.run(["readelf", "-l", str(binary)], capture_output=True, text=True, check=True).stdout
    return "INTERP" not in headers


def given_crictl(path: Path) -> Crictl:
    """A crictl the user passes (make bundle CRICTL=...): a release binary or their own build."""
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BuildError(f"CRICTL={path}: not an executable file")
    return Crictl(path.resolve(), crictl_version(path), f"given: {path.resolve()}", 0.0, cached=True)


def build_crictl(source: Path = DEFAULT_SOURCE, force: bool = False, log: BuildLog | None = None) -> Crictl:
    root = CACHE_ROOT / "crictl-build"
    prep = log or BuildLog(root / "prepare.log")
    if not source.is_file():
        raise BuildError(f"cri-tools source {source} not found; pass a crictl binary instead "
                         f"(make bundle CRICTL=/path/to/crictl)")
    ensure_packages(prep, ("golang-go", "binutils"))
    source_sha = file_sha256(source)
    if source.resolve() == DEFAULT_SOURCE.resolve() and source_sha != SOURCE_SHA256:
        raise BuildError(f"{source}: sha256 {source_sha} is not the recorded {SOURCE_SHA256}")
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout.strip()
    inputs = {"source_sha256": source_sha, "go": go, "recipe": f"r{RECIPE_REVISION} {ldflags()}"}
    key = digest_of(inputs)
    work = root / key
    binary = work / "crictl"
    done = work / "DONE.json"
    if done.exists() and binary.exists() and not force:
        info = json.loads(done.read_text())
        return Crictl(binary, info["version"], f"built from {source.name} ({key})", info["seconds"], cached=True)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    blog = BuildLog(work / "build.log")
    start = time.monotonic()
    with blog.step(f"build crictl {CRI_TOOLS_VERSION} from {source.name} (go build -mod=vendor)"):
        src = work / "src"
        src.mkdir()
        blog.run(["tar", "-xzf", source, "-C", src, "--strip-components=1", "--no-same-owner"])
        env = {
            **os.environ,
            "GO111MODULE": "on",
            "GOFLAGS": "-mod=vendor",
            "GOPROXY": "off",  # everything is vendored: never reach for the network
            "CGO_ENABLED": "0",
            "GOCACHE": str(CACHE_ROOT / "go-build-cache"),
            "GOPATH": str(work / "gopath"),
            "HOME": str(work),
        }
        blog.run(["go", "build", "-p", "2", "-trimpath", "-ldflags", ldflags(), "-o", binary, "./cmd/crictl"],
                 cwd=src, env=env)
    version = crictl_version(binary)
    if CRI_TOOLS_VERSION not in version:
        raise BuildError(f"built crictl reports {version!r}, expected {CRI_TOOLS_VERSION}")
    if not is_static(binary):
        raise BuildError(f"built crictl {binary} is not static")
    shutil.rmtree(src)
    shutil.rmtree(work / "gopath", ignore_errors=True)
    seconds = round(time.monotonic() - start, 1)
    done.write_text(json.dumps({**inputs, "version": version, "seconds": seconds}, indent=2) + "\n")
    blog.note(f"crictl built in {seconds:.0f} s: {version}")
    return Crictl(binary, version, f"built from {source.name} ({key})", seconds, cached=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="cri-tools source tarball")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args()
    try:
        result = build_crictl(args.source, force=args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
