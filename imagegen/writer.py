"""Putting rendered artefacts on disk: all or nothing, and never over what imagegen did not write.

Files are written into a temporary directory (0700) beside the output, then swapped in with renames, so a
failure never leaves a half-written output directory behind. A thread of its own creates them (`_FileWriter`), so
the kernel's work of creating files runs beside the render instead of between its nodes. An existing output is
replaced only when every file in it is one imagegen wrote: the marker file `.imagegen-output` names imagegen and
lists every file of the render (for outputs made before the marker existed, an imagegen manifest.json lists them).
"""

from __future__ import annotations

import errno
import json
import os
import queue
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from imagegen.errors import UsageError
from imagegen.filelock import locked
from imagegen.paths import check_creatable, make_dirs
from imagegen.render import Artifact

OUTPUT_MARKER = ".imagegen-output"
MARKER_NOTE = "written by imagegen render, which replaces this directory only while it holds just these files"
MANIFEST = "manifest.json"
DIR_MODE = 0o750  # every output directory, whatever the umask: no one else may add or replace a node's files
_LEGACY_TOP = {"admin.conf", MANIFEST, "nodes", "seeds"}
_MAX_JSON = 64 << 20


def _absolute(out: Path | str) -> Path:
    """--out as an absolute path without '.' or '..' ("--out ." names the current directory by its name)."""
    return Path(os.path.abspath(out))


def _tmp_prefix(out: Path) -> str:
    return f".{out.name}.imagegen-tmp-{os.getpid()}-"


def _old_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.imagegen-old-{os.getpid()}")


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.imagegen-lock")


