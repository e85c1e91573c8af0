"""PKI and join material: kubeadm's formats, openssl's discovery hash, state reuse, permissions, rotation."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from imagegen import pki
from imagegen.errors import UsageError
from imagegen.plan import load_plan
from imagegen.state import ensure_state, rotate_token

from .conftest import ROOT, require_tool


@pytest.fixture
def plan():
    return load_plan(ROOT / "examples" / "ha.yaml")


def test_discovery_hash_matches_openssl(tmp_path: Path, plan) -> None:
    openssl = require_tool("openssl")
    state = ensure_state(tmp_path / "s", plan)
    crt = tmp_path / "ca.crt"
    crt.write_bytes(state.ca.cert_pem)
    # The pipeline kubeadm's documentation gives for computing --discovery-token-ca-cert-hash by hand.
    pub = subprocess.run([openssl, "x509", "-pubkey", "-noout", "-in", str(crt)], check=True,
                         capture_output=True).stdout
    der = subprocess.run([openssl, "rsa", "-pubin", "-outform", "der"], input=pub, check=True,
                         capture_output=True).stdout
    digest = subprocess.run([openssl, "dgst", "-sha256", "-hex"], input=der, check=True,
                            capture_output=True).stdout.decode().split()[-1]
    assert state.discovery_hash == f"sha256:{digest}"


def test_token_and_certificate_key_formats() -> None:
    tokens = {pki.new_bootstrap_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", t) for t in tokens)
    assert re.fullmatch(r"[0-9a-f]{64}", pki.new_certificate_key())


def test_cas_are_cas_and_admin_is_signed(tmp_path: Path, plan) -> None:
    state = ensure_state(tmp_path / "s", plan)
    for pair, cn in ((state.ca, "kubernetes"), (state.front_proxy_ca, "front-proxy-ca"), (state.etcd_ca, "etcd-ca")):
        cert = pair.cert
        assert cert.subject.rfc4514_string() == f"CN={cn}"
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    admin = state.admin.cert
    admin.verify_directly_issued_by(state.ca.cert)
    # examples/ha.yaml is Kubernetes 1.34: kubeadm's RBAC-bound admin group (system:masters before 1.29).
    assert "O=kubeadm:cluster-admins" in admin.subject.rfc4514_string()


def test_state_permissions_and_reuse(tmp_path: Path, plan) -> None:
    sdir = tmp_path / "s"
    first = ensure_state(sdir, plan)
    for path in [sdir, *sdir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {oct(mode)}"
    second = ensure_state(sdir, plan)
    assert first == second


def test_registry_cert_sans(tmp_path: Path, plan) -> None:
    state = ensure_state(tmp_path / "s", plan)
    assert state.registry_cert is not None and state.registry_ca is not None
    cert = state.registry_cert.cert
    cert.verify_directly_issued_by(state.registry_ca.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["harbor.example.internal"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["192.168.10.30"]


def test_token_rotate_replaces_only_the_token(tmp_path: Path, plan) -> None:
    sdir = tmp_path / "s"
    before = ensure_state(sdir, plan)
    files_before = {p: p.read_bytes() for p in sdir.rglob("*") if p.is_file()}
    new_id = rotate_token(sdir)
    after = ensure_state(sdir, plan)
    assert after.bootstrap_token != before.bootstrap_token and after.token_id == new_id
    changed = {p.name for p, data in files_before.items() if p.read_bytes() != data}
    assert changed == {"bootstrap-token"}
    assert stat.S_IMODE((sdir / "bootstrap-token").stat().st_mode) == 0o600


def test_state_of_another_cluster_is_refused(tmp_path: Path, plan) -> None:
    sdir = tmp_path / "s"
    ensure_state(sdir, plan)
    other = load_plan(ROOT / "examples" / "single.yaml")
    with pytest.raises(UsageError, match="belongs to cluster 'prod'"):
        ensure_state(sdir, other)


def test_non_state_directory_is_refused(tmp_path: Path, plan) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        ensure_state(tmp_path / "s", plan)
