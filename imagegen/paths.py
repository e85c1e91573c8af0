"""Directory creation shared by the writer (output, 0750) and the state (0700)."""

from __future__ import annotations

import os
from pathlib import Path


def make_dirs(path: Path, mode: int) -> None:
    """Create `path` and its missing parents with `mode`, whatever the umask (mkdir's mode is masked by it)."""
    missing = []
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(p, mode)
