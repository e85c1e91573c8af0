"""Root filesystem from Debian's packages only, via mmdebstrap (plain debootstrap cannot resolve some virtuals)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import IO

from imagegen.image.proc import run
from imagegen.image.spec import ImageSpec


def build_rootfs(spec: ImageSpec, target: Path, *, customize: Path, staging: Path, bundle: Path | None,
                 log: IO[str], progress: Callable[[str], None]) -> None:
    """Create `target` (must not exist) as a directory tree; `customize` runs inside mmdebstrap as its last hook."""
    hook = " ".join(["sh", "-eu", shlex.quote(str(customize)), '"$1"', shlex.quote(str(staging)),
                     shlex.quote(str(bundle) if bundle else "")])
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        "--aptopt=Acquire::Retries \"3\"",
        # Recommends would pull in hundreds of MB (docker.io recommends git, xz, ...); what a node needs is listed.
        "--aptopt=APT::Install-Recommends \"false\"",
        "--include=" + ",".join(spec.packages),
        f"--customize-hook={hook}",
        spec.suite,
        str(target),
        spec.mirror,
    ]

    def relay(line: str) -> None:
        if line.startswith(("I: ", "E: ")):
            progress(line[3:])

    run(cmd, log, step="mmdebstrap", timeout=1800, progress=relay)


def kernel_files(rootfs: Path) -> tuple[Path, Path, str]:
    """(vmlinuz, initrd, release) of the single kernel installed in `rootfs`."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in {rootfs}/boot, found {[k.name for k in kernels]}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    return kernels[0], rootfs / "boot" / f"initrd.img-{release}", release


def module_index(rootfs: Path, release: str) -> tuple[str, str]:
    base = rootfs / "lib" / "modules" / release
    return (base / "modules.dep").read_text(), (base / "modules.builtin").read_text()
