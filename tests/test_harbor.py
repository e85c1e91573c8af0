"""Harbor's harbor.yml against the key set of the pinned Harbor version (upstream facts kept as test data)."""

from __future__ import annotations

import json

import pytest
import yaml

from .conftest import ROOT, Rendered

DATA = ROOT / "tests" / "data"


def _paths(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict):
            out |= _paths(value, path + ".")
    return out


def test_harbor_yml_has_every_key_of_harbor_v2_11(rendered: dict[str, Rendered]) -> None:
    """tests/data/harbor-v2.11-keys.json: the keys Harbor v2.11.0's migrator writes (its harbor.yml.tmpl's active
    keys). prepare reads some by direct index and crashes without them (jobservice.job_loggers ...)."""
    facts = json.loads((DATA / "harbor-v2.11-keys.json").read_text())
    r = rendered["ha"]
    assert r.plan.registry.harbor_version.lstrip("v").startswith(facts["harbor_version"] + ".")
    harbor = yaml.safe_load(r.file("harbor", "/etc/imagegen/harbor/harbor.yml"))
    missing = sorted(set(facts["keys"]) - _paths(harbor))
    assert not missing, missing
    assert harbor["jobservice"]["job_loggers"] == ["STD_OUTPUT", "FILE"]
    assert isinstance(harbor["notification"]["webhook_job_http_client_timeout"], int)
    assert str(harbor["_version"]).startswith("2.11")


@pytest.mark.parametrize("key", ["jobservice.job_loggers", "jobservice.logger_sweeper_duration",
                                 "notification.webhook_job_http_client_timeout"])
def test_key_set_names_what_prepare_indexes(key: str) -> None:
    assert key in json.loads((DATA / "harbor-v2.11-keys.json").read_text())["keys"]


def test_harbor_installer_download_is_bounded(rendered: dict[str, Rendered]) -> None:
    script = rendered["ha"].file("harbor", "/usr/local/lib/imagegen/harbor-install.sh")
    assert "--max-time" in script and "--retry" in script
