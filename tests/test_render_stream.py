"""The CLI streams a render into the writer (render.iter_render -> writer.write_tree): same bytes as the dict
form, and a failure midway leaves the previous output as it was and no temporary directory behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagegen.cli import main
from imagegen.plan import load_plan
from imagegen.render import Artifact, RenderStats, iter_render, render_cluster
from imagegen.state import ensure_state
from imagegen.writer import write_tree

from .conftest import ROOT


def test_stream_equals_dict_and_cli_output(tmp_path: Path) -> None:
    plan = load_plan(ROOT / "examples" / "ha.yaml")
    state = ensure_state(tmp_path / "state", plan)
    streamed = list(iter_render(plan, state))
    assert dict(streamed) == render_cluster(plan, state)
    assert [p for p, _ in streamed][-2:] == ["admin.conf", "manifest.json"]
    assert main(["render", str(ROOT / "examples" / "ha.yaml"), "--out", str(tmp_path / "out"),
                 "--state", str(tmp_path / "state"), "--quiet"]) == 0
    for path, artifact in streamed:
        assert (tmp_path / "out" / path).read_bytes() == artifact.data, path
    stats = RenderStats()
    assert list(stats.count(iter(streamed))) == streamed
    assert (stats.files, stats.seeds) == (len(streamed), len(plan.nodes))


def test_failure_midway_leaves_the_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(out, {"nodes/a/user-data": Artifact(b"old\n", 0o600)})

    def broken() -> Iterator[tuple[str, Artifact]]:
        yield "nodes/a/user-data", Artifact(b"new\n", 0o600)
        raise RuntimeError("render failed on the second node")

    with pytest.raises(RuntimeError):
        write_tree(out, broken())
    assert (out / "nodes" / "a" / "user-data").read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_path_in_a_stream_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside the output"):
        write_tree(tmp_path / "out", iter([("ok", Artifact(b"x")), ("../escape", Artifact(b"x"))]))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("example", ["ha.yaml", "single.yaml", "kube-vip.yaml"])
def test_shared_memo_gives_what_a_fresh_one_gives_per_node(tmp_path: Path, example: str) -> None:
    """render reuses template outputs across nodes (RenderMemo): every node's user-data from the render's one memo,
    in plan order, equals that node's user-data rendered alone with a memo of its own; no output of a template that
    reads the node leaks into another node."""
    from imagegen.render import RenderMemo, render_user_data

    if not (ROOT / "examples" / example).exists():
        pytest.skip(f"no examples/{example}")
    plan = load_plan(ROOT / "examples" / example)
    state = ensure_state(tmp_path / "state", plan)
    shared = RenderMemo(plan, state)
    together = {node.name: render_user_data(plan, node, state, shared) for node in plan.nodes}
    for node in reversed(plan.nodes):  # alone, and in the other order
        assert render_user_data(plan, node, state, RenderMemo(plan, state)) == together[node.name], node.name
    assert len(set(together.values())) == len(plan.nodes)  # every node's differs (its name, its address)
