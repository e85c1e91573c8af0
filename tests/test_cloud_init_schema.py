"""Every user-data and network-config through the real `cloud-init schema` of Debian bookworm (22.4) and
trixie (25.1), unpacked from Debian's packages by tools/install-test-deps.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Rendered, cloud_init_root, plan_ids

SUITES = ("bookworm", "trixie")


def _schema(suite: str, path: Path, schema_type: str | None = None) -> subprocess.CompletedProcess[str]:
    root = cloud_init_root(suite)
    if not (root / "cloudinit").is_dir():
        pytest.fail(f"cloud-init ({suite}) is not unpacked under {root}: run `make deps`")
    cmd = [sys.executable, "-m", "cloudinit.cmd.main", "schema", "--config-file", str(path)]
    if schema_type:
        cmd += ["--schema-type", schema_type]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("plan_id", plan_ids())
def test_user_data_valid(rendered: dict[str, Rendered], plan_id: str, suite: str, tmp_path: Path) -> None:
    r = rendered[plan_id]
    for node in r.plan.nodes:
        path = tmp_path / f"{node.name}.user-data"
        path.write_bytes(r.artifacts[f"nodes/{node.name}/user-data"].data)
        result = _schema(suite, path)
        assert result.returncode == 0 and "Valid" in result.stdout, (node.name, result.stdout, result.stderr)
        assert "deprecat" not in (result.stdout + result.stderr).lower(), (node.name, result.stdout)


@pytest.mark.parametrize("plan_id", plan_ids())
def test_network_config_valid_trixie(rendered: dict[str, Rendered], plan_id: str, tmp_path: Path) -> None:
    # cloud-init 22.4 has no network-config schema; 25.1 validates network-config v2.
    r = rendered[plan_id]
    for node in r.plan.nodes:
        path = tmp_path / f"{node.name}.network-config"
        path.write_bytes(r.artifacts[f"nodes/{node.name}/network-config"].data)
        result = _schema("trixie", path, "network-config")
        assert result.returncode == 0 and "Valid" in result.stdout, (node.name, result.stdout, result.stderr)


@pytest.mark.parametrize("suite", SUITES)
def test_validator_rejects_bad_user_data(suite: str, tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_text("#cloud-config\nwrite_files:\n  - path: /x\n    permissions: 644\nruncmd: 5\n")
    result = _schema(suite, path)
    assert result.returncode != 0


def test_validator_rejects_bad_network_config(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_text("version: 2\nethernets:\n  eth0:\n    addresses: 5\n    dhcp4: maybe\n")
    assert _schema("trixie", path, "network-config").returncode != 0
