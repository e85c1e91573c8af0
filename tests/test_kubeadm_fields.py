"""Every rendered kubeadm document against the field names of upstream kubeadm's types.go for its API generation
(upstream facts kept as test data in tests/data/kubeadm-types.json, with their references): a misspelled, moved or
removed field fails here, for the versions whose kubeadm cannot run on this machine. v1beta2 (1.20-1.21) is read by
the real kubeadm 1.20 in test_kubeadm_rules.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from imagegen.plan import parse_plan
from imagegen.render import render_cluster
from imagegen.state import ensure_state

from .conftest import ROOT, Rendered, plan_ids

FACTS = json.loads((ROOT / "tests" / "data" / "kubeadm-types.json").read_text())
KUBEADM_KINDS = {"InitConfiguration", "ClusterConfiguration", "JoinConfiguration"}


def unknown_fields(api: str, kind: str, doc: Any, path: str = "") -> list[str]:
    types = FACTS["types"][api]
    fields = types[kind]
    problems = []
    for key, value in doc.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            problems.append(f"{api} {where}: not a field of {kind}")
            continue
        nested = fields[key]
        if isinstance(nested, str) and isinstance(value, dict):
            problems += unknown_fields(api, nested, value, where)
        elif isinstance(nested, list) and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    problems += unknown_fields(api, nested[0], item, f"{where}[{i}]")
                else:
                    problems.append(f"{api} {where}[{i}]: expected an object of {nested[0]}")
        elif nested is not None:
            problems.append(f"{api} {where}: expected {nested}, got {type(value).__name__}")
    return problems


def _documents(r: Rendered) -> list[tuple[str, dict]]:
    docs = []
    for node in r.plan.kubernetes_nodes:
        for doc in yaml.safe_load_all(r.file(node.name, "/etc/imagegen/kubeadm.yaml")):
            if doc["kind"] in KUBEADM_KINDS:
                docs.append((node.name, doc))
    return docs


def _check(r: Rendered) -> int:
    checked = 0
    for node, doc in _documents(r):
        api = doc["apiVersion"]
        if api not in FACTS["types"]:
            assert api == "kubeadm.k8s.io/v1beta2"
            continue
        assert not unknown_fields(api, doc["kind"], doc), (node, unknown_fields(api, doc["kind"], doc))
        checked += 1
    return checked


@pytest.mark.parametrize("plan_id", plan_ids())
def test_rendered_kubeadm_fields_exist_upstream(rendered: dict[str, Rendered], plan_id: str) -> None:
    _check(rendered[plan_id])


@pytest.mark.parametrize("version", ["1.22.17", "1.30.6", "1.31.4", "1.33.1", "1.34.2"])
def test_every_generation_and_role(base_plan: dict, tmp_path, version: str) -> None:
    base_plan["cluster"].update(kubernetes_version=version,
                                component_args={"apiserver": {"audit-log-maxage": 30},
                                                "etcd": {"heartbeat-interval": "500"}},
                                etcd_image_tag="3.5.15-0", package_repository="https://mirror.example.internal/k8s/")
    plan = parse_plan(base_plan)
    state = ensure_state(tmp_path / "state", plan)
    r = Rendered(plan, state, render_cluster(plan, state))
    kinds = {doc["kind"] for _, doc in _documents(r)}
    assert kinds == KUBEADM_KINDS
    assert _check(r) == len(_documents(r))


@pytest.mark.parametrize("api,kind,doc,bad", [
    ("kubeadm.k8s.io/v1beta4", "JoinConfiguration", {"discovery": {"timeout": "5m0s"}}, "discovery.timeout"),
    ("kubeadm.k8s.io/v1beta3", "JoinConfiguration", {"timeouts": {"discovery": "5m0s"}}, "timeouts"),
    ("kubeadm.k8s.io/v1beta4", "ClusterConfiguration", {"apiServer": {"extraArgs": {"a": "b"}}},
     "apiServer.extraArgs"),
    ("kubeadm.k8s.io/v1beta3", "InitConfiguration", {"localAPIEndpoint": {"bindport": 6443}},
     "localAPIEndpoint.bindport"),
    ("kubeadm.k8s.io/v1beta4", "ClusterConfiguration", {"apiServer": {"timeoutForControlPlane": "4m"}},
     "apiServer.timeoutForControlPlane"),
])
def test_validator_catches_wrong_fields(api: str, kind: str, doc: dict, bad: str) -> None:
    problems = unknown_fields(api, kind, doc)
    assert problems and bad in problems[0]
