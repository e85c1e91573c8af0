"""Hostile and careless plans (issue 10): every value that reaches a shell or a config file is checked at the edge,
patterns never accept a trailing newline, YAML tricks are refused quickly with one line, and plans that cannot
work are refused. Each case names the field and a piece of the expected message; the plan must be refused with
exit 2 and nothing written."""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from imagegen.cli import main
from imagegen.errors import PlanError
from imagegen.plan import parse_plan, parse_plan_text

Mutation = Callable[[dict], None]
C = "cluster"


def _set(section: str, **values: object) -> Mutation:
    return lambda d: d.setdefault(section, {}).update(values)


def _node(i: int, **values: object) -> Mutation:
    return lambda d: d["nodes"][i].update(values)


def _registry(**values: object) -> Mutation:
    def mutate(d: dict) -> None:
        d["registry"].update(values)
    return mutate


INJECTION: list[tuple[str, Mutation, str, str]] = [
    ("cni-manifest-quote", _set(C, cni_manifest='https://x/";touch /tmp/p;"'), "cluster.cni_manifest",
     "characters a URL may not carry"),
    ("cni-manifest-subshell", _set(C, cni_manifest="https://x/$(reboot)"), "cluster.cni_manifest", "characters"),
    ("cni-manifest-relative-path", _set(C, cni_manifest="calico.yaml"), "cluster.cni_manifest", "http/https URL"),
    ("cni-manifest-path-dotdot", _set(C, cni_manifest="/srv/../etc/shadow"), "cluster.cni_manifest",
     "normalised absolute path"),
    ("package-repository-quote", _set(C, package_repository='https://x/";touch /tmp/p;"'),
     "cluster.package_repository", "characters"),
    ("package-repository-backtick", _set(C, package_repository="https://x/`id`/"), "cluster.package_repository",
     "characters"),
    ("package-repository-userinfo", _set(C, package_repository="https://u:p@mirror/k8s/"),
     "cluster.package_repository", "no user:password@"),
    ("package-repository-ftp", _set(C, package_repository="ftp://mirror/k8s/"), "cluster.package_repository",
     "http/https URL"),
    ("harbor-installer-subshell", _registry(harbor_installer="$(reboot)"), "registry.harbor_installer",
     "characters"),
    ("harbor-installer-url-quote", _registry(harbor_installer="https://x/a'b.tgz"), "registry.harbor_installer",
     "characters"),
    ("data-volume-quote", _registry(data_volume='/data/"; reboot; "'), "registry.data_volume",
     "normalised absolute path"),
    ("data-volume-relative", _registry(data_volume="data/harbor"), "registry.data_volume", "absolute path"),
    ("harbor-version-newline", _registry(harbor_version="v2.11.1\nhostname: evil"), "registry.harbor_version",
     "not a Harbor release"),
    ("bundle-label-subshell", _set("bundle", label="$(reboot)"), "bundle.label", "ASCII letters"),
    ("bundle-label-multibyte", _set("bundle", label="bündel-ünd-ëxträ"), "bundle.label", "ASCII letters"),
    ("bundle-label-17-bytes", _set("bundle", label="a" * 17), "bundle.label", "17 bytes"),
    ("sysctl-value-newline", _set(C, sysctl={"vm.swappiness": "0\nkernel.core_pattern = |/tmp/x"}),
     "cluster.sysctl.vm.swappiness", "single-line value"),
    ("sysctl-value-pipe", _set(C, sysctl={"kernel.core_pattern": "|/tmp/x"}), "cluster.sysctl.kernel.core_pattern",
     "single-line value"),
    ("ntp-newline", _set(C, ntp_servers=["ntp.example\nFallbackNTP=evil"]), "cluster.ntp_servers[0]",
     "not a host name"),
    ("ntp-space", _set(C, ntp_servers=["a b"]), "cluster.ntp_servers[0]", "not a host name"),
    ("image-repository-quote", _set(C, image_repository='registry.example/k8s"]\n[x'), "cluster.image_repository",
     "not an image repository"),
    ("image-repository-trailing-slash", _set(C, image_repository="registry.k8s.io/"), "cluster.image_repository",
     "not an image repository"),
    ("registry-mirror-toml", _set(C, registry_mirrors=['https://m"]\n[host."https://evil']),
     "cluster.registry_mirrors[0]", "characters"),
    ("docker-mirror-quote", _set(C, docker={"registry_mirrors": ['https://m"x']}),
     "cluster.docker.registry_mirrors[0]", "characters"),
    ("docker-insecure-registry-space", _set(C, docker={"insecure_registries": ["a b"]}),
     "cluster.docker.insecure_registries[0]", "HOST[:PORT]"),
    ("docker-data-root-subshell", _set(C, docker={"data_root": "/var/$(id)"}), "cluster.docker.data_root",
     "normalised absolute path"),
    ("kube-vip-image-newline", _set(C, kube_vip_image="ghcr.io/kube-vip/kube-vip:v0.8.9\n"),
     "cluster.kube_vip_image", "not a container image"),
    ("etcd-image-tag-quote", _set(C, etcd_image_tag='3.5"'), "cluster.etcd_image_tag", "not an image tag"),
    ("preflight-newline", _set(C, ignore_preflight_errors=["NumCPU\nall"]), "cluster.ignore_preflight_errors[0]",
     "preflight check"),
    ("component-arg-newline", _set(C, component_args={"apiserver": {"v": "2\n--evil"}}),
     "cluster.component_args.apiserver.v", "printable ASCII"),
    ("ssh-key-newline", lambda d: d.update(ssh_authorized_keys=["ssh-ed25519 AAAA ops\nssh-rsa AAAA evil"]),
     "ssh_authorized_keys[0]", "not an OpenSSH public key"),
    ("timezone-path", _set(C, timezone="../../etc/passwd"), "cluster.timezone", "no paths"),
    ("timezone-absolute", _set(C, timezone="/etc/localtime"), "cluster.timezone", "no paths"),
    ("timezone-unknown", _set(C, timezone="Mars/Olympus_Mons"), "cluster.timezone", "not a known time zone"),
]

# One trailing-newline case per pattern: Python's `$` matches before a final "\n".
TRAILING_NEWLINE: list[tuple[str, Mutation, str]] = [
    ("node-name", _node(2, name="cp-1\n"), "nodes[2].name"),
    ("cluster-name", _set(C, name="prod\n"), "cluster.name"),
    ("interface", _set("network", interface="eth0\n"), "network.interface"),
    ("mac", _node(0, mac="52:54:00:10:00:02\n"), "nodes[0].mac"),
    ("endpoint-name", _set("endpoint", name="k8s-api.example.internal\n"), "endpoint.name"),
    ("dns-domain", _set(C, dns_domain="cluster.local\n"), "cluster.dns_domain"),
    ("admin-user", lambda d: d.update(admin_user="ops\n"), "admin_user"),
    ("registry-hostname", _registry(hostname="harbor.example.internal\n"), "registry.hostname"),
    ("token-ttl", _set(C, token_ttl="24h\n"), "cluster.token_ttl"),
    ("signing-duration", _set(C, certificate_signing_duration="87600h\n"), "cluster.certificate_signing_duration"),
    ("sysctl-key", _set(C, sysctl={"vm.swappiness\n": "1"}), "cluster.sysctl.vm.swappiness\n"),
    ("flag-name", _set(C, component_args={"apiserver": {"v\n": "2"}}), "cluster.component_args.apiserver.v\n"),
    ("journald-value", _set(C, journald={"Storage": "persistent\n"}), "cluster.journald.Storage"),
    ("docker-log-size", _set(C, docker={"log_max_size": "100m\n"}), "cluster.docker.log_max_size"),
    ("ssh-key", lambda d: d.update(ssh_authorized_keys=["ssh-ed25519 AAAA\n"]), "ssh_authorized_keys[0]"),
    ("kubernetes-version", _set(C, kubernetes_version="1.34.2\n"), "cluster.kubernetes_version"),
    ("harbor-version", _registry(harbor_version="v2.11.1\n"), "registry.harbor_version"),
    ("image-repository", _set(C, image_repository="registry.k8s.io\n"), "cluster.image_repository"),
    ("package-repository", _set(C, package_repository="https://pkgs.k8s.io/core:/stable:/v1.34/deb/\n"),
     "cluster.package_repository"),
    ("bundle-label", _set("bundle", label="imagegen\n"), "bundle.label"),
    ("timezone", _set(C, timezone="UTC\n"), "cluster.timezone"),
    ("etcd-image-tag", _set(C, etcd_image_tag="3.5.16-0\n"), "cluster.etcd_image_tag"),
    ("preflight", _set(C, ignore_preflight_errors=["NumCPU\n"]), "cluster.ignore_preflight_errors[0]"),
    ("ntp", _set(C, ntp_servers=["ntp.example.internal\n"]), "cluster.ntp_servers[0]"),
    ("data-volume", _registry(data_volume="/data/harbor\n"), "registry.data_volume"),
    ("insecure-registry", _set(C, docker={"insecure_registries": ["reg:5000\n"]}),
     "cluster.docker.insecure_registries[0]"),
]

