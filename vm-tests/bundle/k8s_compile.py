"""Compile Kubernetes v1.20.2 from Debian bookworm's `kubernetes` source package.

Cached under ~/.cache/imagegen/k8s-build/<key>/ where key covers the source package version,
the Go toolchain and this file, so rebuilding images never recompiles. The recipe follows
what was measured to work here (see /work/shared/notes/environment.md): GOPATH mode,
`make generated_files`, Debian's reflect2 1.0.2 instead of the vendored 1.0.1, version ldflags.

Run alone: `python vm-tests/bundle/k8s_compile.py [--force]` (prints the bin directory).
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

from buildlib import (
    CACHE_ROOT,
    BuildError,
    BuildLog,
    digest_of,
    ensure_deb_src,
    ensure_packages,
    installed_version,
    source_version,
)

KUBE_VERSION = "v1.20.2"
# Upstream's v1.20.2 release date: a fixed buildDate keeps binaries reproducible.
BUILD_DATE = "2021-01-13T13:20:00Z"
BINARIES = (
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
)
BUILD_DEPS = (
    "golang-go",
    "golang-github-modern-go-reflect2-dev",
    "dpkg-dev",  # apt-get source unpacks with dpkg-source
    "make",
    "rsync",
    "jq",
    "gcc",
    "libc6-dev",
)
RECIPE_REVISION = 1
REFLECT2_SRC = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")


@dataclass(frozen=True)
class CompiledKubernetes:
    key: str
    bin_dir: Path  # the seven binaries above plus `pause`
    source_version: str
    go_version: str
    seconds: float  # how long the compile took when it ran (also reported on cache hits)
    cached: bool


def version_ldflags() -> str:
    # Both packages carry version info: component-base for servers/kubeadm, client-go for kubectl.
    parts = ["-s", "-w", "-buildid="]
    values = {
        "gitVersion": KUBE_VERSION,
        "gitMajor": "1",
        "gitMinor": "20",
        "gitTreeState": "clean",
        "buildDate": BUILD_DATE,
    }
    for pkg in ("component-base/version", "client-go/pkg/version"):
        for name, value in values.items():
            parts.append(f"-X k8s.io/kubernetes/vendor/k8s.io/{pkg}.{name}={value}")
    return " ".join(parts)


def compile_inputs() -> dict[str, str]:
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout.strip()
    return {
        "source_version": source_version("kubernetes"),
        "go": go,
        "reflect2": installed_version("golang-github-modern-go-reflect2-dev") or "missing",
        # The recipe is named by its parameters, not this file's bytes, so editing a comment
        # here does not throw away a 6-minute compile. Bump RECIPE_REVISION on other changes.
        "recipe": f"r{RECIPE_REVISION} {version_ldflags()} {' '.join(BINARIES)}",
    }


def compile_kubernetes(force: bool = False, log: BuildLog | None = None) -> CompiledKubernetes:
    root = CACHE_ROOT / "k8s-build"
    bootstrap_log = log or BuildLog(root / "prepare.log")
    ensure_deb_src(bootstrap_log)
    ensure_packages(bootstrap_log, BUILD_DEPS)
    inputs = compile_inputs()
    key = digest_of(inputs)
    work = root / key
    done = work / "DONE.json"
    if done.exists() and not force:
        info = json.loads(done.read_text())
        return CompiledKubernetes(
            key, work / "bin", inputs["source_version"], inputs["go"], info["seconds"], cached=True
        )
    # A partial earlier attempt is discarded: only a DONE marker makes a build trusted.
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = BuildLog(work / "compile.log")
    log.note(f"compiling Kubernetes {KUBE_VERSION} from Debian source {inputs['source_version']} "
             f"in {work} (log: {log.path})")
    start = time.monotonic()

    with log.step("apt-get source kubernetes"):
        srcdir = work / "src"
        srcdir.mkdir()
        log.run(["apt-get", "source", "-q", f"kubernetes={inputs['source_version']}"], cwd=srcdir)
        trees = [p for p in srcdir.iterdir() if p.is_dir()]
        if len(trees) != 1:
            raise BuildError(f"expected one unpacked tree in {srcdir}, found {trees}")
        tree = trees[0]

    gopath = work / "gopath"
    (gopath / "src" / "k8s.io").mkdir(parents=True)
    link = gopath / "src" / "k8s.io" / "kubernetes"
    link.symlink_to(os.path.relpath(tree, link.parent))
    env = {
        **os.environ,
        "GOPATH": str(gopath),
        "GO111MODULE": "off",  # upstream 1.20 builds in GOPATH mode; -mod=vendor fails on go1.19
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
        "GOCACHE": str(CACHE_ROOT / "go-build-cache"),
        "HOME": str(work),  # the Makefile writes under $HOME/.cache otherwise
        "SOURCE_DATE_EPOCH": "1610544000",
        # go resolves vendor/ from the working directory's GOPATH import path; it trusts $PWD
        # for that, and a chdir through the symlink alone would report the real path.
        "PWD": str(link),
    }

    # Vendored reflect2 1.0.1 segfaults at run time on go >= 1.18 (JSON-encoding maps).
    vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
    shutil.rmtree(vendored)
    shutil.copytree(REFLECT2_SRC, vendored, symlinks=False)

    with log.step("make generated_files"):
        log.run(["make", "generated_files"], cwd=link, env=env)

    bindir = work / "bin"
    bindir.mkdir()
    for name in BINARIES:
        with log.step(f"go build {name}"):
            log.run(
                ["go", "build", "-p", "2", "-trimpath", "-ldflags", version_ldflags(),
                 "-o", bindir / name, f"./cmd/{name}"],
                cwd=link, env=env,
            )

    with log.step("gcc pause"):
        log.run(["gcc", "-Os", "-static", "-Wall",
                 "-DVERSION=v3.2", "-o", bindir / "pause",
                 tree / "build" / "pause" / "linux" / "pause.c"])
        log.run(["strip", bindir / "pause"])

    seconds = round(time.monotonic() - start, 1)
    done.write_text(json.dumps({**inputs, "seconds": seconds}, indent=2) + "\n")
    log.note(f"compile finished in {seconds:.0f} s")
    return CompiledKubernetes(key, bindir, inputs["source_version"], inputs["go"], seconds, cached=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="recompile even if cached")
    args = parser.parse_args()
    try:
        result = compile_kubernetes(force=args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.bin_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
