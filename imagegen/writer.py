"""Putting rendered artefacts on disk: all or nothing.

Files are written into a temporary directory beside the output, then swapped in with renames, so a failure
never leaves a half-written output directory behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from imagegen.errors import UsageError
from imagegen.render import Artifact

MARKER = "manifest.json"


def check_output_dir(out: Path) -> None:
    """Refuse to replace a directory imagegen did not make (it would be deleted)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise UsageError(f"--out {out}: exists and is not an imagegen output (no {MARKER}); "
                         "choose a new or empty directory")


def write_tree(out: Path, artifacts: Mapping[str, Artifact]) -> None:
    out = Path(out)
    check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        for rel, artifact in sorted(artifacts.items()):
            path = tmp / rel
            if path.resolve().parent != (tmp / rel).parent.resolve() or ".." in Path(rel).parts:
                raise ValueError(f"refusing to write outside the output: {rel}")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, artifact.mode)
            try:
                os.write(fd, artifact.data)
            finally:
                os.close(fd)
            os.chmod(path, artifact.mode)  # not subject to the umask
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
