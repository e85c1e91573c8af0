"""One test per validation rule: the problem names the field, shows the value, says what would be right."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from imagegen.cli import main
from imagegen.errors import PlanError
from imagegen.plan import parse_plan, parse_plan_text

Mutation = Callable[[dict], None]


def node(d: dict, i: int) -> dict:
    return d["nodes"][i]


# (id, mutation, field, text expected in the message)
CASES: list[tuple[str, Mutation, str, str]] = [
    ("unknown-top-key", lambda d: d.update(clustr={}), "clustr", "did you mean 'cluster'"),
    ("unknown-cluster-key", lambda d: d["cluster"].update(kubernetes_verison="1.34.2"),
     "cluster.kubernetes_verison", "did you mean 'kubernetes_version'"),
    ("unknown-node-key", lambda d: node(d, 0).update(roel="worker"), "nodes[0].roel", "did you mean 'role'"),
    ("missing-cluster-name", lambda d: d["cluster"].pop("name"), "cluster.name", "is required"),
    ("missing-network", lambda d: d.pop("network"), "network", "is required"),
    ("missing-node-ip", lambda d: node(d, 2).pop("ip"), "nodes[2].ip", "is required"),
    ("bad-ip", lambda d: node(d, 3).update(ip="192.168.10.300"), "nodes[3].ip", "not a valid IP"),
    ("non-canonical-ip", lambda d: node(d, 3).update(ip="192.168.010.12"), "nodes[3].ip", "not a valid IP"),
    ("ip-not-string", lambda d: node(d, 3).update(ip=12), "nodes[3].ip", "IPv4 address written as a string"),
    ("ipv6-node", lambda d: node(d, 3).update(ip="fd00::12"), "nodes[3].ip", "IPv6"),
    ("bad-cidr", lambda d: d["network"].update(cidr="192.168.10.0/33"), "network.cidr", "not a valid CIDR"),
    ("non-canonical-cidr", lambda d: d["cluster"].update(pod_cidr="10.244.1.0/16"), "cluster.pod_cidr",
     "write '10.244.0.0/16'"),
    ("bad-mac", lambda d: node(d, 0).update(mac="52:54:00:zz:00:02"), "nodes[0].mac", "not a valid MAC"),
    ("non-canonical-mac", lambda d: node(d, 0).update(mac="52-54-00-10-00-02"), "nodes[0].mac",
     "write '52:54:00:10:00:02'"),
    ("multicast-mac", lambda d: node(d, 0).update(mac="01:54:00:10:00:02"), "nodes[0].mac", "multicast"),
    ("bad-version", lambda d: d["cluster"].update(kubernetes_version="1.34"), "cluster.kubernetes_version",
     "not a Kubernetes version"),
    ("v-prefixed-version", lambda d: d["cluster"].update(kubernetes_version="v1.34.2"),
     "cluster.kubernetes_version", "write '1.34.2'"),
    ("unsupported-old-version", lambda d: d["cluster"].update(kubernetes_version="1.19.16"),
     "cluster.kubernetes_version", "supports 1.20.0 to 1.34.x"),
    ("unsupported-new-version", lambda d: d["cluster"].update(kubernetes_version="1.35.0"),
     "cluster.kubernetes_version", "supports 1.20.0 to 1.34.x"),
    ("upper-case-hostname", lambda d: node(d, 2).update(name="CP-1"), "nodes[2].name", "write 'cp-1'"),
    ("hostname-underscore", lambda d: node(d, 2).update(name="cp_1"), "nodes[2].name", "RFC 1123"),
    ("hostname-too-long", lambda d: node(d, 2).update(name="c" * 64), "nodes[2].name", "longer than 63"),
    ("duplicate-name", lambda d: node(d, 3).update(name="cp-1"), "nodes[3].name", "duplicates nodes[2].name"),
    ("duplicate-ip", lambda d: node(d, 3).update(ip="192.168.10.11"), "nodes[3].ip", "duplicates nodes[2].ip"),
    ("duplicate-mac", lambda d: node(d, 3).update(mac="52:54:00:10:00:11"), "nodes[3].mac",
     "duplicates nodes[2].mac"),
    ("node-outside-network", lambda d: node(d, 5).update(ip="192.168.11.21"), "nodes[5].ip",
     "outside network.cidr"),
    ("gateway-outside-network", lambda d: d["network"].update(gateway="192.168.11.1"), "network.gateway",
     "outside network.cidr"),
    ("vip-outside-network", lambda d: d["endpoint"].update(vip="10.0.0.10"), "endpoint.vip", "outside network.cidr"),
    ("vip-equals-node", lambda d: d["endpoint"].update(vip="192.168.10.11"), "endpoint.vip", "equals nodes[2].ip"),
    ("vip-equals-gateway", lambda d: d["endpoint"].update(vip="192.168.10.1"), "endpoint.vip",
     "equals network.gateway"),
    ("node-is-gateway", lambda d: node(d, 5).update(ip="192.168.10.1"), "nodes[5].ip", "equals network.gateway"),
    ("pod-overlaps-service", lambda d: d["cluster"].update(pod_cidr="10.96.0.0/16"), "cluster.pod_cidr",
     "overlaps cluster.service_cidr"),
    ("pod-overlaps-nodes", lambda d: d["cluster"].update(pod_cidr="192.168.0.0/16"), "cluster.pod_cidr",
     "overlaps network.cidr"),
    ("service-overlaps-nodes", lambda d: d["cluster"].update(service_cidr="192.168.10.0/24"),
     "cluster.service_cidr", "overlaps network.cidr"),
    ("no-control-plane", lambda d: [n.update(role="worker") for n in d["nodes"] if n["role"] == "control-plane"],
     "nodes", "no control-plane node"),
    ("single-with-three-cps", lambda d: (d["endpoint"].update(mode="single"), d["endpoint"].pop("vip"),
                                         d.__setitem__("nodes", [n for n in d["nodes"]
                                                                 if n["role"] != "load-balancer"])),
     "endpoint.mode", "'single' allows one control plane"),
    ("lb-mode-without-lbs", lambda d: d.__setitem__("nodes", [n for n in d["nodes"] if n["role"] != "load-balancer"]),
     "endpoint.mode", "needs at least one node with role load-balancer"),
    ("lb-mode-without-vip", lambda d: d["endpoint"].pop("vip"), "endpoint.vip",
     "required with endpoint.mode 'load-balancer'"),
    ("kube-vip-without-vip", lambda d: (d["endpoint"].update(mode="kube-vip"), d["endpoint"].pop("vip"),
                                        d.__setitem__("nodes", [n for n in d["nodes"]
                                                                if n["role"] != "load-balancer"])),
     "endpoint.vip", "required with endpoint.mode 'kube-vip'"),
    ("registry-without-hostname", lambda d: d.pop("registry"), "registry.hostname",
     "required because nodes[7] has role registry"),
    ("port-out-of-range", lambda d: d["endpoint"].update(port=70000), "endpoint.port", "from 1 to 65535"),
    ("port-zero", lambda d: d["endpoint"].update(port=0), "endpoint.port", "from 1 to 65535"),
    ("docker-without-cri-dockerd", lambda d: d["cluster"].update(container_runtime="docker"),
     "cluster.container_runtime", "no dockershim"),
    ("cri-dockerd-with-containerd", lambda d: d["cluster"].update(cri_dockerd=True), "cluster.cri_dockerd",
     "only applies with container_runtime docker"),
    ("old-version-online-without-mirror", lambda d: d["cluster"].update(kubernetes_version="1.22.17"),
     "cluster.kubernetes_version", "no packages on pkgs.k8s.io"),
    ("bad-role", lambda d: node(d, 5).update(role="wroker"), "nodes[5].role", "did you mean 'worker'"),
    ("bad-runtime", lambda d: d["cluster"].update(container_runtime="cri-o"), "cluster.container_runtime",
     "must be one of containerd, docker"),
    ("tcp-tw-recycle", lambda d: d["cluster"].update(sysctl={"net.ipv4.tcp_tw_recycle": 1}),
     "cluster.sysctl.net.ipv4.tcp_tw_recycle", "removed from Linux 4.12"),
    ("bad-journald-key", lambda d: d["cluster"].update(journald={"SystemMaxUsage": "1G"}),
     "cluster.journald.SystemMaxUsage", "did you mean 'SystemMaxUse'"),
    ("bad-ssh-key", lambda d: d.update(ssh_authorized_keys=["not a key"]), "ssh_authorized_keys[0]",
     "not an OpenSSH public key"),
    ("bad-token-ttl", lambda d: d["cluster"].update(token_ttl="tomorrow"), "cluster.token_ttl", "duration"),
    ("lb-nodes-with-kube-vip", lambda d: d["endpoint"].update(mode="kube-vip"), "nodes[0].role",
     "unused with endpoint.mode 'kube-vip'"),
    ("bad-component", lambda d: d["cluster"].update(component_args={"controller-manger": {"v": 2}}),
     "cluster.component_args.controller-manger", "did you mean 'controller-manager'"),
    ("bad-component-flag", lambda d: d["cluster"].update(component_args={"scheduler": {"--v": 2}}),
     "cluster.component_args.scheduler.--v", "without the leading --"),
    ("mirror-without-registry-node", lambda d: d.__setitem__("nodes", [n for n in d["nodes"]
                                                                       if n["role"] != "registry"]),
     "registry.use_as_mirror", "needs a node with role registry"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rule(base_plan: dict, case: tuple[str, Mutation, str, str]) -> None:
    _, mutate, field, text = case
    data = copy.deepcopy(base_plan)
    parse_plan(copy.deepcopy(data))  # the base plan itself is valid
    mutate(data)
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    matches = [p for p in info.value.problems if p.field == field and text in str(p)]
    assert matches, f"no problem on {field} mentioning {text!r}; got:\n{info.value.render()}"


def test_all_problems_reported_at_once(base_plan: dict) -> None:
    node(base_plan, 0)["mac"] = "bad"
    node(base_plan, 3)["ip"] = "192.168.10.11"
    base_plan["endpoint"]["port"] = 0
    base_plan["cluster"]["cni"] = "weave"
    with pytest.raises(PlanError) as info:
        parse_plan(base_plan)
    fields = {p.field for p in info.value.problems}
    assert {"nodes[0].mac", "endpoint.port", "cluster.cni"} <= fields
    assert len(info.value.problems) >= 3


@pytest.mark.parametrize("text,expected", [
    ("cluster: [unclosed", "YAML syntax error at line"),
    ("- just\n- a list\n", "not a mapping"),
    ("", "empty"),
    ("just a string", "str, not a mapping"),
])
def test_yaml_errors(text: str, expected: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan_text(text)
    assert expected in info.value.render()


def test_message_names_field_value_and_fix(base_plan: dict) -> None:
    node(base_plan, 3)["ip"] = "192.168.11.12"
    with pytest.raises(PlanError) as info:
        parse_plan(base_plan)
    text = info.value.render()
    assert "nodes[3].ip" in text and "'192.168.11.12'" in text and "use an address inside 192.168.10.0/24" in text


def test_cli_bad_plan_exit_2_and_nothing_written(tmp_path: Path, base_plan: dict,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    node(base_plan, 1)["name"] = "LB_2"
    plan = tmp_path / "bad.yaml"
    plan.write_text(yaml.safe_dump(base_plan))
    out, state = tmp_path / "out", tmp_path / "state"
    for argv in (["validate", str(plan)], ["show", str(plan)],
                 ["render", str(plan), "--out", str(out), "--state", str(state)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "nodes[1].name" in err and "'LB_2'" in err
    assert not out.exists() and not state.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_cli_missing_plan_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_defaults(base_plan: dict) -> None:
    for key in ("container_runtime", "kube_proxy_mode", "cni"):
        base_plan["cluster"].pop(key, None)
    plan = parse_plan(base_plan)
    c = plan.cluster
    assert str(c.pod_cidr) == "10.244.0.0/16" and str(c.service_cidr) == "10.96.0.0/12"
    assert c.dns_domain == "cluster.local" and c.kube_proxy_mode == "ipvs" and c.container_runtime == "containerd"
    assert c.image_repository == "registry.k8s.io"
    assert c.package_repository == "https://pkgs.k8s.io/core:/stable:/v1.34/deb/"
