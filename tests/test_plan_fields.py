"""The plan's field table (imagegen.plan.fields) against the model, the parser and the README it documents."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from imagegen.errors import PlanError
from imagegen.plan import fields, parse_plan
from imagegen.plan.fields import FIELDS, MODELS, NOT_FROM_PLAN, SECTIONS

ROOT = Path(__file__).resolve().parents[1]

MINIMAL: dict[str, Any] = {
    "cluster": {"name": "defaults", "kubernetes_version": "1.34.0",
                "mirrors": {"quay.io": {"endpoints": ["https://mirror.example.internal"]}},
                "distro_mirror": {"url": "http://mirror.example.internal/debian/"}},
    "endpoint": {"mode": "single"},
    "network": {"cidr": "192.168.10.0/24", "gateway": "192.168.10.1"},
    "nodes": [{"name": "cp-1", "role": "control-plane", "ip": "192.168.10.11", "mac": "52:54:00:00:00:11"}],
    "registry": {"hostname": "registry.example.internal"},
}


def _minimal() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL)


def _section_data(data: dict[str, Any], section: str) -> dict[str, Any]:
    """The mapping in `data` that holds `section`'s keys (created if the minimal plan leaves it out)."""
    if section == "":
        return data
    if section == "nodes[]":
        node: dict[str, Any] = data["nodes"][0]
        return node
    if section == "cluster.mirrors.*":
        mirror: dict[str, Any] = data["cluster"]["mirrors"]["quay.io"]
        return mirror
    parent, _, key = section.rpartition(".")
    holder = _section_data(data, parent)
    found: dict[str, Any] = holder.setdefault(key, {})
    return found


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(PlanError) as err:
        parse_plan(data)
    return [str(p) for p in err.value.problems]


def _concrete(path: str) -> str:
    return path.replace("nodes[]", "nodes[0]").replace("cluster.mirrors.*", "cluster.mirrors.quay.io")


def test_every_model_attribute_has_a_row_and_every_row_an_attribute() -> None:
    assert set(MODELS) == set(SECTIONS)
    for section, model in MODELS.items():
        attributes = {f.name for f in dataclasses.fields(model)} - set(NOT_FROM_PLAN.get(section, ()))
        keys = {f.key for f in SECTIONS[section]}
        assert attributes == keys, (f"section {section or '(top)'}: model {model.__name__} and fields.FIELDS differ: "
                                    f"only in the model {sorted(attributes - keys)}, "
                                    f"only in the table {sorted(keys - attributes)}")


def test_every_nested_section_has_rows() -> None:
    for f in FIELDS:
        if isinstance(f.type, fields.Section):
            assert SECTIONS.get(f.type.name), f"{f.path} names section {f.type.name}, which has no rows"


def test_table_defaults_are_what_the_parser_gives() -> None:
    plan = parse_plan(_minimal())
    objects: dict[str, Any] = {"": plan, "cluster": plan.cluster, "cluster.docker": plan.cluster.docker,
                               "cluster.mirrors.*": plan.cluster.mirror_for("quay.io"),
                               "cluster.distro_mirror": plan.cluster.distro_mirror, "endpoint": plan.endpoint,
                               "network": plan.network, "nodes[]": plan.nodes[0], "registry": plan.registry,
                               "bundle": plan.bundle, "bootstrap": plan.bootstrap}
    checked = 0
    for f in FIELDS:
        if f.required or isinstance(f.type, fields.Section) or f.path in ("endpoint.name", "endpoint.vip"):
            continue
        parsed = getattr(objects[f.section], f.key)
        if f.path == "cluster.mirrors" or f.default_from is not None:
            continue  # mirrors: the test's own; derived defaults: checked below
        assert parsed == f.default, f.path
        checked += 1
    assert checked > 40
    assert plan.cluster.package_repository == "https://pkgs.k8s.io/core:/stable:/v1.34/deb/"
    assert plan.cluster.cni_manifest.endswith("/calico.yaml") and plan.endpoint.name == "defaults-api"
    assert plan.registry is not None and plan.registry.harbor_installer.endswith("harbor-offline-installer-v2.11.1.tgz")


@pytest.mark.parametrize("f", [f for f in FIELDS if f.required], ids=lambda f: f.path)
def test_every_required_field_is_reported_missing(f: fields.Field) -> None:
    data = _minimal()
    _section_data(data, f.section).pop(f.key)
    assert f"{_concrete(f.path)}: is required; add it" in _problems(data)


@pytest.mark.parametrize("section", list(SECTIONS), ids=lambda s: s or "top")
def test_every_section_refuses_unknown_keys(section: str) -> None:
    data = _minimal()
    _section_data(data, section)["colour"] = "blue"
    path = _concrete(f"{section}.colour" if section else "colour")
    assert any(p.startswith(f"{path}: unknown key") for p in _problems(data))


@pytest.mark.parametrize("f", [f for f in FIELDS if fields.choices(f) and isinstance(f.type, fields.Choice)],
                         ids=lambda f: f.path)
def test_every_choice_is_checked_against_its_enum(f: fields.Field) -> None:
    data = _minimal()
    first = fields.choices(f)[0]
    _section_data(data, f.section)[f.key] = first.upper() + "x"
    problems = _problems(data)
    assert any(p.startswith(f"{_concrete(f.path)}: must be one of {', '.join(fields.choices(f))}") for p in problems)


def test_tuple_constants_are_views_of_the_enums() -> None:
    from imagegen import plan

    assert plan.ROLES == ("control-plane", "worker", "load-balancer", "registry")
    assert plan.plan_constants()["cluster.cni"] == plan.CNIS == tuple(plan.Cni)
    assert plan.Cni.HOST_GW == "host-gw" and f"{plan.Role.WORKER}" == "worker"


def test_readme_plan_reference_is_generated() -> None:
    readme = (ROOT / fields.README).read_text()
    assert fields.README_BEGIN in readme and fields.README_END in readme
    assert fields.readme_with_reference(readme) == readme, (
        "README.md's plan reference differs from imagegen/plan/fields.py: run `python -m imagegen.plan --readme`")
