"""The run's own copy of the plan (with its SSH key) and `imagegen render` of it, as an operator would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from harness.session import Failed

REPO = Path(__file__).resolve().parents[2]


def derive_plan(plan_path: Path, run_dir: Path, pubkey: str, cluster: dict[str, str] | None = None) -> Path:
    """Copy of the plan with this run's SSH key added and `cluster` keys overridden (a suite's own settings, e.g.
    day 2's short token and certificate lifetimes); the original plan is never touched."""
    data = yaml.safe_load(plan_path.read_text())
    data["ssh_authorized_keys"] = [*(data.get("ssh_authorized_keys") or []), pubkey]
    data["cluster"] = {**data.get("cluster", {}), **(cluster or {})}
    derived = run_dir / "plan.yaml"
    changed = "".join(f", cluster.{k}: {v}" for k, v in (cluster or {}).items())
    derived.write_text(f"# derived from {plan_path} by vm-tests/harness/render.py: adds this run's SSH key{changed}\n"
                       + yaml.safe_dump(data, sort_keys=False))
    return derived


def render(plan: Path, run_dir: Path) -> Path:
    """`imagegen render` into run_dir/render with the run's state in run_dir/state; its output in render.log."""
    out = run_dir / "render"
    cmd = [sys.executable, "-m", "imagegen", "render", str(plan), "--out", str(out), "--state",
           str(run_dir / "state")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    (run_dir / "render.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise Failed(f"imagegen render failed ({done.returncode}): {(done.stdout + done.stderr).strip()[-800:]}")
    return out
