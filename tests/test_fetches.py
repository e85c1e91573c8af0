"""`imagegen show PLAN --urls` (every URL and image a node fetches, by role, with the mirror serving each image) and
`imagegen sizes OUT` (user-data sizes per node and the platforms each fits)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from imagegen.cli import main
from imagegen.fetches import fetches_by_role
from imagegen.plan import parse_plan

from .conftest import ROOT


def _show(capsys: pytest.CaptureFixture[str], plan: Path | str, *flags: str) -> str:
    assert main(["show", str(plan), "--urls", *flags]) == 0
    return capsys.readouterr().out


def _role(data: dict, role: str) -> dict:
    return next(r for r in data["roles"] if r["role"] == role)


def test_urls_json_by_role(capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(_show(capsys, ROOT / "examples" / "ha.yaml", "-o", "json"))
    assert [r["role"] for r in data["roles"]] == ["control-plane", "worker", "load-balancer", "registry"]
    cp = {f["target"]: f for f in _role(data, "control-plane")["fetches"]}
    assert cp["https://pkgs.k8s.io/core:/stable:/v1.34/deb/"]["kind"] == "package-repository"
    assert cp["https://pkgs.k8s.io/core:/stable:/v1.34/deb/Release.key"]["kind"] == "signing-key"
    manifest = "https://raw.githubusercontent.com/projectcalico/calico/v3.28.2/manifests/calico.yaml"
    by_kind = {(f["kind"], f["target"]): f for f in _role(data, "control-plane")["fetches"]}
    assert by_kind["file", manifest]["nodes"] == ["cp-1"]
    assert by_kind["images", manifest]["nodes"] == "all"
    api = cp["registry.k8s.io/kube-apiserver:v1.34.2"]
    # Harbor's proxy cache (registry.use_as_mirror) serves registry.k8s.io, the registry itself last.
    assert api["mirrors"] == ["https://harbor.example.internal/v2/k8s", "registry.k8s.io"] and api["nodes"] == "all"
    workers = {f["target"] for f in _role(data, "worker")["fetches"]}
    assert "registry.k8s.io/kube-apiserver:v1.34.2" not in workers and "registry.k8s.io/kube-proxy:v1.34.2" in workers
    registry = {f["kind"]: f["target"] for f in _role(data, "registry")["fetches"]}
    assert registry["file"].endswith("harbor-offline-installer-v2.11.1.tgz")


def test_urls_follow_the_plan_mirrors(base_plan: dict) -> None:
    data = copy.deepcopy(base_plan)
    data["endpoint"] = {"mode": "kube-vip", "vip": "192.168.10.10", "name": "k8s-api.example.internal"}
    data["nodes"] = [n for n in data["nodes"] if n["role"] != "load-balancer"]
    data["cluster"]["mirrors"] = {"ghcr.io": {"endpoints": ["https://ghcr-mirror.example.internal"]}}
    got = fetches_by_role(parse_plan(data))
    cp = {f["target"]: f for f in _role(got, "control-plane")["fetches"]}
    assert cp["ghcr.io/kube-vip/kube-vip:v0.8.9"]["mirrors"] == ["https://ghcr-mirror.example.internal", "ghcr.io"]
    assert cp["ghcr.io/kube-vip/kube-vip:v0.8.9"]["purpose"] == "kube-vip"


def test_urls_docker_cri_dockerd_package(capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(_show(capsys, ROOT / "tests" / "plans" / "k8s-1.28-docker.yaml", "-o", "json"))
    kinds = {f["kind"]: f for f in _role(data, "worker")["fetches"]}
    assert kinds["package"]["target"].startswith("https://github.com/Mirantis/cri-dockerd/releases/download/")


def test_urls_text(capsys: pytest.CaptureFixture[str]) -> None:
    text = _show(capsys, ROOT / "examples" / "ha.yaml")
    assert "control-plane (cp-1, cp-2, cp-3):" in text
    assert "from https://harbor.example.internal/v2/k8s -> registry.k8s.io" in text


def test_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["render", str(ROOT / "examples" / "ha.yaml"), "--out", str(out), "--state", str(tmp_path / "s"),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sizes", str(out), "-o", "json"]) == 0
    nodes = {n["name"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    cp = nodes["cp-1"]
    assert cp["raw"] == (out / "nodes/cp-1/user-data").stat().st_size
    assert cp["gzip"] == (out / "nodes/cp-1/user-data.gz").stat().st_size
    assert cp["platforms"]["openstack"]["fits"] in ("raw", "gzip")
    assert main(["sizes", str(out)]) == 0
    assert "OPENSTACK" in capsys.readouterr().out
    assert main(["sizes", str(tmp_path)]) == 2

