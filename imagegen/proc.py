"""The door to other programs: argument lists only (never a shell), stdin closed unless input is given.

`capture` runs a program to completion and returns what it printed; `stream` hands each output line to a callback
while the program runs (image builds log minutes of mmdebstrap output as it happens). Both raise ProgramNotFound
(a FileNotFoundError) and ProcessTimeout (a TimeoutError) instead of subprocess's own exceptions, so callers need
not import subprocess. A non-zero exit is returned, not raised: each caller words its own failure.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ProgramNotFound(FileNotFoundError):
    """The program to run does not exist (not on PATH, or no such file)."""

    def __init__(self, program: str) -> None:
        super().__init__(f"{program}: not found")
        self.program = program


class ProcessTimeout(TimeoutError):
    """The program ran longer than its timeout and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(f"{argv[0]}: no result within {timeout:.0f} s")
        self.argv = tuple(argv)
        self.timeout = timeout


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str  # empty for `stream`, which merges stderr into stdout


def _argv(cmd: Sequence[str | Path]) -> list[str]:
    return [str(c) for c in cmd]


def capture(cmd: Sequence[str | Path], *, input_text: str | None = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> Completed:
    """Run `cmd` to completion; stdout and stderr are captured as text (undecodable bytes replaced)."""
    argv = _argv(cmd)
    try:
        done = subprocess.run(argv, input=input_text, stdin=None if input_text is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", env=env, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ProgramNotFound(argv[0]) from None
    except subprocess.TimeoutExpired:
        raise ProcessTimeout(argv, timeout or 0) from None
    return Completed(tuple(argv), done.returncode, done.stdout, done.stderr)


def stream(cmd: Sequence[str | Path], on_line: Callable[[str], None], *, input_text: str | None = None,
           timeout: float | None = None) -> Completed:
    """Run `cmd`, passing each line of its combined stdout and stderr (newline kept) to `on_line` as it comes.

    The one Popen outside a watched background process: `subprocess.run` would hold the output until the end.
    """
    argv = _argv(cmd)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError:
        raise ProgramNotFound(argv[0]) from None
    if input_text is not None and proc.stdin is not None:
        proc.stdin.write(input_text)
        proc.stdin.close()
    # A timer, not a check between lines: a hung program may print nothing at all.
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
            on_line(line)
        code = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if fired.is_set():
        raise ProcessTimeout(argv, timeout or 0)
    return Completed(tuple(argv), code, "".join(lines), "")
