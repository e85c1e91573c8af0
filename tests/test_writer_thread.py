"""write_tree hands files to a thread of its own (writer._FileWriter), so the kernel creates files while the render
goes on: the output, modes and marker are what writing them one after the other gives, the render is held at most
_IN_FLIGHT files ahead, and an error of the thread surfaces in the caller with the writer's message, leaving `out`
as it was and no temporary directory behind."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagegen import writer
from imagegen.render import Artifact
from imagegen.writer import DIR_MODE, OUTPUT_MARKER, write_tree

MODES = (0o644, 0o600, 0o755, 0o640)


def artifacts(count: int) -> dict[str, Artifact]:
    """`count` files over nested directories, of every mode in MODES and of sizes from empty to 200 KiB."""
    return {f"nodes/n{i % 37:02d}/sub{i % 3}/f{i:04d}": Artifact(bytes([i % 251]) * (i * 677 % 200_000),
                                                                MODES[i % len(MODES)])
            for i in range(count)}


def on_disk(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != OUTPUT_MARKER}


def no_writer_thread() -> bool:
    return not any(t.name == "imagegen-writer" for t in threading.enumerate())


def test_a_stream_is_written_as_given(tmp_path: Path) -> None:
    files = artifacts(400)
    write_tree(tmp_path / "streamed", iter(sorted(files.items())))
    write_tree(tmp_path / "mapping", files)
    expected = {rel: (a.data, a.mode) for rel, a in files.items()}
    assert on_disk(tmp_path / "streamed") == expected == on_disk(tmp_path / "mapping")
    marker = json.loads((tmp_path / "streamed" / OUTPUT_MARKER).read_text())
    assert marker["files"] == sorted(files)
    dirs = [tmp_path / "streamed", *(p for p in (tmp_path / "streamed").rglob("*") if p.is_dir())]
    assert {stat.S_IMODE(p.stat().st_mode) for p in dirs} == {DIR_MODE}
    assert no_writer_thread()


@pytest.mark.parametrize("mask", [0o077, 0o277, 0o000])
def test_modes_are_exact_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    files = artifacts(40)
    previous = os.umask(mask)
    try:
        write_tree(tmp_path / "out", iter(sorted(files.items())))
    finally:
        os.umask(previous)
    assert {rel: mode for rel, (_, mode) in on_disk(tmp_path / "out").items()} == {
        rel: a.mode for rel, a in files.items()}
    dirs = [tmp_path / "out", *(p for p in (tmp_path / "out").rglob("*") if p.is_dir())]
    assert {stat.S_IMODE(p.stat().st_mode) for p in dirs} == {DIR_MODE}


def test_an_error_of_the_writer_surfaces_and_leaves_out_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(out, {"nodes/a/user-data": Artifact(b"old\n", 0o600)})
    produced = []

    def stream() -> Iterator[tuple[str, Artifact]]:
        yield "nodes/x", Artifact(b"a file where the next file needs a directory")
        for i in range(2000):
            produced.append(i)
            yield f"nodes/x/f{i}", Artifact(b"y" * 1000)

    with pytest.raises(OSError, match=re.escape(f"--out {out}: cannot write the new output: Not a directory (")):
        write_tree(out, stream())
    assert on_disk(out) == {"nodes/a/user-data": (b"old\n", 0o600)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert len(produced) < 2000  # the render stopped at the error, it did not go on to the end
    assert no_writer_thread()


def test_an_error_of_the_render_stops_the_writer(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(out, {"nodes/a/user-data": Artifact(b"old\n", 0o600)})

    def stream() -> Iterator[tuple[str, Artifact]]:
        yield from sorted(artifacts(300).items())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tree(out, stream())
    assert on_disk(out) == {"nodes/a/user-data": (b"old\n", 0o600)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert no_writer_thread()


def test_the_render_is_held_at_most_in_flight_files_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the disk is stalled (the writer waits at its first file), the render produces the file being written,
    _IN_FLIGHT waiting ones and the one it waits to hand over: no more, whatever the stream's length."""
    gate = threading.Event()
    real = writer._write_file

    def stalled(path: Path, artifact: Artifact) -> None:
        gate.wait(timeout=60)
        real(path, artifact)

    monkeypatch.setattr(writer, "_write_file", stalled)
    files = sorted(artifacts(300).items())
    produced: list[str] = []

    def stream() -> Iterator[tuple[str, Artifact]]:
        for rel, artifact in files:
            produced.append(rel)
            yield rel, artifact

    failed: list[BaseException] = []

    def run() -> None:
        try:
            write_tree(tmp_path / "out", stream())
        except BaseException as exc:
            failed.append(exc)

    render = threading.Thread(target=run)
    render.start()
    bound = writer._IN_FLIGHT + 2
    deadline = time.monotonic() + 30
    while len(produced) < bound and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # room to run further ahead, were the queue not bounded
    held = len(produced)
    gate.set()
    render.join(timeout=60)
    assert held == bound
    assert not failed and not render.is_alive()
    assert on_disk(tmp_path / "out") == {rel: (a.data, a.mode) for rel, a in files}


def test_an_interruption_while_the_last_files_are_written_leaves_nothing(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal whose handler raises (the CLI's) while write_tree waits for the writer to finish: the thread ends
    before the temporary directory goes. Were it still running then, its next file (in a directory it has not made
    yet) would make the directory again, and a temporary tree would be left beside `out`."""
    gate = threading.Event()
    real = writer._write_file

    def stalled(path: Path, artifact: Artifact) -> None:
        real(path, artifact)
        gate.wait(timeout=60)  # between two files

    def interrupt(signum: int, frame: object) -> None:
        threading.Timer(0.3, gate.set).start()  # the disk comes back while the interruption unwinds
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_write_file", stalled)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # the stream below is handed over by then: write_tree waits
        with pytest.raises(KeyboardInterrupt):
            write_tree(tmp_path / "out", iter(sorted(artifacts(10).items())))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(0.5)  # were the thread still running, it would write (and make directories) now
    assert list(tmp_path.iterdir()) == []
    assert no_writer_thread()
