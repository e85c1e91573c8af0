"""The state directory: the cluster's secrets, made once and reused on every render.

Layout (directories 0700, files 0600):
  state.json                 cluster name the state belongs to
  pki/ca.{crt,key}           Kubernetes CA
  pki/front-proxy-ca.{crt,key}
  pki/etcd/ca.{crt,key}
  pki/sa.{key,pub}           service-account signing key pair
  pki/admin.{crt,key}        the operator's client certificate (admin.conf)
  pki/registry-ca.{crt,key}, pki/registry.{crt,key}   only when the plan has a registry node
  bootstrap-token, certificate-key, vrrp-password, harbor-admin-password, harbor-db-password
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from imagegen import pki
from imagegen.errors import UsageError
from imagegen.plan import Plan

STATE_FORMAT = 1


@dataclass(frozen=True)
class ClusterState:
    cluster_name: str
    ca: pki.KeyPair
    front_proxy_ca: pki.KeyPair
    etcd_ca: pki.KeyPair
    sa_key: bytes
    sa_pub: bytes
    admin: pki.KeyPair
    bootstrap_token: str
    certificate_key: str
    registry_ca: pki.KeyPair | None = None
    registry_cert: pki.KeyPair | None = None
    harbor_admin_password: str | None = None
    harbor_db_password: str | None = None
    vrrp_password: str | None = None

    @cached_property
    def discovery_hash(self) -> str:
        return pki.discovery_hash(self.ca.cert_pem)

    @property
    def token_id(self) -> str:
        return self.bootstrap_token.split(".", 1)[0]


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _pair(root: Path, stem: str) -> pki.KeyPair:
    return pki.KeyPair(_read(root / f"{stem}.crt"), _read(root / f"{stem}.key"))


def _store_pair(root: Path, stem: str, pair: pki.KeyPair) -> None:
    _write_secret(root / f"{stem}.crt", pair.cert_pem)
    _write_secret(root / f"{stem}.key", pair.key_pem)


def ensure_state(state_dir: Path, plan: Plan) -> ClusterState:
    """Load the state for this plan's cluster, creating whatever is missing (never replacing what exists)."""
    state_dir = Path(state_dir)
    meta_path = state_dir / "state.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("cluster") != plan.cluster.name:
            raise UsageError(f"--state {state_dir}: belongs to cluster '{meta.get('cluster')}', the plan is for "
                             f"'{plan.cluster.name}'; use another --state directory for this cluster")
    else:
        if state_dir.exists() and any(state_dir.iterdir()):
            raise UsageError(f"--state {state_dir}: exists, is not empty and has no state.json; "
                             "point --state at an empty or new directory")
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    pki_dir = state_dir / "pki"

    def pair(stem: str, make: object) -> pki.KeyPair:
        if not (pki_dir / f"{stem}.key").exists():
            _store_pair(pki_dir, stem, make())  # type: ignore[operator]
        return _pair(pki_dir, stem)

    def secret(name: str, make: object) -> str:
        path = state_dir / name
        if not path.exists():
            _write_secret(path, (make() + "\n").encode())  # type: ignore[operator]
        return path.read_text().strip()

    ca = pair("ca", lambda: pki.new_ca("kubernetes"))
    front_proxy = pair("front-proxy-ca", lambda: pki.new_ca("front-proxy-ca"))
    etcd_ca = pair("etcd/ca", lambda: pki.new_ca("etcd-ca"))
    if not (pki_dir / "sa.key").exists():
        sa_key, sa_pub = pki.new_service_account_keys()
        _write_secret(pki_dir / "sa.key", sa_key)
        _write_secret(pki_dir / "sa.pub", sa_pub)
    admin = pair("admin", lambda: pki.new_leaf(ca, "kubernetes-admin", org="system:masters", client=True))
    token = secret("bootstrap-token", pki.new_bootstrap_token)
    cert_key = secret("certificate-key", pki.new_certificate_key)

    vrrp = None
    if any(n.role == "load-balancer" for n in plan.nodes):
        # keepalived reads at most 8 characters of auth_pass.
        vrrp = secret("vrrp-password", lambda: pki.new_password(8))
    registry_ca = registry_cert = None
    admin_pw = db_pw = None
    registry_nodes = [n for n in plan.nodes if n.role == "registry"]
    if plan.registry is not None and registry_nodes:
        registry_ca = pair("registry-ca", lambda: pki.new_ca(f"{plan.cluster.name}-registry-ca"))
        sans_dns = (plan.registry.hostname,)
        sans_ip = tuple(str(n.ip) for n in registry_nodes)
        registry_cert = _registry_cert(pki_dir, registry_ca, plan.registry.hostname, sans_dns, sans_ip)
        admin_pw = secret("harbor-admin-password", pki.new_password)
        db_pw = secret("harbor-db-password", pki.new_password)

    _write_secret(meta_path, json.dumps({"format": STATE_FORMAT, "cluster": plan.cluster.name},
                                        sort_keys=True).encode() + b"\n")
    return ClusterState(cluster_name=plan.cluster.name, ca=ca, front_proxy_ca=front_proxy, etcd_ca=etcd_ca,
                        sa_key=_read(pki_dir / "sa.key"), sa_pub=_read(pki_dir / "sa.pub"), admin=admin,
                        bootstrap_token=token, certificate_key=cert_key, registry_ca=registry_ca,
                        registry_cert=registry_cert, harbor_admin_password=admin_pw, harbor_db_password=db_pw,
                        vrrp_password=vrrp)


def _registry_cert(pki_dir: Path, ca: pki.KeyPair, cn: str, dns: tuple[str, ...],
                   ips: tuple[str, ...]) -> pki.KeyPair:
    """Reuse the registry certificate while its SANs still match the plan; reissue when they change."""
    from cryptography import x509

    if (pki_dir / "registry.crt").exists():
        current = _pair(pki_dir, "registry")
        try:
            san = current.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = (tuple(san.get_values_for_type(x509.DNSName)),
                    tuple(str(i) for i in san.get_values_for_type(x509.IPAddress)))
        except x509.ExtensionNotFound:
            have = ((), ())
        if have == (dns, ips):
            return current
    leaf = pki.new_leaf(ca, cn, server=True, dns_names=dns, ips=ips)
    _store_pair(pki_dir, "registry", leaf)
    return leaf


def rotate_token(state_dir: Path) -> str:
    """Replace only the bootstrap token; returns the new token id (never the secret)."""
    state_dir = Path(state_dir)
    if not (state_dir / "state.json").exists():
        raise UsageError(f"--state {state_dir}: no imagegen state here; run 'imagegen render' first")
    token = pki.new_bootstrap_token()
    _write_secret(state_dir / "bootstrap-token", (token + "\n").encode())
    return token.split(".", 1)[0]
