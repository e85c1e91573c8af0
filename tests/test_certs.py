"""`imagegen certs`: the state's certificates with their expiry, read without changing the state."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from imagegen.certs import state_expiries
from imagegen.cli import main
from imagegen.plan import load_plan

from .conftest import ROOT

PLAN = ROOT / "examples" / "ha.yaml"


def test_lists_every_certificate_soonest_first(tmp_path: Path) -> None:
    assert main(["render", str(PLAN), "--out", str(tmp_path / "out"), "--state", str(tmp_path / "s"), "--quiet"]) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file() and p.name != "state.lock"}
    items = state_expiries(tmp_path / "s", load_plan(PLAN))
    assert [c.name for c in items][:2] == ["admin.conf client certificate", "registry certificate"]
    assert {c.name for c in items} >= {"Kubernetes CA", "etcd CA", "front-proxy CA"}
    assert all(c.status == "ok" for c in items) and 360 <= items[0].days_left <= 365
    later = state_expiries(tmp_path / "s", load_plan(PLAN), now=dt.datetime.now(dt.UTC) + dt.timedelta(days=350))
    assert later[0].status == "renew soon"
    assert {p: p.read_bytes() for p in before} == before  # read only


def test_cli_json_and_missing_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", str(PLAN), "--state", str(tmp_path / "none")]) == 2
    assert "no imagegen state here" in capsys.readouterr().err
    assert main(["render", str(PLAN), "--out", str(tmp_path / "out"), "--state", str(tmp_path / "s"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["certs", str(PLAN), "--state", str(tmp_path / "s"), "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"certificate", "subject", "not_after", "days_left", "status"} <= set(data[0])
    assert data[0]["certificate"] == "admin.conf client certificate"
