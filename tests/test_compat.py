"""Version pairs as data (profiles/compat/version-pairs.yaml, from containerd's RELEASES.md and Calico's tested
Kubernetes versions): the rules, and what each example plan is warned about."""

from __future__ import annotations

import pytest

from imagegen.compat import calico_problem, compat_problems, containerd_problem, pair_problems, version_pairs
from imagegen.plan import parse_plan
from imagegen.versions import MAX_MINOR, MIN_MINOR


def test_table_covers_every_supported_minor() -> None:
    rows = version_pairs()["containerd"]["recommended"]
    assert set(rows) == {f"1.{m}" for m in range(MIN_MINOR, MAX_MINOR + 1)}


@pytest.mark.parametrize("minor,containerd,ok", [
    ("1.20", "1.6.20", True),  # a series newer than the row knows is not judged
    ("1.28", "1.6.20", True), ("1.29", "1.6.20", False), ("1.29", "1.6.27", True),
    ("1.30", "1.6.20", False), ("1.31", "1.7.20", True), ("1.31", "1.7.19", False),
    ("1.32", "1.6.40", False), ("1.34", "2.1.4", True), ("1.34", "1.7.24", True), ("1.30", "1.5.18", False)])
def test_containerd_pairs(minor: str, containerd: str, ok: bool) -> None:
    problem = containerd_problem(minor, containerd)
    assert (problem is None) is ok, problem


@pytest.mark.parametrize("minor,ok", [("1.27", True), ("1.30", True), ("1.31", False), ("1.34", False)])
def test_calico_3_28_range(minor: str, ok: bool) -> None:
    assert (calico_problem(minor, "3.28.2") is None) is ok


def test_debian_12_containerd_warns_from_1_29(base_plan: dict) -> None:
    base_plan["cluster"].update(distro="debian-12", kubernetes_version="1.30.6", cni="flannel")
    base_plan["cluster"].pop("cni_manifest", None)
    (problem,) = compat_problems(parse_plan(base_plan))
    field, value, message, fix = problem
    assert field == "cluster.distro" and value == "debian-12" and "1.6.20" in message and fix


def test_default_calico_on_1_34_warns(base_plan: dict) -> None:
    problems = compat_problems(parse_plan(base_plan))  # examples/ha.yaml: 1.34 with the default Calico v3.28
    assert [p[0] for p in problems] == ["cluster.cni_manifest"]


def test_supported_pairs_are_quiet() -> None:
    assert pair_problems("1.28", "containerd", "debian-12", "calico",
                         "https://raw.githubusercontent.com/projectcalico/calico/v3.28.2/manifests/calico.yaml") == []
    assert pair_problems("1.34", "containerd", "ubuntu-24.04", "flannel", "x") == []
    assert pair_problems("1.34", "docker", "debian-12", "host-gw", "") == []


def test_cli_prints_version_pair_warnings_and_still_succeeds(capsys) -> None:
    from imagegen.cli import main

    from .conftest import ROOT

    assert main(["validate", str(ROOT / "examples" / "ha.yaml")]) == 0
    err = capsys.readouterr().err
    assert "imagegen: warning: cluster.cni_manifest: Calico v3.28.2 is tested with Kubernetes 1.27 to 1.30" in err
