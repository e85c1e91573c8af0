"""The command line: help everywhere, show, render twice byte-identical, atomic replacement, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen.cli import main

from .conftest import ROOT

HA = str(ROOT / "examples" / "ha.yaml")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagegen", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("argv", [[], ["validate"], ["render"], ["show"], ["token"], ["token", "rotate"]])
def test_help_everywhere(argv: list[str]) -> None:
    result = run(*argv, "--help")
    assert result.returncode == 0 and "usage: imagegen" in result.stdout


def test_show_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", HA]) == 0
    out = capsys.readouterr().out
    assert "kubeadm.k8s.io/v1beta4" in out and "k8s-api.example.internal -> 192.168.10.10:6443" in out
    assert "cp-1" in out and "52:54:00:10:00:11" in out and "load-balancer" in out


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_twice_is_byte_identical(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert run("render", HA, "--out", str(tmp_path / "a"), "--state", str(state)).returncode == 0
    result = run("render", HA, "--out", str(tmp_path / "b"), "--state", str(state), "--quiet")
    assert result.returncode == 0 and result.stdout == ""
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b and any(p.endswith(".iso") for p in a)
    manifest = json.loads(a["manifest.json"])
    assert [n["name"] for n in manifest["nodes"]] == ["lb-1", "lb-2", "cp-1", "cp-2", "cp-3", "worker-1",
                                                      "worker-2", "harbor"]
    import hashlib
    for node in manifest["nodes"]:
        for path, digest in node["files"].items():
            assert hashlib.sha256(a[path]).hexdigest() == digest


def test_rerender_and_token_rotation_change_only_token_users(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    assert main(["render", HA, "--out", str(out), "--state", str(state), "--quiet"]) == 0
    before = _tree(out)
    assert main(["token", "rotate", "--state", str(state)]) == 0
    assert main(["render", HA, "--out", str(out), "--state", str(state), "--quiet"]) == 0
    after = _tree(out)
    changed = {p for p in after if after[p] != before.get(p)}
    # Only nodes holding the token (control planes, workers) change, and the manifest listing their digests.
    assert changed and all(any(n in p for n in ("cp-", "worker-", "manifest")) for p in changed)
    assert before["nodes/lb-1/user-data"] == after["nodes/lb-1/user-data"]


def test_refuses_foreign_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "docs"
    out.mkdir()
    (out / "important.txt").write_text("keep me")
    assert main(["render", HA, "--out", str(out), "--state", str(tmp_path / "s")]) == 2
    assert "not an imagegen output" in capsys.readouterr().err
    assert (out / "important.txt").read_text() == "keep me"
    assert not (tmp_path / "s").exists()


def test_token_rotate_without_state_exit_2(tmp_path: Path) -> None:
    result = run("token", "rotate", "--state", str(tmp_path / "none"))
    assert result.returncode == 2 and "no imagegen state" in result.stderr


def test_progress_lines_for_large_plans(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_render import generated_plan

    plan = tmp_path / "big.yaml"
    plan.write_text(generated_plan(25))
    result = run("render", str(plan), "--out", str(tmp_path / "o"), "--state", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    # Not a terminal: a plain line about every tenth of the way (imagegen.progress), never one per node.
    assert result.stderr.count("\n") <= 11 and "rendered 25/25 nodes" in result.stderr


def test_failure_leaves_previous_output_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    assert main(["render", HA, "--out", str(out), "--state", str(state), "--quiet"]) == 0
    before = _tree(out)
    import imagegen.writer as writer

    real_write = writer.os.write
    calls = {"n": 0}

    def flaky(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(writer.os, "write", flaky)
    assert main(["render", HA, "--out", str(out), "--state", str(state), "--quiet"]) == 1
    monkeypatch.undo()
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "state"]
