"""A plan of render.PARALLEL_FROM nodes or more renders in forked worker processes (render.iter_render): the same
stream as one process gives, byte for byte and in the same order; an error of a node is raised as itself; a worker
that dies changes nothing; the workers stay a few nodes ahead and end with the stream; a process that may not fork
renders alone."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imagegen import render
from imagegen.errors import PlanError, Problem
from imagegen.plan import Node, Plan, parse_plan_text
from imagegen.render import PARALLEL_FROM, Artifact, iter_render
from imagegen.state import ClusterState, ensure_state

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_render import generated_plan  # noqa: E402

NODES = PARALLEL_FROM + 13  # not a whole number of chunks


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, ClusterState, Path]:
    plan = parse_plan_text(generated_plan(NODES))
    state_dir = tmp_path_factory.mktemp("state")
    return plan, ensure_state(state_dir, plan), state_dir


@pytest.fixture(scope="module")
def alone(cluster: tuple[Plan, ClusterState, Path]) -> list[tuple[str, Artifact]]:
    plan, state, _ = cluster
    return list(iter_render(plan, state, processes=1))


def test_workers_give_the_stream_one_process_gives(cluster: tuple[Plan, ClusterState, Path],
                                                   alone: list[tuple[str, Artifact]]) -> None:
    plan, state, _ = cluster
    calls: list[tuple[str, int, int]] = []
    stream = iter_render(plan, state, lambda node, done, total: calls.append((node.name, done, total)), processes=2)
    first = next(stream)
    workers = multiprocessing.active_children()
    together = [first, *stream]
    assert len(workers) == 2
    assert together == alone  # every path, byte and mode, in the same order, manifest.json included
    assert calls == [(node.name, i + 1, NODES) for i, node in enumerate(plan.nodes)]
    assert multiprocessing.active_children() == []  # the stream's end ended the workers
    assert list(iter_render(plan, state, processes=3)) == alone


def test_a_small_plan_or_one_process_renders_here(cluster: tuple[Plan, ClusterState, Path], tmp_path: Path) -> None:
    plan, state, _ = cluster
    stream = iter_render(plan, state, processes=1)
    next(stream)
    assert multiprocessing.active_children() == []
    stream.close()
    small = parse_plan_text(generated_plan(PARALLEL_FROM - 1))
    stream = iter_render(small, ensure_state(tmp_path / "state", small), processes=4)
    next(stream)
    assert multiprocessing.active_children() == []
    stream.close()


def test_an_error_of_a_node_in_a_worker_is_raised_as_itself(cluster: tuple[Plan, ClusterState, Path],
                                                            alone: list[tuple[str, Artifact]],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The failing node is past the ones rendered before the workers start, so a worker meets it first: the error
    is the node's own (a PlanError with its problems, not a copy pickled across), after the same files."""
    plan, state, _ = cluster
    bad = plan.nodes[NODES // 2]
    real = render.render_node

    def failing(plan: Plan, node: Node, state: ClusterState, memo: render.RenderMemo | None = None
                ) -> dict[str, Artifact]:
        if node.name == bad.name:
            raise PlanError([Problem("nodes", node.name, "cannot be rendered", "fix it")])
        return real(plan, node, state, memo)

    monkeypatch.setattr(render, "render_node", failing)
    results = {}
    for processes in (1, 2):
        before: list[tuple[str, Artifact]] = []
        with pytest.raises(PlanError) as caught:
            for item in iter_render(plan, state, processes=processes):
                before.append(item)
        assert [str(p) for p in caught.value.problems] == [f"nodes: cannot be rendered (got '{bad.name}'); fix it"]
        results[processes] = before
        assert multiprocessing.active_children() == []
    assert results[2] == results[1] == alone[:len(results[1])]
    assert results[1][-1][0] == f"seeds/{plan.nodes[NODES // 2 - 1].name}.iso"


def test_a_worker_that_dies_changes_nothing(cluster: tuple[Plan, ClusterState, Path],
                                            alone: list[tuple[str, Artifact]]) -> None:
    plan, state, _ = cluster
    stream = iter_render(plan, state, processes=2)
    together = [next(stream)]
    os.kill(multiprocessing.active_children()[0].pid or 0, signal.SIGKILL)
    together.extend(stream)  # what the dead worker had and what comes after: rendered here
    assert together == alone
    assert multiprocessing.active_children() == []


def test_workers_stay_a_few_nodes_ahead(cluster: tuple[Plan, ClusterState, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """While the consumer holds on to its first file, the workers render two chunks per worker (the window) and
    no more, whatever the plan's size: the stream's memory stays flat."""
    plan, state, _ = cluster
    real = render.render_node
    here = os.getpid()

    def noting(plan: Plan, node: Node, state: ClusterState, memo: render.RenderMemo | None = None
               ) -> dict[str, Artifact]:
        (tmp_path / f"{node.name}.{os.getpid()}").touch()
        return real(plan, node, state, memo)

    def in_workers() -> int:
        return sum(1 for p in tmp_path.iterdir() if not p.name.endswith(f".{here}"))

    monkeypatch.setattr(render, "render_node", noting)
    stream = iter_render(plan, state, processes=2)
    next(stream)
    window = 2 * 2 * render._CHUNK
    deadline = time.monotonic() + 60
    while in_workers() < window and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # room to run further ahead, were they not held
    assert in_workers() == window
    stream.close()
    assert multiprocessing.active_children() == []


def _manifest(text: str, state_dir: str) -> bytes:
    plan = parse_plan_text(text)
    return dict(iter_render(plan, ensure_state(Path(state_dir), plan), processes=4))["manifest.json"].data


def test_a_daemon_process_renders_alone(cluster: tuple[Plan, ClusterState, Path],
                                        alone: list[tuple[str, Artifact]]) -> None:
    """multiprocessing.Pool's workers are daemons, which may not start processes: the render stays in them."""
    _, _, state_dir = cluster
    with multiprocessing.get_context("fork").Pool(1) as pool:
        manifest = pool.apply(_manifest, (generated_plan(NODES), str(state_dir)))
    assert manifest == dict(alone)["manifest.json"].data


def test_beside_another_thread_the_render_stays_here(cluster: tuple[Plan, ClusterState, Path],
                                                      alone: list[tuple[str, Artifact]]) -> None:
    """A fork copies only the forking thread: a lock another thread holds then stays held in the child forever."""
    plan, state, _ = cluster
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        stream = iter_render(plan, state, processes=2)
        first = next(stream)
        assert multiprocessing.active_children() == []
        assert [first, *stream] == alone
    finally:
        release.set()
        other.join()


def test_what_was_buffered_before_the_fork_is_written_once(tmp_path: Path) -> None:
    """A forked worker that flushed the buffers it inherited would print them again (multiprocessing flushes them
    before it forks)."""
    (tmp_path / "plan.yaml").write_text(generated_plan(NODES))
    code = ("import sys; from pathlib import Path; from imagegen.plan import load_plan; "
            "from imagegen.render import iter_render; from imagegen.state import ensure_state; "
            "sys.stdout.write('stdout once;'); sys.stderr.write('stderr once;'); "
            f"plan = load_plan(Path({str(tmp_path / 'plan.yaml')!r})); "
            f"state = ensure_state(Path({str(tmp_path / 'state')!r}), plan); "
            "print(sum(1 for _ in iter_render(plan, state, processes=2)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"stdout once;{NODES * 9 + 2}\n"
    assert result.stderr.count("stderr once;") == 1


def test_cli_jobs_gives_the_same_output_and_refuses_nonsense(tmp_path: Path) -> None:
    """`imagegen render --jobs N`: the operator's say over the worker processes (1 on a busy shared host); the
    files are the same whatever N; 0, negatives and words are usage errors (exit 2) that write nothing."""
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(generated_plan(NODES))
    state = tmp_path / "state"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imagegen", "render", str(plan_file), "--state", str(state),
                               "--quiet", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)

    trees = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"out-{jobs}"
        assert run("--out", str(out), "--jobs", jobs).returncode == 0
        trees[jobs] = {p.relative_to(out): (p.read_bytes(), p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert trees["1"] == trees["2"] and len(trees["1"]) == NODES * 9 + 3  # + imagegen's output marker
    for bad in ("0", "-1", "many", "257"):
        done = run("--out", str(tmp_path / "bad"), "--jobs", bad)
        assert done.returncode == 2 and "--jobs" in done.stderr and repr(bad) in done.stderr
        assert not (tmp_path / "bad").exists()
