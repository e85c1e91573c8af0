"""bootstrap.env is NodeFacts serialised by code: bash reads back exactly the values, and every key is read."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace

import pytest

from imagegen.nodefacts import NodeFacts, env_items, to_env
from imagegen.plan import parse_plan
from imagegen.profiles import load_profile
from imagegen.render import node_context
from tests.conftest import Rendered, plan_ids

SHELL_FILES = re.compile(r"/usr/local/lib/imagegen/.*\.sh$")


def _facts(r: Rendered, name: str) -> NodeFacts:
    node = r.plan.node(name)
    return node_context(r.plan, node, r.state, load_profile(node.role))["facts"]


def _bash_env(env: bytes, names: list[str]) -> dict[str, str]:
    """Source the file with bash and print each variable NUL-separated: what the node program will see."""
    script = 'set -eu; . /dev/stdin; for n in "$@"; do printf "%s\\0" "${!n}"; done'
    out = subprocess.run(["bash", "-c", script, "bash", *names], input=env, capture_output=True, check=True).stdout
    return dict(zip(names, out.decode().split("\0")[:-1], strict=True))


@pytest.mark.parametrize("plan_id", plan_ids())
def test_bash_reads_back_every_value(rendered: dict[str, Rendered], plan_id: str) -> None:
    r = rendered[plan_id]
    for node in r.plan.nodes:
        env = r.file(node.name, "/etc/imagegen/bootstrap.env").encode()
        expected = dict(env_items(_facts(r, node.name)))
        assert _bash_env(env, list(expected)) == expected


def test_hostile_values_stay_strings(tmp_path) -> None:
    """Quoting does not rely on validation: a value with shell syntax is still just a string."""
    facts = NodeFacts(node_name="n", node_role="worker", steps=("prepare",), deadline_seconds=60, packages=())
    marker = tmp_path / "pwned"
    evil = f'x";touch {marker};"$(touch {marker})`touch {marker}`\'\n{marker}'
    facts = replace(facts, node_name=evil, packages=(evil, "b"))
    values = _bash_env(to_env(facts), ["NODE_NAME", "PACKAGES"])
    assert values == {"NODE_NAME": evil, "PACKAGES": f"{evil} b"}
    assert not marker.exists()


@pytest.mark.parametrize("plan_id", plan_ids())
def test_every_key_is_read_by_the_node_program(rendered: dict[str, Rendered], plan_id: str) -> None:
    r = rendered[plan_id]
    for node in r.plan.nodes:
        files = r.files(node.name)
        scripts = "\n".join(f["content"] for path, f in files.items() if SHELL_FILES.match(path))
        for key, _ in env_items(_facts(r, node.name)):
            assert re.search(rf"\$\{{?{key}\b|\(\(.*\b{key}\b|\$\(\(.*\b{key}\b", scripts), \
                f"{plan_id}/{node.name}: {key} is in bootstrap.env but no script of the node reads it"


def test_load_balancer_gets_no_kubernetes_facts(base_plan: dict) -> None:
    from imagegen.nodefacts import node_facts

    plan = parse_plan(base_plan)
    lb = plan.load_balancers[0]
    keys = [k for k, _ in env_items(node_facts(plan, lb, ("prepare",), ()))]
    assert "KUBERNETES_VERSION" not in keys and "CNI_MANIFEST" not in keys
