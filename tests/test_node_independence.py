"""How nodes learn about each other (docs/architecture.md): a node's seed holds what it needs to reach the
cluster, never the list of other nodes, and its instance-id is stable. So adding or removing a worker, or rotating
the token, leaves every other node's files as they were, and cloud-init never mistakes a running node for a new
instance."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from imagegen.plan import parse_plan
from imagegen.render import render_cluster
from imagegen.state import ensure_state, rotate_token

from .conftest import ROOT


def _node_files(artifacts: dict, name: str) -> dict[str, str]:
    return {p: a.sha256 for p, a in artifacts.items()
            if p.startswith(f"nodes/{name}/") or p in (f"seeds/{name}.iso", f"seeds/{name}-configdrive.iso")}


def _instance_id(artifacts: dict, name: str) -> str:
    return yaml.safe_load(artifacts[f"nodes/{name}/meta-data"].data)["instance-id"]


def _plans(stem: str) -> tuple[dict, dict]:
    base = yaml.safe_load((ROOT / "examples" / f"{stem}.yaml").read_text())
    grown = copy.deepcopy(base)
    prefix = base["network"]["cidr"].rsplit(".", 1)[0]
    grown["nodes"].append({"name": "wk-new", "role": "worker", "ip": f"{prefix}.99", "mac": "52:54:00:10:00:99"})
    return base, grown


# ha: Calico; single: host-gw, whose routes and pod subnets come from the Node objects.
@pytest.mark.parametrize("stem", ["ha", "single"])
def test_adding_a_worker_changes_no_existing_node(tmp_path: Path, stem: str) -> None:
    base, grown = _plans(stem)
    plan, plan_grown = parse_plan(base), parse_plan(grown)
    state = ensure_state(tmp_path / "state", plan)
    before, after = render_cluster(plan, state), render_cluster(plan_grown, state)
    changed = [n.name for n in plan.nodes if _node_files(before, n.name) != _node_files(after, n.name)]
    assert changed == []
    assert "nodes/wk-new/user-data" in after


def test_removing_a_worker_changes_no_other_node(tmp_path: Path) -> None:
    base, grown = _plans("ha")
    plan, plan_grown = parse_plan(base), parse_plan(grown)
    state = ensure_state(tmp_path / "state", plan_grown)
    before, after = render_cluster(plan_grown, state), render_cluster(plan, state)
    assert [n.name for n in plan.nodes if _node_files(before, n.name) != _node_files(after, n.name)] == []


def test_instance_id_survives_token_rotation_and_follows_generation(tmp_path: Path) -> None:
    base, _ = _plans("ha")
    plan = parse_plan(base)
    state_dir = tmp_path / "state"
    first = render_cluster(plan, ensure_state(state_dir, plan))
    rotate_token(state_dir)
    rotated = render_cluster(plan, ensure_state(state_dir, plan))
    worker = plan.kubernetes_nodes[-1].name
    assert first[f"nodes/{worker}/user-data"].data != rotated[f"nodes/{worker}/user-data"].data
    assert all(_instance_id(first, n.name) == _instance_id(rotated, n.name) for n in plan.nodes)
    bumped = copy.deepcopy(base)
    next(n for n in bumped["nodes"] if n["name"] == worker)["generation"] = 2
    regen = render_cluster(parse_plan(bumped), ensure_state(state_dir, plan))
    assert [n.name for n in plan.nodes if _instance_id(rotated, n.name) != _instance_id(regen, n.name)] == [worker]


def test_instance_ids_differ_between_clusters(tmp_path: Path) -> None:
    base, _ = _plans("ha")
    plan = parse_plan(base)
    a = render_cluster(plan, ensure_state(tmp_path / "a", plan))
    b = render_cluster(plan, ensure_state(tmp_path / "b", plan))
    assert _instance_id(a, "cp-1") != _instance_id(b, "cp-1")