CANNOT_WORK: list[tuple[str, Mutation, str, str]] = [
    ("admin-root", lambda d: d.update(admin_user="root"), "admin_user", "system account"),
    ("admin-daemon", lambda d: d.update(admin_user="daemon"), "admin_user", "system account"),
    ("admin-systemd", lambda d: d.update(admin_user="systemd-network"), "admin_user", "system account"),
    ("admin-not-a-user-name", lambda d: d.update(admin_user="Ops Team"), "admin_user", "not a Linux user name"),
    ("node-localhost", _node(5, name="localhost"), "nodes[5].name", "reserved"),
    ("endpoint-name-is-node", _set("endpoint", name="cp-1"), "endpoint.name", "equals nodes[2].name"),
    ("all-zero-mac", _node(0, mac="00:00:00:00:00:00"), "nodes[0].mac", "all-zero"),
    ("lb-port-22", _set("endpoint", port=22), "endpoint.port", "sshd"),
    ("api-port-kubelet", _set("endpoint", port=10250), "endpoint.port", "the kubelet"),
    ("service-cidr-too-small", _set(C, service_cidr="10.96.0.0/29"), "cluster.service_cidr", "too few"),
    ("service-cidr-too-large", _set(C, service_cidr="10.0.0.0/8"), "cluster.service_cidr", "larger than"),
]


def _refused(base_plan: dict, mutate: Mutation) -> PlanError:
    data = copy.deepcopy(base_plan)
    mutate(data)
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    return info.value


@pytest.mark.parametrize("case", INJECTION + CANNOT_WORK, ids=[c[0] for c in INJECTION + CANNOT_WORK])
def test_refused(base_plan: dict, case: tuple[str, Mutation, str, str]) -> None:
    _, mutate, field, text = case
    error = _refused(base_plan, mutate)
    assert [p for p in error.problems if p.field == field and text in str(p)], error.render()


@pytest.mark.parametrize("case", TRAILING_NEWLINE, ids=[c[0] for c in TRAILING_NEWLINE])
def test_trailing_newline_refused(base_plan: dict, case: tuple[str, Mutation, str]) -> None:
    _, mutate, field = case
    parse_plan(copy.deepcopy(base_plan))
    error = _refused(base_plan, mutate)
    assert [p for p in error.problems if p.field == field], error.render()


def test_upper_case_mac_is_normalised(base_plan: dict) -> None:
    base_plan["nodes"][0]["mac"] = "52:54:00:AB:CD:EF"
    plan = parse_plan(base_plan)
    assert plan.nodes[0].mac == "52:54:00:ab:cd:ef"


def test_valid_unusual_values_accepted(base_plan: dict) -> None:
    """The checks are conservative, not paranoid: what operators really write passes."""
    base_plan["cluster"].update(
        timezone="America/Argentina/Buenos_Aires", ntp_servers=["ntp.example.internal", "192.168.10.1"],
        package_repository="http://mirror.example.internal:8080/pkgs.k8s.io/core:/stable:/v1.34/deb/",
        image_repository="mirror.example.internal:5000/k8s", kube_vip_image="mirror.example.internal:5000/kv:v0.8.9",
        cni_manifest="/srv/imagegen/calico-v3.28.2.yaml", registry_mirrors=["https://mirror.example.internal/v2/"],
        sysctl={"net.ipv4.tcp_rmem": "4096 87380 6291456", "net.ipv4.conf.*.rp_filter": "0"},
        docker={"insecure_registries": ["10.0.0.0/8", "registry.example.internal:5000"]})
    base_plan["registry"].update(data_volume="/srv/harbor-data", harbor_installer="/srv/harbor-offline-v2.11.1.tgz")
    base_plan["bundle"] = {"label": "k8s-1.34.2.b_1"}
    parse_plan(base_plan)


