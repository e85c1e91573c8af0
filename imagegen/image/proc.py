"""How the image builder runs programs (through imagegen.proc): every command and its output go to the build log,
and a failure is a BuildError naming the step."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from imagegen.proc import ProcessTimeout, ProgramNotFound, capture, stream


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

    def on_line(line: str) -> None:
        log.write(line)
        if progress is not None:
            progress(line.rstrip("\n"))

    try:
        done = stream(argv, on_line, input_text=input_text, timeout=timeout)
    except ProgramNotFound:
        raise BuildError(f"{step}: {argv[0]} is not installed (apt-get install the package providing it)") from None
    except ProcessTimeout:
        raise BuildError(f"{step}: timed out after {timeout:.0f} s; see the build log") from None
    finally:
        log.flush()
    if done.returncode != 0:
        tail = "".join(done.stdout.splitlines(keepends=True)[-15:]).rstrip()
        raise BuildError(f"{step}: {argv[0]} exited with {done.returncode}:\n{tail}")
    return done.stdout


def query(cmd: Sequence[str | Path], *, step: str, timeout: float | None = None) -> str:
    """Run a short command whose output is the answer (qemu-img info); no build log involved."""
    try:
        done = capture(cmd, timeout=timeout)
    except ProgramNotFound as exc:
        raise BuildError(f"{step}: {exc.program} is not installed (apt-get install the package providing it)") \
            from None
    except ProcessTimeout:
        raise BuildError(f"{step}: timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BuildError(f"{step}: {done.argv[0]} exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout
