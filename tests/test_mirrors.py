"""Container image mirrors per registry (`cluster.mirrors`, issue 12): every value checked at the edge (one case per
rule, as in test_hardening.py), containerd's hosts.toml per registry with its CA beside it (parsed with tomllib and
checked against the keys containerd's docs/hosts.md defines), Docker's daemon.json (docker.io only), and which mirror
serves which image."""

from __future__ import annotations

import copy
import datetime
import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagegen import registries
from imagegen.errors import PlanError
from imagegen.plan import Plan, parse_plan
from imagegen.render import render_cluster
from imagegen.state import ensure_state
from tests.conftest import Rendered

CERTS_D = "/etc/containerd/certs.d"
# containerd docs/hosts.md: the keys of hosts.toml and of a [host."URL"] table.
HOSTS_TOML_TOP = {"server", "capabilities", "ca", "client", "skip_verify", "header", "override_path", "host"}
HOST_KEYS = {"capabilities", "ca", "client", "skip_verify", "header", "override_path"}

Mutation = Callable[[dict], None]


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mirror test CA")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "mirror-ca.pem"
    path.write_bytes(_ca_pem())
    return path


def _mirrors(**entries: object) -> Mutation:
    return lambda d: d["cluster"].update(mirrors=entries)


MIRROR = {"endpoints": ["https://mirror.example.internal"]}

REFUSED: list[tuple[str, Mutation, str, str]] = [
    ("not-a-mapping", lambda d: d["cluster"].update(mirrors=["https://m"]), "cluster.mirrors", "must be a mapping"),
    ("host-upper-case", _mirrors(**{"GHCR.io": MIRROR}), "cluster.mirrors.GHCR.io", "registry HOST[:PORT]"),
    ("host-with-path", _mirrors(**{"ghcr.io/x": MIRROR}), "cluster.mirrors.ghcr.io/x", "registry HOST[:PORT]"),
    ("host-shell", _mirrors(**{"$(reboot)": MIRROR}), "cluster.mirrors.$(reboot)", "registry HOST[:PORT]"),
    ("host-bad-port", _mirrors(**{"reg.example:99999": MIRROR}), "cluster.mirrors.reg.example:99999",
     "registry HOST[:PORT]"),
    ("unknown-key", _mirrors(**{"quay.io": {**MIRROR, "insecure": True}}), "cluster.mirrors.quay.io.insecure",
     "unknown key"),
    ("endpoints-missing", _mirrors(**{"quay.io": {"skip_verify": True}}), "cluster.mirrors.quay.io.endpoints",
     "is required"),
    ("endpoints-empty", _mirrors(**{"quay.io": {"endpoints": []}}), "cluster.mirrors.quay.io.endpoints", "is empty"),
    ("endpoint-quote", _mirrors(**{"quay.io": {"endpoints": ['https://m/";reboot;"']}}),
     "cluster.mirrors.quay.io.endpoints[0]", "characters"),
    ("endpoint-userinfo", _mirrors(**{"quay.io": {"endpoints": ["https://u:p@m.example/"]}}),
     "cluster.mirrors.quay.io.endpoints[0]", "no user:password@"),
    ("endpoint-scheme", _mirrors(**{"quay.io": {"endpoints": ["ftp://m.example/"]}}),
     "cluster.mirrors.quay.io.endpoints[0]", "http/https URL"),
    ("endpoint-newline", _mirrors(**{"quay.io": {"endpoints": ["https://m.example/\n"]}}),
     "cluster.mirrors.quay.io.endpoints[0]", "characters"),
    ("skip-verify-string", _mirrors(**{"quay.io": {**MIRROR, "skip_verify": "yes"}}),
     "cluster.mirrors.quay.io.skip_verify", "true or false"),
    ("ca-file-missing", _mirrors(**{"quay.io": {**MIRROR, "ca_file": "/nonexistent/ca.pem"}}),
     "cluster.mirrors.quay.io.ca_file", "cannot be read"),
    ("ca-file-newline", _mirrors(**{"quay.io": {**MIRROR, "ca_file": "ca.pem\nx"}}),
     "cluster.mirrors.quay.io.ca_file", "one line"),
    ("shorthand-and-docker-io", lambda d: d["cluster"].update(registry_mirrors=["https://a.example"],
                                                               mirrors={"docker.io": MIRROR}),
     "cluster.mirrors.docker.io", "registry_mirrors"),
    ("own-registry", _mirrors(**{"harbor.example.internal": MIRROR}), "cluster.mirrors.harbor.example.internal",
     "the plan's own registry"),
    ("docker-mirror-path", lambda d: d["cluster"].update(
        container_runtime="docker", cri_dockerd=True,
        mirrors={"docker.io": {"endpoints": ["https://m.example/v2/dockerhub"]}}),
     "cluster.mirrors.docker.io.endpoints[0]", "Docker's registry-mirrors"),
    ("docker-own-mirror-path", lambda d: d["cluster"].update(
        container_runtime="docker", cri_dockerd=True, docker={"registry_mirrors": ["https://m.example/x"]}),
     "cluster.docker.registry_mirrors[0]", "Docker's registry-mirrors"),
    ("platform-unknown", lambda d: d["cluster"].update(platform_limits=["aws"]), "cluster.platform_limits[0]",
     "known user-data limit"),
]


def _refused(base_plan: dict, mutate: Mutation) -> PlanError:
    data = copy.deepcopy(base_plan)
    mutate(data)
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    return info.value


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused(base_plan: dict, case: tuple[str, Mutation, str, str]) -> None:
    _, mutate, field, text = case
    error = _refused(base_plan, mutate)
    assert [p for p in error.problems if p.field == field and text in str(p)], error.render()


@pytest.mark.parametrize("content", [b"not a certificate\n", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE "
                                     b"KEY-----\n", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
                         ids=["text", "private-key", "garbage-cert"])
def test_ca_file_must_be_pem_certificates(base_plan: dict, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_bytes(content)
    error = _refused(base_plan, _mirrors(**{"quay.io": {**MIRROR, "ca_file": str(bad)}}))
    assert [p for p in error.problems if p.field == "cluster.mirrors.quay.io.ca_file"], error.render()


def test_ca_file_relative_to_the_plan(base_plan: dict, ca_file: Path, tmp_path: Path) -> None:
    import yaml

    from imagegen.plan import load_plan

    data = copy.deepcopy(base_plan)
    data["cluster"]["mirrors"] = {"quay.io": {**MIRROR, "ca_file": ca_file.name}}
    plan_file = ca_file.parent / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(data))
    assert load_plan(plan_file).cluster.mirror_for("quay.io").ca_pem == ca_file.read_text()  # type: ignore[union-attr]


# -- rendering --------------------------------------------------------------------------------------------------

def _render(data: dict, tmp_path: Path) -> Rendered:
    plan = parse_plan(data)
    state = ensure_state(tmp_path / "state", plan)
    return Rendered(plan, state, render_cluster(plan, state))


@pytest.fixture
def mirrored(base_plan: dict, ca_file: Path) -> dict:
    data = copy.deepcopy(base_plan)
    data["cluster"]["mirrors"] = {
        "docker.io": {"endpoints": ["https://mirror.example.internal", "https://hub.example.internal:5000/v2/hub"],
                      "ca_file": str(ca_file)},
        "registry.k8s.io": {"endpoints": ["https://k8s-mirror.example.internal"]},
        "ghcr.io": {"endpoints": ["https://10.0.0.5:5000", "http://10.0.0.6:5000"], "skip_verify": True},
        "quay.io": {"endpoints": ["https://quay-mirror.example.internal"], "ca_file": str(ca_file)},
        "registry.example.org:5000": {"endpoints": ["https://other.example.internal"]},
    }
    return data


def _hosts_tomls(r: Rendered, node: str) -> dict[str, dict]:
    out = {}
    for path, entry in r.files(node).items():
        if path.startswith(CERTS_D + "/") and path.endswith("/hosts.toml"):
            doc = tomllib.loads(entry["content"])
            assert set(doc) <= HOSTS_TOML_TOP, path
            for url, host in doc.get("host", {}).items():
                assert set(host) <= HOST_KEYS, (path, url)
                assert set(host["capabilities"]) <= {"pull", "resolve", "push"}
            out[path[len(CERTS_D) + 1:-len("/hosts.toml")]] = doc
    return out


def test_hosts_toml_per_registry(mirrored: dict, ca_file: Path, tmp_path: Path) -> None:
    r = _render(mirrored, tmp_path)
    for node in ("cp-1", "worker-1"):
        hosts = _hosts_tomls(r, node)
        files = r.files(node)
        assert set(hosts) == {"docker.io", "registry.k8s.io", "ghcr.io", "quay.io", "registry.example.org:5000",
                              "harbor.example.internal"}
        hub = hosts["docker.io"]
        assert hub["server"] == "https://registry-1.docker.io"
        # Harbor's proxy cache (use_as_mirror) first, then the plan's mirrors in order.
        assert list(hub["host"]) == ["https://harbor.example.internal/v2/dockerhub", "https://mirror.example.internal",
                                     "https://hub.example.internal:5000/v2/hub"]
        assert hub["host"]["https://mirror.example.internal"]["ca"] == f"{CERTS_D}/docker.io/mirror-ca.crt"
        assert "override_path" not in hub["host"]["https://mirror.example.internal"]
        assert hub["host"]["https://hub.example.internal:5000/v2/hub"]["override_path"] is True
        assert hosts["ghcr.io"]["server"] == "https://ghcr.io"
        assert hosts["ghcr.io"]["host"]["https://10.0.0.5:5000"]["skip_verify"] is True
        assert "ca" not in hosts["ghcr.io"]["host"]["https://10.0.0.5:5000"]
        # TLS settings never on http:// (containerd 1.7 would try HTTPS there first, and fail).
        assert set(hosts["ghcr.io"]["host"]["http://10.0.0.6:5000"]) == {"capabilities"}
        assert list(hosts["registry.k8s.io"]["host"])[-1] == "https://k8s-mirror.example.internal"
        assert hosts["registry.example.org:5000"]["server"] == "https://registry.example.org:5000"
        # The CA is written beside the hosts.toml that names it, byte for byte, world-readable (not a secret).
        for host in ("docker.io", "quay.io"):
            ca = files[f"{CERTS_D}/{host}/mirror-ca.crt"]
            assert ca["content"] == ca_file.read_text() and ca["permissions"] == "0644"
        assert f"{CERTS_D}/ghcr.io/mirror-ca.crt" not in files
    # Load balancers and the registry run no container runtime configured here.
    assert not _hosts_tomls(r, "lb-1")


def test_registry_mirrors_shorthand_is_docker_io(base_plan: dict, tmp_path: Path) -> None:
    short = copy.deepcopy(base_plan)
    short["cluster"]["registry_mirrors"] = ["https://mirror.example.internal"]
    long = copy.deepcopy(base_plan)
    long["cluster"]["mirrors"] = {"docker.io": {"endpoints": ["https://mirror.example.internal"]}}
    a, b = parse_plan(short), parse_plan(long)
    assert registries.registry_hosts(a) == registries.registry_hosts(b)


def test_docker_daemon_mirrors_docker_io_only(mirrored: dict, ca_file: Path, tmp_path: Path) -> None:
    data = copy.deepcopy(mirrored)
    data["cluster"].update(container_runtime="docker", cri_dockerd=True)
    data["cluster"]["mirrors"]["docker.io"] = {"endpoints": ["https://mirror.example.internal:5000"],
                                               "ca_file": str(ca_file), "skip_verify": False}
    r = _render(data, tmp_path)
    files = r.files("worker-1")
    daemon = json.loads(files["/etc/docker/daemon.json"]["content"])
    assert daemon["registry-mirrors"] == ["https://mirror.example.internal:5000"]
    assert "insecure-registries" not in daemon
    # Docker reads a mirror's CA from certs.d/<mirror host:port>/ca.crt.
    assert files["/etc/docker/certs.d/mirror.example.internal:5000/ca.crt"]["content"] == ca_file.read_text()
    assert not any(p.startswith(CERTS_D) for p in files)


def test_docker_skip_verify_is_insecure_registry(base_plan: dict, tmp_path: Path) -> None:
    data = copy.deepcopy(base_plan)
    data["cluster"].update(container_runtime="docker", cri_dockerd=True,
                           mirrors={"docker.io": {"endpoints": ["http://10.0.0.5:5000"], "skip_verify": True}})
    plan = parse_plan(data)
    from imagegen.render import _docker_daemon

    assert _docker_daemon(plan)["insecure-registries"] == ["10.0.0.5:5000"]


def test_image_source(mirrored: dict) -> None:
    plan: Plan = parse_plan(mirrored)
    hub = registries.image_source(plan, "calico/node:v3.28.2")
    assert hub.registry == "docker.io" and hub.mirrors[1] == "https://mirror.example.internal"
    vip = registries.image_source(plan, "ghcr.io/kube-vip/kube-vip:v0.8.9")
    assert vip.mirrors == ("https://10.0.0.5:5000", "http://10.0.0.6:5000")
    assert registries.image_source(plan, "gcr.io/x/y:1").mirrors == ()
    assert registries.image_registry("localhost:5000/x") == "localhost:5000"
    assert registries.image_registry("library/busybox") == "docker.io"


def test_rendering_is_byte_identical(mirrored: dict, tmp_path: Path) -> None:
    plan = parse_plan(mirrored)
    state = ensure_state(tmp_path / "state", plan)
    reordered = copy.deepcopy(mirrored)
    reordered["cluster"]["mirrors"] = dict(reversed(list(mirrored["cluster"]["mirrors"].items())))
    a = render_cluster(plan, state)
    b = render_cluster(parse_plan(reordered), state)
    assert {p: x.data for p, x in a.items()} == {p: x.data for p, x in b.items()}