def test_cross_field_rules_run_with_field_errors(base_plan: dict) -> None:
    base_plan["cluster"]["kubernetes_version"] = "1.34"      # a field error in cluster
    base_plan["nodes"][5]["ip"] = "192.168.11.21"           # a cross-field error (outside network.cidr)
    base_plan["nodes"][4]["mac"] = "zz"                      # an error that leaves the node list incomplete
    base_plan["nodes"][3]["ip"] = "192.168.10.11"           # duplicates nodes[2].ip among the valid nodes
    fields = {p.field for p in _refused(base_plan, lambda d: None).problems}
    assert {"cluster.kubernetes_version", "nodes[5].ip", "nodes[4].mac", "nodes[3].ip"} <= fields
    assert "nodes" not in fields  # no "no control plane" guessed from a partial node list


def _cli_refuses(tmp_path: Path, text: bytes | str, capsys: pytest.CaptureFixture[str]) -> str:
    plan = tmp_path / "plan.yaml"
    plan.write_bytes(text if isinstance(text, bytes) else text.encode())
    out, state = tmp_path / "out", tmp_path / "state"
    assert main(["render", str(plan), "--out", str(out), "--state", str(state)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]
    err = capsys.readouterr().err
    assert len(err.splitlines()) <= 3, err
    return err


def test_non_utf8_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "is not UTF-8 (byte 0xe9 on line 2)" in _cli_refuses(tmp_path, b"cluster:\n  name: caf\xe9\n", capsys)


def test_deep_nesting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _cli_refuses(tmp_path, "cluster: " + "[" * 5000 + "]" * 5000 + "\n", capsys)
    assert "nest" in err
    block = "".join("  " * i + "a:\n" for i in range(200)) + "  " * 200 + "b: 1\n"
    assert "nesting deeper than" in _cli_refuses(tmp_path, block, capsys)


def test_alias_bomb_is_refused_fast_and_small(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              base_plan: dict) -> None:
    lines = ['lol: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "a" if i == 0 else "bcdefghi"[i - 1]
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    text = yaml.safe_dump(base_plan).replace("timezone: UTC", "timezone: *i")
    text = "\n".join(lines) + "\n" + text
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    err = _cli_refuses(tmp_path, text, capsys)
    assert time.monotonic() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    assert "YAML aliases" in err


def test_duplicate_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan_text("cluster:\n  name: a\n  name: b\n")
    assert "duplicate key 'name' at line 3" in info.value.render()


def test_error_echoes_a_bounded_prefix(base_plan: dict) -> None:
    base_plan["cluster"]["cni_manifest"] = "https://x/" + "$" * 100_000
    base_plan["nodes"][0]["name"] = ["x" * 1000] * 1000
    base_plan["cluster"]["sysctl"] = {"k" * 100_000 + "\n": "1"}
    text = _refused(base_plan, lambda d: None).render()
    assert len(text) < 2000, len(text)
    assert len(text.splitlines()) == 4  # the head line and one line per problem: field names are escaped


def test_shell_templates_quote_with_sh_not_tojson() -> None:
    """JSON quoting is not shell quoting ("$(x)" survives tojson): shell templates use the `sh` filter."""
    from .conftest import ROOT

    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "cloud-init").rglob("*.sh.j2") if "tojson" in p.read_text()]
    assert offenders == []


def test_sh_filter_quotes_for_bash(tmp_path: Path) -> None:
    import subprocess

    from imagegen.templates import environment

    marker = tmp_path / "x"
    value = f"/data/$(touch {marker})'\"`touch {marker}`"
    script = environment().from_string("v={{ value | sh }}\nprintf %s \"$v\"").render(value=value)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == value and not marker.exists()
