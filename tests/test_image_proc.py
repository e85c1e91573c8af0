"""imagegen.proc is the door to other programs; imagegen.image.proc.run puts what it runs into the build log."""

from __future__ import annotations

import io
import re
import sys
import time

import pytest

from imagegen.image.proc import BuildError, query, run
from imagegen.proc import ProcessTimeout, ProgramNotFound, capture, stream

from .conftest import ROOT

PY = sys.executable


def test_capture_returns_output_and_exit_code_without_raising() -> None:
    done = capture([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert done.argv[0] == PY


def test_capture_closes_stdin_or_feeds_input_and_passes_env() -> None:
    assert capture([PY, "-c", "import sys; print(repr(sys.stdin.read()))"]).stdout == "''\n"
    assert capture([PY, "-c", "import sys; print(sys.stdin.read().upper())"], input_text="abc").stdout == "ABC\n"
    done = capture([PY, "-c", "import os; print(os.environ['IMAGEGEN_X'])"], env={"IMAGEGEN_X": "42"})
    assert done.stdout == "42\n"


def test_missing_program_and_timeout_are_imagegen_exceptions() -> None:
    with pytest.raises(ProgramNotFound) as missing:
        capture(["/nonexistent/imagegen-no-such-program"])
    assert isinstance(missing.value, FileNotFoundError)
    started = time.monotonic()
    with pytest.raises(ProcessTimeout) as late:
        capture([PY, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert isinstance(late.value, TimeoutError) and time.monotonic() - started < 20
    with pytest.raises(ProcessTimeout):
        stream([PY, "-c", "import time; time.sleep(30)"], lambda _line: None, timeout=0.5)


def test_stream_hands_over_each_line_as_it_comes() -> None:
    seen: list[str] = []
    done = stream([PY, "-c", "import sys; print('a'); print('b', file=sys.stderr, flush=True)"], seen.append)
    assert sorted(seen) == ["a\n", "b\n"] and done.returncode == 0 and sorted(done.stdout) == sorted("a\nb\n")


def test_run_logs_the_command_and_its_output() -> None:
    log = io.StringIO()
    progress: list[str] = []
    out = run([PY, "-c", "print('one'); print('two')"], log, step="demo", progress=progress.append)
    assert out == "one\ntwo\n" and progress == ["one", "two"]
    assert log.getvalue().startswith("$ ") and log.getvalue().endswith("one\ntwo\n")


def test_run_failures_name_the_step() -> None:
    log = io.StringIO()
    with pytest.raises(BuildError, match=r"^demo: .* exited with 4:\n(.|\n)*line 19$"):
        run([PY, "-c", "import sys; [print('line', i) for i in range(20)]; sys.exit(4)"], log, step="demo")
    with pytest.raises(BuildError, match="demo: /nonexistent/x is not installed"):
        run(["/nonexistent/x"], log, step="demo")
    with pytest.raises(BuildError, match="demo: timed out after 1 s"):
        run([PY, "-c", "import time; time.sleep(30)"], log, step="demo", timeout=1)
    with pytest.raises(BuildError, match="info: .* exited with 2: nope"):
        query([PY, "-c", "import sys; print('nope', file=sys.stderr); sys.exit(2)"], step="info")


def test_subprocess_is_used_only_behind_the_door() -> None:
    """Everything else runs programs through imagegen.proc (or imagegen.image.proc, which builds on it)."""
    allowed = {
        "imagegen/proc.py",
        "imagegen/image/qemu.py",  # boot_until: qemu in the background while the serial log is watched
        # Not yet moved to imagegen.proc (kubectl calls, outside the image and bundle code):
        "imagegen/nodeops.py",
    }
    users = {p.relative_to(ROOT).as_posix() for p in (ROOT / "imagegen").rglob("*.py")
             if re.search(r"^\s*(import subprocess|from subprocess )", p.read_text(), re.M)}
    assert users <= allowed, users - allowed


def test_one_file_digest_helper() -> None:
    # Any module-level `def ...sha256...(path: Path) -> str`: use imagegen.bundle.dockerarchive.sha256_file instead.
    pattern = re.compile(r"^def \w*sha256\w*\(\w+: Path\) -> str:", re.M)
    found = [p.relative_to(ROOT).as_posix() for p in (ROOT / "imagegen").rglob("*.py") for _ in
             pattern.finditer(p.read_text())]
    assert found == ["imagegen/bundle/dockerarchive.py"], "hash files with imagegen.bundle.dockerarchive.sha256_file"
