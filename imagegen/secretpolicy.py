"""The secret policy, in one place: which secret groups exist, which state items and template values each one
unlocks, which generated files embed which groups, and the mode every file holding a secret gets.

Profiles name the groups a role may see (`secrets:` in profiles/<role>.yaml); rendering asks this module for
anything secret and gets it only when the role's profile names the group. The placement tests
(tests/test_secrets.py) and `imagegen explain` read the same tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from imagegen import mirrorauth

if TYPE_CHECKING:
    from imagegen.state import ClusterState

SECRET_MODE = "0600"


class SecretGroup(StrEnum):
    CLUSTER_CA_KEYS = "cluster-ca-keys"   # CA keys and the service-account key: control planes
    BOOTSTRAP_TOKEN = "bootstrap-token"   # control planes and workers
    CERTIFICATE_KEY = "certificate-key"   # the first control plane
    VRRP_PASSWORD = "vrrp-password"       # load balancers
    HARBOR = "harbor"                     # the registry: its key and Harbor's passwords
    MIRROR_AUTH = "mirror-auth"           # control planes and workers (they pull images): mirror credentials


@dataclass(frozen=True)
class StateItem:
    """A file taken from the state directory; `group` None means public (a certificate or public key)."""

    group: SecretGroup | None
    read: Callable[[ClusterState], bytes | None]


STATE_ITEMS: dict[str, StateItem] = {
    "ca.crt": StateItem(None, lambda s: s.ca.cert_pem),
    "front-proxy-ca.crt": StateItem(None, lambda s: s.front_proxy_ca.cert_pem),
    "etcd/ca.crt": StateItem(None, lambda s: s.etcd_ca.cert_pem),
    "sa.pub": StateItem(None, lambda s: s.sa_pub),
    "registry-ca.crt": StateItem(None, lambda s: s.registry_ca.cert_pem if s.registry_ca else None),
    "registry.crt": StateItem(None, lambda s: s.registry_cert.cert_pem if s.registry_cert else None),
    "ca.key": StateItem(SecretGroup.CLUSTER_CA_KEYS, lambda s: s.ca.key_pem),
    "front-proxy-ca.key": StateItem(SecretGroup.CLUSTER_CA_KEYS, lambda s: s.front_proxy_ca.key_pem),
    "etcd/ca.key": StateItem(SecretGroup.CLUSTER_CA_KEYS, lambda s: s.etcd_ca.key_pem),
    "sa.key": StateItem(SecretGroup.CLUSTER_CA_KEYS, lambda s: s.sa_key),
    "registry.key": StateItem(SecretGroup.HARBOR, lambda s: s.registry_cert.key_pem if s.registry_cert else None),
}

# Values templates may use (`secrets.<name>`), per group.
TEMPLATE_VALUES: dict[SecretGroup, dict[str, Callable[[ClusterState], str | None]]] = {
    SecretGroup.BOOTSTRAP_TOKEN: {"bootstrap_token": lambda s: s.bootstrap_token},
    SecretGroup.CERTIFICATE_KEY: {"certificate_key": lambda s: s.certificate_key},
    SecretGroup.VRRP_PASSWORD: {"vrrp_password": lambda s: s.vrrp_password},
    SecretGroup.HARBOR: {"harbor_admin_password": lambda s: s.harbor_admin_password,
                         "harbor_db_password": lambda s: s.harbor_db_password},
    # containerd's `registry.configs.*.auth` tables, serialised in imagegen.mirrorauth; absent without credentials.
    SecretGroup.MIRROR_AUTH: {"containerd_mirror_auth": lambda s: mirrorauth.containerd_auth_toml(s.mirror_auth)},
}

# Generated files and the groups whose secrets they embed (so they are written 0600).
GENERATOR_GROUPS: dict[str, tuple[SecretGroup, ...]] = {
    "kubeadm-init": (SecretGroup.BOOTSTRAP_TOKEN, SecretGroup.CERTIFICATE_KEY),
    "kubeadm-join-control-plane": (SecretGroup.BOOTSTRAP_TOKEN,),
    "kubeadm-join-worker": (SecretGroup.BOOTSTRAP_TOKEN,),
}


# Templates marked `secret: true` embed these groups' values (keepalived.conf, harbor.yml, containerd's config.toml
# when mirror credentials exist); the token and the certificate key reach files only through the kubeadm
# generators above.
SECRET_TEMPLATE_GROUPS = (SecretGroup.VRRP_PASSWORD, SecretGroup.HARBOR, SecretGroup.MIRROR_AUTH)


class SecretPolicyError(ValueError):
    """A profile asks for something its role may not see, or the state lacks it."""


def group(name: str) -> SecretGroup:
    try:
        return SecretGroup(name)
    except ValueError:
        known = ", ".join(g.value for g in SecretGroup)
        raise SecretPolicyError(f"unknown secret group {name!r}; known: {known}") from None


def template_values(groups: Iterable[str], state: ClusterState) -> dict[str, str]:
    """The secret values a role's templates may use, for the groups its profile names."""
    out: dict[str, str] = {}
    for g in groups:
        values = {key: read(state) for key, read in TEMPLATE_VALUES.get(SecretGroup(g), {}).items()}
        if all(v is not None for v in values.values()):
            out.update({k: v for k, v in values.items() if v is not None})
    return out


def state_item(name: str, groups: Iterable[str], state: ClusterState, who: str) -> bytes:
    """A state item for a role whose profile names `groups`: public items always, secret ones only with their group."""
    item = STATE_ITEMS.get(name)
    if item is None:
        raise SecretPolicyError(f"profile {who}: unknown state item {name}")
    if item.group is not None and item.group.value not in set(groups):
        raise SecretPolicyError(f"profile {who} asks for {name} without secret group {item.group.value}")
    data = item.read(state)
    if data is None:
        raise SecretPolicyError(f"profile {who}: state item {name} is not in the state")
    return data


def state_item_is_secret(name: str) -> bool:
    item = STATE_ITEMS.get(name)
    return item is None or item.group is not None  # unknown items are treated as secret until refused


def file_groups(*, state: str = "", generator: str = "", secret_template: bool = False,
                profile_groups: Iterable[str] = ()) -> tuple[SecretGroup, ...]:
    """The secret groups a profile file entry carries: what `imagegen explain` shows and what makes a file 0600."""
    if state:
        item = STATE_ITEMS.get(state)
        return (item.group,) if item is not None and item.group is not None else ()
    if generator:
        return GENERATOR_GROUPS.get(generator, ())
    if secret_template:
        return tuple(SecretGroup(g) for g in profile_groups if SecretGroup(g) in SECRET_TEMPLATE_GROUPS)
    return ()


def generator_is_secret(generator: str) -> bool:
    return bool(GENERATOR_GROUPS.get(generator))