def _list(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _io_error(out: Path, exc: OSError, doing: str) -> Exception:
    """Permission problems are the operator's to fix (exit 2); anything else (a full disk) is a failure."""
    where = f" ({exc.filename})" if exc.filename else ""
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return UsageError(f"--out {out}: cannot {doing}: {exc.strerror}{where}; make the directory writable "
                          "or choose another --out")
    return OSError(exc.errno, f"--out {out}: cannot {doing}: {exc.strerror}{where}")


def marker_bytes(paths: Iterable[str]) -> bytes:
    """The marker's content: imagegen's name and every file this render wrote (so the next render knows what
    it may delete, whatever the manifest lists)."""
    marker = {"generator": "imagegen", "note": MARKER_NOTE, "files": sorted(paths)}
    return (json.dumps(marker, indent=0) + "\n").encode()


def _read_json(path: Path) -> object:
    """A plain file's JSON, or None (missing, a link, too large, not JSON)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_JSON:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def _written_by_imagegen(out: Path) -> set[str]:
    """The paths (files and directories, relative) a previous render wrote into `out`: from its marker, or for
    an output made before the marker existed, from its imagegen manifest.json."""
    if os.path.lexists(out / OUTPUT_MARKER):
        marker = _read_json(out / OUTPUT_MARKER)
        if not (isinstance(marker, dict) and marker.get("generator") == "imagegen"
                and isinstance(marker.get("files"), list) and all(isinstance(p, str) for p in marker["files"])):
            raise UsageError(f"--out {out}: its {OUTPUT_MARKER} is not imagegen's (edited or corrupt), so imagegen "
                             "cannot tell which files it wrote; remove the directory yourself or choose another "
                             "--out")
        files = set(marker["files"])
    else:
        manifest = _read_json(out / MANIFEST)
        if not (isinstance(manifest, dict) and manifest.get("generator") == "imagegen"
                and isinstance(manifest.get("nodes"), list)):
            raise UsageError(f"--out {out}: exists and is not an imagegen output (no {OUTPUT_MARKER} or imagegen "
                             f"{MANIFEST}); choose a new or empty directory")
        files = {MANIFEST}
        listed = [manifest.get("files")] + [n.get("files") for n in manifest["nodes"] if isinstance(n, dict)]
        for group in listed:
            if isinstance(group, dict):
                files.update(p for p in group if isinstance(p, str))
    files.add(OUTPUT_MARKER)
    written = set(files)
    for p in files:
        written.update(str(parent) for parent in Path(p).parents if str(parent) != ".")
    return written


def _foreign_entries(out: Path, written: set[str]) -> list[str]:
    """Everything under `out` that imagegen did not write (links always count: imagegen writes none)."""
    foreign: list[str] = []

    def fail(exc: OSError) -> None:
        raise exc

    for dirpath, dirnames, filenames in os.walk(out, onerror=fail):
        here = Path(dirpath)
        if not os.access(here, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: {here} is not writable (read-only or immutable), so the previous output "
                             "cannot be removed; fix that or choose another --out")
        for name in sorted(dirnames):
            rel = (here / name).relative_to(out).as_posix()
            if rel not in written or (here / name).is_symlink():
                foreign.append(rel + "/")
                dirnames.remove(name)
        for name in sorted(filenames):
            rel = (here / name).relative_to(out).as_posix()
            if rel not in written or not stat.S_ISREG(os.lstat(here / name).st_mode):
                foreign.append(rel)
    return foreign


def check_output_dir(out: Path) -> None:
    """Refuse an --out that imagegen may not replace; writes nothing.

    Allowed: a new path (whose parent can be created and written), an empty directory, or an imagegen output
    holding only files imagegen wrote. Refused: a symbolic link (it would be replaced by a directory; pass the
    real path), a file, any other directory."""
    out = _absolute(out)
    try:
        if out.is_symlink():
            raise UsageError(f"--out {out}: is a symbolic link (to {os.readlink(out)}); imagegen replaces --out as "
                             "a whole and would replace the link, so pass the directory itself")
        if not out.exists():
            _check_creatable(out)
            return
        if not out.is_dir():
            raise UsageError(f"--out {out}: is a file, not a directory; choose a new or empty directory")
        if out.resolve() == out.resolve().parent:
            raise UsageError(f"--out {out}: is the root directory; choose a new or empty directory")
        if not os.access(out.parent, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out}: its parent {out.parent} is not writable by you, so the output cannot "
                             "be replaced; fix the permissions or choose another --out")
        if not any(out.iterdir()):
            return
        written = _written_by_imagegen(out)
        foreign = _foreign_entries(out, written)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot be read ({exc.strerror}: {exc.filename}); fix its permissions or "
                         "choose another --out") from exc
    if foreign:
        many = len(foreign) > 1
        raise UsageError(f"--out {out}: holds {len(foreign)} file{'s' if many else ''} imagegen did not write "
                         f"({_list(foreign)}), which replacing it would delete; move {'them' if many else 'it'} "
                         "elsewhere or choose another --out")


def _check_creatable(out: Path) -> None:
    check_creatable(out, "--out")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_separate(out: Path, *, state_dir: Path, plan_file: Path) -> None:
    """Refuse when replacing --out would delete the state or the plan, or --out would land in the state.

    Compared as resolved paths (links followed); --out as the path that would be replaced."""
    absolute = _absolute(out)
    out_r = Path(os.path.realpath(absolute.parent)) / absolute.name
    state_r = Path(os.path.realpath(state_dir))
    plan_r = Path(os.path.realpath(plan_file))
    if out_r == state_r:
        raise UsageError(f"--out {out} and --state {state_dir} are the same directory; the output is replaced as a "
                         "whole and would delete the cluster's CA keys: give them separate directories")
    if _inside(state_r, out_r):
        raise UsageError(f"--state {state_dir}: lies inside --out {out}, which render replaces as a whole (the "
                         "cluster's CA keys would be deleted); keep the state directory outside the output")
    if _inside(out_r, state_r):
        raise UsageError(f"--out {out}: lies inside --state {state_dir}; keep the output outside the state "
                         "directory")
    if plan_r == out_r:
        raise UsageError(f"--out {out}: is the plan file; choose a new or empty directory for the output")
    if _inside(plan_r, out_r):
        raise UsageError(f"plan {plan_file}: lies inside --out {out}, which render replaces as a whole; keep the "
                         "plan outside the output directory")


def _make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    make_dirs(path, mode)


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.imagegen-(?:tmp|old)-(?P<pid>\d+)(?:-.*)?\Z")
_LEGACY_OLD = re.compile(r"\.(?P<name>.+)\.old-(?P<pid>\d+)\Z")
_LEGACY_TMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\Z")  # tempfile.mkdtemp's names, before imagegen-tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(out: Path) -> list[Path]:
    """Delete what interrupted renders of this --out left beside it; call only while holding the output lock
    (no other render of it is running then). Older imagegen's leftovers go when their PID is dead and their
    content is an output's."""
    removed: list[Path] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        ours = _LEFTOVER.fullmatch(name)
        legacy = _LEGACY_OLD.fullmatch(name) or _LEGACY_TMP.fullmatch(name)
        match = ours or legacy
        if match is None or match["name"] != out.name:
            continue
        try:
            st = os.lstat(entry)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if not ours:
            pid = match.groupdict().get("pid")
            if pid is not None and _pid_alive(int(pid)):
                continue
            try:
                if not {p.name for p in entry.iterdir()} <= _LEGACY_TOP:
                    continue
            except OSError:
                continue
        shutil.rmtree(entry, ignore_errors=True)
        if not os.path.lexists(entry):
            removed.append(entry)
    return removed


@contextmanager
def locked_output(out: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[list[Path]]:
    """Hold the lock of --out (a file beside it, removed afterwards) for the block; yields the leftovers of
    interrupted renders it removed."""
    out = _absolute(out)
    try:
        _make_dirs(out.parent)
    except OSError as exc:
        raise _io_error(out, exc, "create its parent directory") from exc
    with locked(lock_path(out), f"--out {out}", remove=True, on_wait=on_wait):
        yield remove_leftovers(out)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Delay SIGINT/SIGTERM across the swap, so an interruption never leaves --out missing."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _write_file(path: Path, artifact: Artifact) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, artifact.mode)
    try:
        view = memoryview(artifact.data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, artifact.mode)  # not subject to the umask
    finally:
        os.close(fd)


_IN_FLIGHT = 32  # files handed to the writer thread and not written yet: about three nodes' worth


class _FileWriter:
    """Writes the files of the temporary tree on a thread of its own. Creating a file is mostly the kernel's work
    (os.open, os.write and os.close release the GIL), so it runs on one core while the render runs on another.

    The queue is bounded: the render runs at most `in_flight` files ahead of the disk, so memory stays flat
    whatever the cluster's size. The first error stops the writing (later files are dropped, not written) and is
    raised in the caller's thread by the next `put` or on leaving the `with` block. The thread starts with the
    first file, so a render that forks worker processes (render.iter_render) does so before it exists. SIGINT
    and SIGTERM are blocked on it: they reach the main thread, where Python runs their handlers."""

    def __init__(self, root: Path, in_flight: int = _IN_FLIGHT) -> None:
        self._queue: queue.Queue[tuple[Path, Artifact] | None] = queue.Queue(maxsize=in_flight)
        self._made = {root}  # directories of the tree made so far: one stat less per file
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="imagegen-writer", daemon=True)

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        while (item := self._queue.get()) is not None:
            if self._error is not None or self._stopped:
                continue  # keep taking files, so a caller waiting in put() goes on to see the error
            path, artifact = item
            try:
                if path.parent not in self._made:
                    _make_dirs(path.parent)
                    self._made.add(path.parent)
                _write_file(path, artifact)
            except BaseException as exc:  # raised again in the caller's thread
                self._error = exc

    def put(self, path: Path, artifact: Artifact) -> None:
        """Hand over one file (waits while `in_flight` files are waiting); raises the writer's first error."""
        if self._error is not None:
            raise self._error
        if self._thread.ident is None:
            self._thread.start()
        self._queue.put((path, artifact))

    def __enter__(self) -> _FileWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
                 ) -> None:
        """Leaving the block normally: wait until every file handed over is written, and raise the writer's first
        error. On an error: drop what is not written yet. Either way the thread has ended when this returns, so
        nothing is written into the tree after the block."""
        if exc is not None:
            self._stopped = True
        try:
            self._end()
        except BaseException:  # interrupted while waiting (a signal): drop the rest, the thread must end first
            self._stopped = True
            self._end()
            raise
        if exc is None and self._error is not None:
            raise self._error

    def _end(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)  # a second one, after an interrupted wait, stays in the queue unread
            self._thread.join()


