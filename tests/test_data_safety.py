"""A render never deletes or leaves what it did not write (issue 10, "Data safety"): the output marker,
foreign files, state/plan/output nesting, symlinks, files in place of directories, modes under any umask,
leftovers of interrupted renders, signals and the output lock."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from imagegen import writer
from imagegen.cli import main
from imagegen.writer import OUTPUT_MARKER, lock_path

from .conftest import ROOT, plan_ids

HA = ROOT / "examples" / "ha.yaml"


def problems(stderr: str) -> list[str]:
    """stderr without the plan's advisory warnings (version pairs): the lines a refusal must keep to one."""
    return [line for line in stderr.splitlines() if not line.startswith("imagegen: warning: cluster.")]


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered output and its state, made once; tests copy them."""
    base = tmp_path_factory.mktemp("rendered")
    assert main(["render", str(HA), "--out", str(base / "out"), "--state", str(base / "state"), "--quiet"]) == 0
    return base


@pytest.fixture
def output(template: Path, tmp_path: Path) -> tuple[Path, Path]:
    out, state = tmp_path / "out", tmp_path / "state"
    shutil.copytree(template / "out", out, symlinks=True)
    shutil.copytree(template / "state", state, symlinks=True)
    return out, state


def render(out: Path, state: Path, plan: Path = HA, *extra: str) -> int:
    return main(["render", str(plan), "--out", str(out), "--state", str(state), "--quiet", *extra])


# --- recognising an imagegen output ---------------------------------------------------------------------------

def test_output_carries_the_marker_and_rerenders(output: tuple[Path, Path]) -> None:
    out, state = output
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker["generator"] == "imagegen"
    assert sorted(marker["files"]) == sorted(p for p in tree(out) if p != OUTPUT_MARKER)
    before = tree(out)
    assert render(out, state) == 0
    assert tree(out) == before


@pytest.mark.parametrize("plan_id", plan_ids())
def test_every_rendered_file_is_listed_in_the_manifest(plan_id: str, rendered) -> None:
    """Outputs made before the marker are recognised by their manifest: it must list every file."""
    r = rendered[plan_id]
    manifest = json.loads(r.artifacts["manifest.json"].data)
    listed = {"manifest.json", *manifest["files"]}
    for node in manifest["nodes"]:
        listed.update(node["files"])
    assert set(r.artifacts) == listed


def test_directory_with_a_foreign_manifest_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "images").mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"format": 1, "kubernetes_version": "1.34.2", "files": {}}))
    (bundle / "images" / "pause.tar").write_bytes(b"x" * 100)
    before = tree(bundle)
    assert render(bundle, tmp_path / "state") == 2
    assert "not an imagegen output" in capsys.readouterr().err
    assert tree(bundle) == before and not (tmp_path / "state").exists()


@pytest.mark.parametrize("marker", [b"", b"{}", b'{"generator": "imagegen"}', b"\xff" * 10,
                                    b'{"generator": "other", "files": []}'])
def test_edited_marker_is_refused(marker: bytes, output: tuple[Path, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out, state = output
    (out / OUTPUT_MARKER).write_bytes(marker)
    before = tree(out)
    assert render(out, state) == 2
    assert "cannot tell which files it wrote" in capsys.readouterr().err
    assert tree(out) == before


def test_marked_output_missing_some_files_is_replaced(output: tuple[Path, Path]) -> None:
    out, state = output
    (out / "manifest.json").unlink()
    shutil.rmtree(out / "seeds")
    assert render(out, state) == 0
    assert (out / "manifest.json").exists() and (out / "seeds" / "cp-1.iso").exists()


def test_legacy_output_without_marker_is_accepted(output: tuple[Path, Path]) -> None:
    out, state = output
    (out / OUTPUT_MARKER).unlink()
    assert render(out, state) == 0
    assert json.loads((out / OUTPUT_MARKER).read_text())["generator"] == "imagegen"


def test_file_imagegen_did_not_write_is_never_deleted(output: tuple[Path, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out, state = output
    (out / "notes.txt").write_text("mine")
    (out / "nodes" / "cp-1" / "extra.cfg").write_text("mine too")
    before = tree(out)
    assert render(out, state) == 2
    err = capsys.readouterr().err
    assert "holds 2 files imagegen did not write" in err and "notes.txt" in err and "nodes/cp-1/extra.cfg" in err
    assert tree(out) == before


def test_symlink_inside_output_counts_as_foreign(output: tuple[Path, Path], tmp_path: Path) -> None:
    out, state = output
    (out / "admin.conf").unlink()
    (out / "admin.conf").symlink_to(tmp_path / "elsewhere")
    assert render(out, state) == 2 and (out / "admin.conf").is_symlink()


def test_files_of_a_removed_node_are_replaced(output: tuple[Path, Path], tmp_path: Path) -> None:
    out, state = output
    data = yaml.safe_load(HA.read_text())
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "worker-2"]
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(data))
    assert render(out, state, smaller) == 0
    assert not (out / "nodes" / "worker-2").exists() and not (out / "seeds" / "worker-2.iso").exists()


# --- nesting: the state, the plan and the output apart -----------------------------------------------------------

@pytest.mark.parametrize("case", ["out-is-state", "state-inside-out", "out-inside-state", "plan-inside-out",
                                  "state-inside-out-via-link"])
def test_nested_paths_are_refused_and_nothing_is_written(case: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    x = tmp_path / "x"
    plan = HA
    if case == "out-is-state":
        out, state = x, x
    elif case == "state-inside-out":
        out, state = x, x / "state"
    elif case == "out-inside-state":
        out, state = x / "out", x
    elif case == "plan-inside-out":
        x.mkdir()
        plan = x / "plan.yaml"
        shutil.copy(HA, plan)
        out, state = x, tmp_path / "state"
    else:
        (tmp_path / "link").symlink_to(x, target_is_directory=True)
        out, state = x, tmp_path / "link" / "state"
    assert render(out, state, plan) == 2
    err = capsys.readouterr().err
    assert len(problems(err)) == 1 and ("inside" in err or "same directory" in err), err
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == {"plan-inside-out": ["x", "x/plan.yaml"],
                    "state-inside-out-via-link": ["link"]}.get(case, []), left


def test_state_inside_an_existing_output_is_refused(output: tuple[Path, Path]) -> None:
    out, state = output
    inner = out / "state"
    shutil.copytree(state, inner)
    before = tree(out)
    assert render(out, inner) == 2
    assert tree(out) == before


# --- what --out and --state may be ------------------------------------------------------------------------------

def test_out_symlink_is_refused_before_writing(tmp_path: Path, output: tuple[Path, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    real, state = output
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    before = tree(real)
    assert render(link, tmp_path / "fresh-state") == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert link.is_symlink() and tree(real) == before and not (tmp_path / "fresh-state").exists()


def test_dangling_out_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert render(tmp_path / "link", tmp_path / "state") == 2
    assert names(tmp_path) == ["link"]


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("keep")
    assert render(tmp_path / "out", tmp_path / "state") == 2
    err = capsys.readouterr().err
    assert len(problems(err)) == 1 and "is a file" in err
    assert names(tmp_path) == ["out"] and (tmp_path / "out").read_text() == "keep"


def test_out_below_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("keep")
    assert render(tmp_path / "f" / "out", tmp_path / "state") == 2
    assert "is a file, not a directory" in capsys.readouterr().err and names(tmp_path) == ["f"]


def test_state_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state").write_text("keep")
    assert render(tmp_path / "out", tmp_path / "state") == 2
    err = capsys.readouterr().err
    assert len(problems(err)) == 1 and "is a file" in err
    assert names(tmp_path) == ["state"]


def test_state_below_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("keep")
    assert render(tmp_path / "out", tmp_path / "f" / "state") == 2
    assert "is a file, not a directory" in capsys.readouterr().err and names(tmp_path) == ["f"]


def test_out_is_the_plan_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.yaml"
    shutil.copy(HA, plan)
    assert render(plan, tmp_path / "state", plan) == 2
    assert "is the plan file" in capsys.readouterr().err and names(tmp_path) == ["plan.yaml"]


def test_foreign_state_dir_refused_before_output_is_touched(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "notes.txt").write_text("mine")
    assert render(tmp_path / "out", tmp_path / "state") == 2
    assert names(tmp_path) == ["state"] and names(tmp_path / "state") == ["notes.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_parent_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        assert render(ro / "out", tmp_path / "state") == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)
    assert names(tmp_path) == ["ro"]


@pytest.fixture
def immutable():
    """chattr +i on paths (root only), undone afterwards."""
    done: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0 or not shutil.which("chattr"):
            pytest.skip("needs root and chattr")
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip(f"the file system of {path} has no immutable attribute")
        done.append(path)

    yield make
    for path in done:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_immutable_parent_exit_2(tmp_path: Path, immutable, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imm").mkdir()
    immutable(tmp_path / "imm")
    assert render(tmp_path / "imm" / "out", tmp_path / "state") == 2
    err = capsys.readouterr().err
    assert len(problems(err)) == 1 and "not writable" in err
    assert names(tmp_path) == ["imm"]


def test_immutable_output_exit_2_before_writing(output: tuple[Path, Path], immutable,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out, state = output
    immutable(out / "nodes" / "cp-1")
    before = tree(out)
    assert render(out, state) == 2
    assert "nodes/cp-1 is not writable" in capsys.readouterr().err
    assert tree(out) == before and names(out.parent) == ["out", "state"]


def test_immutable_state_exit_2_when_it_must_be_written(output: tuple[Path, Path], tmp_path: Path, immutable,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out, state = output
    immutable(state / "bootstrap-token")
    assert main(["token", "rotate", "--state", str(state)]) == 2
    assert "cannot be written" in capsys.readouterr().err
    (state / "pki" / "admin.crt").unlink()
    (state / "pki" / "admin.key").unlink()
    immutable(state / "pki")
    assert render(tmp_path / "out2", state) == 2
    assert "cannot be written" in capsys.readouterr().err and not (tmp_path / "out2").exists()


# --- modes --------------------------------------------------------------------------------------------------------

def test_directories_are_not_world_writable_under_umask_000(tmp_path: Path) -> None:
    code = ("import os, sys; os.umask(0); from imagegen.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    out, state = tmp_path / "new" / "out", tmp_path / "state"
    result = subprocess.run([sys.executable, "-c", code, "render", str(HA), "--out", str(out), "--state", str(state),
                             "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    dirs = [tmp_path / "new", out, *(p for p in out.rglob("*") if p.is_dir())]
    assert {stat.S_IMODE(p.stat().st_mode) for p in dirs} == {writer.DIR_MODE}
    files = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert files == {0o600, 0o644}
    state_modes = {stat.S_IMODE(p.stat().st_mode) for p in [state, *state.rglob("*")]}
    assert state_modes == {0o700, 0o600}


def test_temporary_directory_is_private_while_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = writer._write_file

    def spy(path: Path, artifact: writer.Artifact) -> None:
        top = next(p for p in path.parents if p.parent == tmp_path)
        seen.append(stat.S_IMODE(top.stat().st_mode))
        real(path, artifact)

    monkeypatch.setattr(writer, "_write_file", spy)
    assert render(tmp_path / "out", tmp_path / "state") == 0
    assert seen and set(seen) == {0o700}


# --- interruptions ------------------------------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_interrupted_renders_are_removed(output: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out, state = output
    parent = out.parent
    dead = _dead_pid()
    leftovers = [f".out.imagegen-tmp-{dead}-ab12cd34", f".out.imagegen-old-{dead}", f".out.old-{dead}",
                 ".out.k2j_9x0q"]
    for name in leftovers:
        (parent / name / "nodes" / "cp-1").mkdir(parents=True)
        (parent / name / "nodes" / "cp-1" / "user-data").write_text("secret")
    keep = [".out.keep-me", f".other.imagegen-tmp-{dead}-x", ".out.notes123"]
    for name in keep:
        (parent / name).mkdir()
    (parent / ".out.notes123" / "diary.txt").write_text("mine")
    assert render(out, state) == 0
    assert "removed 4 leftover(s)" in capsys.readouterr().err
    assert sorted(n for n in names(parent) if n.startswith(".")) == sorted(keep)


def test_legacy_leftover_of_a_live_process_is_kept(output: tuple[Path, Path]) -> None:
    out, state = output
    live = out.parent / f".out.old-{os.getpid()}"
    (live / "nodes").mkdir(parents=True)
    assert render(out, state) == 0
    assert live.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_write_exits_128_plus_n_and_cleans_up(signum: int, output: tuple[Path, Path],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out, state = output
    before = tree(out)
    real = writer._write_file
    calls = {"n": 0}

    def interrupting(path: Path, artifact: writer.Artifact) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signum)
        real(path, artifact)

    monkeypatch.setattr(writer, "_write_file", interrupting)
    assert render(out, state) == 128 + signum
    err = capsys.readouterr().err
    assert problems(err) == [f"imagegen: interrupted by {signal.Signals(signum).name}; temporary files removed"]
    assert tree(out) == before
    assert names(out.parent) == ["out", "state"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # main() put the handlers back


def test_sigterm_of_a_running_render(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_render import generated_plan

    plan = tmp_path / "big.yaml"
    plan.write_text(generated_plan(120))
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "imagegen", "render", str(plan), "--out", str(out), "--state",
                             str(tmp_path / "s")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    deadline = time.monotonic() + 120
    while not lock_path(out).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the render finished before the signal arrived")
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "imagegen: interrupted by SIGTERM; temporary files removed"
    assert [n for n in names(tmp_path) if "imagegen" in n] == []
    assert not out.exists()


def test_signal_during_the_swap_waits_for_it(output: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    out, state = output
    real = os.rename

    def signalling(src: object, dst: object) -> None:
        if Path(str(src)) == out:  # moving the old output aside: the next step must still happen
            os.kill(os.getpid(), signal.SIGTERM)
        real(src, dst)

    monkeypatch.setattr(writer.os, "rename", signalling)
    assert render(out, state) == 143
    monkeypatch.undo()
    assert (out / OUTPUT_MARKER).exists() and (out / "manifest.json").exists()
    assert names(out.parent) == ["out", "state"]  # the old output is gone too, no leftovers


def test_failed_swap_restores_the_previous_output(output: tuple[Path, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out, state = output
    before = tree(out)
    real = os.rename
    calls = {"n": 0}

    def flaky(src: object, dst: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the new tree into place, after the old one was moved aside
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(writer.os, "rename", flaky)
    assert render(out, state) == 1
    monkeypatch.undo()
    assert tree(out) == before and names(out.parent) == ["out", "state"]


# --- the output lock ----------------------------------------------------------------------------------------------

def test_render_waits_for_the_output_lock(output: tuple[Path, Path]) -> None:
    out, state = output
    fd = os.open(lock_path(out), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "imagegen", "render", str(HA), "--out", str(out), "--state",
                                 str(state), "--quiet"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
        time.sleep(3)
        assert proc.poll() is None  # still waiting
    finally:
        os.unlink(lock_path(out))
        os.close(fd)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "waiting for another imagegen" in err
    assert names(out.parent) == ["out", "state"]  # the lock file is gone too


def test_concurrent_renders_of_one_output_and_a_new_state(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    procs = [subprocess.Popen([sys.executable, "-m", "imagegen", "render", str(HA), "--out", str(out), "--state",
                               str(state), "--quiet"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    from imagegen.plan import load_plan
    from imagegen.state import ensure_state

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["discovery_hash"] == ensure_state(state, load_plan(HA)).discovery_hash
    assert names(tmp_path) == ["out", "state"]
    assert render(out, state) == 0


def test_dot_as_out_is_handled_by_name(output: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    out, state = output
    monkeypatch.chdir(out)
    assert main(["render", str(HA), "--out", ".", "--state", str(state), "--quiet"]) == 0
    assert (out / OUTPUT_MARKER).exists() and names(out.parent) == ["out", "state"]
