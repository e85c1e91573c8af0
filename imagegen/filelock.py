"""Advisory locks (flock) that serialise renders on one output directory and on one state directory."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from imagegen.errors import UsageError


@contextmanager
def locked(path: Path, what: str, *, remove: bool = False,
           on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created 0600) for the duration of the block.

    `what` names the locked thing in messages ("--out /x"). With `remove`, the lock file is deleted on release;
    a waiter that then holds a lock on the deleted file notices (the path no longer names its file) and retries,
    so two processes never both believe they hold the lock.
    """
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise UsageError(f"{what}: cannot create the lock file {path} ({exc.strerror}); "
                             "check that the directory is writable by you") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait(f"{what}: waiting for another imagegen to finish with it")
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # the previous holder removed the file we locked: lock the one there now
    try:
        yield
    finally:
        try:
            if remove:
                with suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            os.close(fd)