def _check_relative(rel: str) -> None:
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts or rel == OUTPUT_MARKER:
        raise ValueError(f"refusing to write outside the output: {rel}")


def write_tree(out: Path, artifacts: Mapping[str, Artifact] | Iterable[tuple[str, Artifact]]) -> None:
    """Replace `out` by exactly `artifacts` plus the marker. Hold `locked_output(out)` around it when other
    renders of the same --out may run. `artifacts` may be a stream of (path, artefact) pairs
    (render.iter_render): each is written as it comes and dropped, so memory stays flat whatever the cluster's
    size; a bad path or a failure midway removes the temporary directory and leaves `out` as it was."""
    out = _absolute(out)
    check_output_dir(out)
    if isinstance(artifacts, Mapping):
        for rel in artifacts:
            _check_relative(rel)
        items: Iterable[tuple[str, Artifact]] = sorted(artifacts.items())
    else:
        items = artifacts
    try:
        _make_dirs(out.parent)
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out), dir=out.parent))  # 0700 until complete
    except OSError as exc:
        raise _io_error(out, exc, "create a temporary directory beside it") from exc
    try:
        try:
            written: list[str] = []
            with _FileWriter(tmp) as writer:
                for rel, artifact in items:
                    _check_relative(rel)
                    writer.put(tmp / rel, artifact)
                    written.append(rel)
            _write_file(tmp / OUTPUT_MARKER, Artifact(marker_bytes(written), 0o644))
            os.chmod(tmp, DIR_MODE)
        except OSError as exc:
            raise _io_error(out, exc, "write the new output") from exc
        old = None
        swapped = False
        try:
            with _signals_held():  # a signal held here is raised on leaving the block, after the swap
                try:
                    if out.exists():
                        old = _old_path(out)
                        os.rename(out, old)
                    try:
                        os.rename(tmp, out)
                    except BaseException:
                        if old is not None:
                            os.rename(old, out)
                        raise
                    swapped = True
                except OSError as exc:
                    raise _io_error(out, exc, "replace it") from exc
        finally:
            if swapped and old is not None:
                shutil.rmtree(old, ignore_errors=True)  # what remains goes with the next run's leftovers
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
