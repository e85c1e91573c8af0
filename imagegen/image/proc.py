"""The one place the image builder runs programs: every command and its output go to the build log."""

from __future__ import annotations

import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO


class BuildError(Exception):
    """A build step failed; the message names the step and the tail of its output, the log has the rest."""


def run(cmd: Sequence[str | Path], log: IO[str], *, step: str, input_text: str | None = None,
        timeout: float | None = None, progress: Callable[[str], None] | None = None) -> str:
    """Run `cmd`, stream its combined output into `log` (and each line to `progress`), return the output.

    Raises BuildError naming `step` on a non-zero exit, a missing program or a timeout.
    """
    argv = [str(c) for c in cmd]
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError:
        raise BuildError(f"{step}: {argv[0]} is not installed (apt-get install the package providing it)") from None
    if input_text is not None and proc.stdin is not None:
        proc.stdin.write(input_text)
        proc.stdin.close()
    # A timer, not a check between lines: a hung step may print nothing at all.
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire) if timeout is not None else None
    if timer is not None:
        timer.start()
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            log.write(line)
            if progress is not None:
                progress(line.rstrip("\n"))
        code = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.flush()
    if fired.is_set():
        raise BuildError(f"{step}: timed out after {timeout:.0f} s; see the build log")
    if code != 0:
        tail = "".join(lines[-15:]).rstrip()
        raise BuildError(f"{step}: {argv[0]} exited with {code}:\n{tail}")
    return "".join(lines)
