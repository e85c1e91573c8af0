"""Shared fixtures: every example plan rendered once per session with a fresh state, and helpers to read
rendered nodes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from imagegen.plan import Plan, load_plan
from imagegen.render import Artifact, render_cluster
from imagegen.state import ClusterState, ensure_state

ROOT = Path(__file__).resolve().parent.parent
PLANS = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("tests/plans/*.yaml")])
CACHE = Path(os.environ.get("IMAGEGEN_CACHE", Path.home() / ".cache" / "imagegen"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate", action="store_true", help="rewrite golden files from the current output")


@dataclass
class Rendered:
    plan: Plan
    state: ClusterState
    artifacts: dict[str, Artifact]

    def user_data(self, node: str) -> dict:
        return yaml.safe_load(self.artifacts[f"nodes/{node}/user-data"].data)

    def files(self, node: str) -> dict[str, dict]:
        return {f["path"]: f for f in self.user_data(node)["write_files"]}

    def file(self, node: str, path: str) -> str:
        return self.files(node)[path]["content"]

    def program(self, node: str, *names: str) -> str:
        """The node program's files by short name ('lib', 'runtime', 'parts/bundle', 'steps/join_worker'), joined
        in the order given; every name must be one this node received."""
        return "\n".join(self.file(node, f"/usr/local/lib/imagegen/{name}.sh") for name in names)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    out: dict[str, Rendered] = {}
    for path in PLANS:
        plan = load_plan(path)
        state = ensure_state(tmp_path_factory.mktemp(f"state-{path.stem}"), plan)
        out[path.stem] = Rendered(plan, state, render_cluster(plan, state))
    return out


def plan_ids() -> list[str]:
    return [p.stem for p in PLANS]


def cloud_init_root(suite: str) -> Path:
    return CACHE / "cloud-init" / suite / "root" / "usr" / "lib" / "python3" / "dist-packages"


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        pytest.fail(f"{name} is not installed: run `make deps` (tools/install-test-deps.sh)")
    return path


@pytest.fixture
def materialize(tmp_path: Path):
    """Write one node's write_files under a temporary root, as cloud-init would on the node."""

    def _do(r: Rendered, node: str) -> Path:
        root = tmp_path / node
        for f in r.user_data(node)["write_files"]:
            p = root / f["path"].lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f["content"])
            p.chmod(int(f["permissions"], 8))
        return root

    return _do


@pytest.fixture
def base_plan() -> Iterator[dict]:
    yield yaml.safe_load((ROOT / "examples" / "ha.yaml").read_text())
