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


def check_creatable(path: Path, flag: str) -> None:
    """Refuse (UsageError naming `flag`) a path whose nearest existing parent is a file or not writable."""
    from imagegen.errors import UsageError

    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is a file, not a directory; choose another {flag}")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{flag} {path}: cannot be created, {parent} is not writable by you; choose "
                                 f"another {flag} or fix the permissions")
            return
