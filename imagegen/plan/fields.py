"""The plan's fields as one table: for every section and key, whether it is required, its default, what value it
takes (type, check, choices) and a one-line description.

The parser (`parse.py`), the JSON Schema (`imagegen.planschema`), `imagegen init --print-defaults` and the README's
plan reference are all read from `FIELDS`; adding a plan field means adding a row here and the attribute to its
dataclass in `model.py` (tests/test_plan_fields.py checks the two agree).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from imagegen import values
from imagegen.plan import model
from imagegen.plan.model import (
    ADDONS,
    COMPONENTS,
    DEFAULT_JOURNALD,
    DEFAULT_SYSCTL,
    JOURNALD_KEYS,
    PLATFORMS,
    BundleSource,
    Cni,
    ContainerRuntime,
    Distro,
    EndpointMode,
    ProxyMode,
    Role,
)
from imagegen.versions import SUPPORTED_RANGE

Check = Callable[[str], values.Verdict]

_LABEL_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_IPV4_PATTERN = (r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|"
                 r"1[0-9][0-9]|[1-9]?[0-9])){3}$")
_STR: dict[str, Any] = {"type": "string", "minLength": 1}


# -- value types: what a key accepts. `parse.py` reads each, `schema()` is its JSON Schema fragment, `doc` its name
# in the README.

@dataclass(frozen=True)
class Text:
    """A non-empty string; `check` (imagegen.values) when it reaches a shell or a config file."""

    check: Check | None = None
    pattern: str = ""               # for the JSON Schema only; `check` is what the parser applies
    doc: str = "string"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": self.pattern} if self.pattern else dict(_STR)


@dataclass(frozen=True)
class Label:
    """An RFC 1123 label (lower case, at most 63 characters); `check` adds rules of its own."""

    what: str = "hostname"
    check: Check | None = None
    doc: str = "RFC 1123 label"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": _LABEL_PATTERN}


@dataclass(frozen=True)
class DnsName:
    doc: str = "DNS name"

    def schema(self) -> dict[str, Any]:
        return dict(_STR)


@dataclass(frozen=True)
class Choice:
    choices: type[StrEnum]
    doc: str = "one of"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": [m.value for m in self.choices]}


@dataclass(frozen=True)
class Flag:
    doc: str = "true or false"

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    doc: str = "integer"

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True)
class Duration:
    doc: str = "duration (24h, 90m, 8760h)"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{values.DURATION.pattern}$", "minLength": 2}


@dataclass(frozen=True)
class Texts:
    """A list of non-empty strings, each passing `check` or, with `choices`, one of them (`unknown` says why not)."""

    check: Check | None = None
    choices: tuple[str, ...] = ()
    unknown: str = ""
    min_items: int = 0
    empty_fix: str = "list at least one item"
    unique: bool = False            # repeated items are kept once
    doc: str = "list of strings"

    def schema(self) -> dict[str, Any]:
        items = {"type": "string", "enum": list(self.choices)} if self.choices else dict(_STR)
        out: dict[str, Any] = {"type": "array"}
        if self.min_items:
            out["minItems"] = self.min_items
        out["items"] = items
        return out


@dataclass(frozen=True)
class Version:
    doc: str = "Kubernetes version"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^1\.[0-9]+\.[0-9]+$"}


@dataclass(frozen=True)
class IPv4:
    doc: str = "IPv4 address"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": _IPV4_PATTERN}


@dataclass(frozen=True)
class IPv4s:
    doc: str = "list of IPv4 addresses"

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": IPv4().schema()}


@dataclass(frozen=True)
class Cidr:
    doc: str = "IPv4 CIDR"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"}


@dataclass(frozen=True)
class Mac:
    doc: str = "MAC address"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"}


@dataclass(frozen=True)
class Section:
    """A mapping whose keys are the rows of section `name`; `each` for a list of them (nodes) or a mapping of
    free keys to them (cluster.mirrors)."""

    name: str
    each: str = ""                  # "", "list" or "map"
    doc: str = "section"

    def schema(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Overrides:
    """A mapping merged over imagegen's defaults (cluster.sysctl, cluster.journald) or flags per component
    (cluster.component_args); `keys` limits its keys."""

    value_types: tuple[str, ...]
    keys: tuple[str, ...] = ()
    nested: bool = False            # each key maps to a mapping of flags
    doc: str = "mapping"

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if self.keys:
            out["propertyNames"] = {"type": "string", "enum": list(self.keys)}
        inner = {"type": list(self.value_types)} if len(self.value_types) > 1 else {"type": self.value_types[0]}
        out["additionalProperties"] = {"type": "object", "additionalProperties": inner} if self.nested else inner
        return out


ValueType = (Text | Label | DnsName | Choice | Flag | Int | Duration | Texts | Version | IPv4 | IPv4s | Cidr | Mac
             | Section | Overrides)


@dataclass(frozen=True)
class Field:
    key: str
    type: ValueType
    description: str
    required: bool = False
    default: Any = None             # the parsed value the model gets when the key is left out
    default_from: Callable[[Mapping[str, Any]], Any] | None = None  # ... when it depends on keys read before it
    default_doc: str = ""           # how a derived default is made, for people
    nullable: bool = False          # None is a valid parsed value (endpoint.vip, registry)
    section: str = ""               # "" (top level), "cluster", "cluster.docker", "cluster.mirrors.*", "nodes[]", ...

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key

    @property
    def derived(self) -> bool:
        return bool(self.default_doc)

    def default_for(self, got: Mapping[str, Any]) -> Any:
        """The default given the section's keys read so far (`got`, attribute -> value)."""
        return self.default_from(got) if self.default_from is not None else self.default

    def full_description(self) -> str:
        return f"{self.description}; default: {self.default_doc}" if self.default_doc else self.description


def _in(section: str, *fields: Field) -> tuple[Field, ...]:
    return tuple(replace(f, section=section) for f in fields)


_CNI_MANIFESTS = {
    Cni.CALICO: "https://raw.githubusercontent.com/projectcalico/calico/v3.28.2/manifests/calico.yaml",
    Cni.FLANNEL: "https://github.com/flannel-io/flannel/releases/download/v0.25.7/kube-flannel.yml",
    Cni.HOST_GW: "",
}
_SSH_KEY = re.compile(r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp[0-9]+|sk-[!-~]+) [A-Za-z0-9+/=]+( [ -~]*)?")
_LOG_SIZE = re.compile(r"[0-9]+[kmg]")
_SUITE = re.compile(r"[a-z0-9-]+")


def _ssh_key(key: str) -> values.Verdict:
    if not _SSH_KEY.fullmatch(key):
        return "is not an OpenSSH public key", "paste one line of ~/.ssh/id_ed25519.pub"
    return None


def _log_size(size: str) -> values.Verdict:
    return None if _LOG_SIZE.fullmatch(size) else ("must be a size like '100m'", "")


def _suite(name: str) -> values.Verdict:
    return None if _SUITE.fullmatch(name) else ("is not a suite name", "e.g. 'bookworm' or 'bookworm-updates'")


def _interface(name: str) -> values.Verdict:
    return ("is longer than Linux's 15-character interface names", "") if len(name) > 15 else None


def _node_name(name: str) -> values.Verdict:
    if name == "localhost":
        return "is reserved (it resolves to 127.0.0.1 on every node)", "give the node a name of its own"
    if name.endswith("-configdrive"):
        return ("ends with '-configdrive', which names another node's config drive (seeds/<name>-configdrive.iso)",
                "give the node another name")
    return None


def _package_repository(got: Mapping[str, Any]) -> str:
    version = got.get("kubernetes_version")
    return model.default_package_repository(version) if version is not None else ""


def _harbor_installer(got: Mapping[str, Any]) -> str:
    v = got["harbor_version"]
    return f"https://github.com/goharbor/harbor/releases/download/{v}/harbor-offline-installer-{v}.tgz"


FIELDS: tuple[Field, ...] = (
    *_in("",
         Field("cluster", Section("cluster"), "the cluster: versions, runtime, CNI, networks, node settings",
               required=True),
         Field("endpoint", Section("endpoint"), "how clients reach the API server", required=True),
         Field("network", Section("network"), "the nodes' network", required=True),
         Field("nodes", Section("nodes[]", "list"), "every machine, in boot order; the first control plane runs "
               "kubeadm init", required=True),
         Field("ssh_authorized_keys", Texts(_ssh_key, doc="list of OpenSSH public keys"),
               "OpenSSH public keys for admin_user (one line of ~/.ssh/id_ed25519.pub each)", default=()),
         Field("admin_user", Text(values.admin_user, doc="Linux user name"), "the login user, passwordless sudo; "
               "not a system account (root login and passwords are off)", default="ops"),
         Field("registry", Section("registry"), "Harbor registry settings (needed with a node of role registry)",
               nullable=True),
         Field("bundle", Section("bundle"), "where nodes find the offline Kubernetes bundle"),
         Field("bootstrap", Section("bootstrap"), "first-boot deadlines")),
    *_in("cluster",
         Field("name", Label("cluster name"), "RFC 1123 label; also names the state directory", required=True),
         Field("kubernetes_version", Version(), f"{SUPPORTED_RANGE} as MAJOR.MINOR.PATCH, quoted, e.g. '1.34.2' "
               "(imagegen init resolves '1.34')", required=True),
         Field("container_runtime", Choice(ContainerRuntime), "container runtime",
               default=ContainerRuntime.CONTAINERD),
         Field("cri_dockerd", Flag(), "required true for docker on Kubernetes >= 1.24", default=False),
         Field("cni", Choice(Cni), "pod network; host-gw is built in (static routes, no image)", default=Cni.CALICO),
         Field("cni_manifest", Text(values.url_or_path, doc="URL or absolute path"), "URL or absolute path; a "
               "bundle's extras/<cni>.yaml wins",
               default_from=lambda got: _CNI_MANIFESTS[got["cni"]],
               default_doc="the project's release manifest for the CNI"),
         Field("kube_proxy_mode", Choice(ProxyMode), "kube-proxy mode", default=ProxyMode.IPVS),
         Field("pod_cidr", Cidr(), "pod network", default=ipaddress.IPv4Network("10.244.0.0/16")),
         Field("service_cidr", Cidr(), "service network, /12 to /28", default=ipaddress.IPv4Network("10.96.0.0/12")),
         Field("dns_domain", DnsName(), "cluster DNS domain", default="cluster.local"),
         Field("image_repository", Text(values.image_repository, doc="image repository"), "where kubeadm pulls "
               "control-plane images (a private mirror goes here)", default="registry.k8s.io"),
         Field("package_repository", Text(values.url, doc="URL"), "Kubernetes apt repository",
               default_from=_package_repository, default_doc="pkgs.k8s.io for the plan's minor"),
         Field("distro", Choice(Distro), "node distribution (profiles/distros/)", default=Distro.DEBIAN_12),
         Field("distro_mirror", Section("cluster.distro_mirror"), "the distribution's package mirror, written into "
               "apt's sources by cloud-init's apt module", nullable=True),
         Field("timezone", Text(values.timezone, doc="IANA zone"), "IANA time zone", default="UTC"),
         Field("ntp_servers", Texts(values.host_or_ip, doc="list of host names or IPv4 addresses"),
               "systemd-timesyncd servers; empty keeps the distribution's", default=()),
         Field("token_ttl", Duration(), "bootstrap token lifetime, counted from kubeadm init", default="24h"),
         Field("certificate_signing_duration", Duration(), "controller-manager's cluster-signing-duration",
               default="87600h"),
         Field("skip_addons", Texts(choices=ADDONS, unknown="is not a kubeadm addon"), "kubeadm addons to skip",
               default=()),
         Field("ignore_preflight_errors", Texts(values.preflight_check, doc="list of check names"),
               "kubeadm preflight checks to ignore", default=()),
         Field("kube_vip_image", Text(values.image, doc="image"), "kube-vip image (endpoint.mode kube-vip)",
               default="ghcr.io/kube-vip/kube-vip:v0.8.9"),
         Field("etcd_image_tag", Text(values.image_tag, doc="image tag"), "etcd image tag override, e.g. "
               "3.4.13-0 when the bundle's etcd carries that tag",
               default="", default_doc="kubeadm's tag for the Kubernetes version"),
         Field("sysctl", Overrides(("string", "integer"), doc="mapping of key to value"),
               "sysctl overrides and additions, merged over imagegen's defaults",
               default=tuple(sorted(DEFAULT_SYSCTL.items()))),
         Field("journald", Overrides(("string", "integer", "boolean"), JOURNALD_KEYS), "journald.conf [Journal] "
               "overrides", default=tuple(DEFAULT_JOURNALD.items())),
         Field("docker", Section("cluster.docker"), "Docker daemon settings (container_runtime docker)"),
         Field("registry_mirrors", Texts(values.url, doc="list of URLs"), "mirrors for docker.io (URLs); shorthand "
               "for cluster.mirrors.docker.io", default=()),
         Field("etcd_snapshot_retention", Int(1, 365), "etcd snapshots kept on each control plane", default=7),
         Field("component_args", Overrides(("string", "integer"), COMPONENTS, nested=True), "extra flags per "
               "control-plane component, without the leading --", default=()),
         Field("mirrors", Section("cluster.mirrors.*", "map"), "container image mirrors per registry host "
               "(docker.io, registry.k8s.io, ghcr.io, ...)", default=()),
         Field("platform_limits", Texts(choices=PLATFORMS, unknown="is not a platform with a known user-data limit",
                                        unique=True),
               "platforms whose user-data size limit every node must fit; render fails otherwise", default=())),
    *_in("cluster.docker",
         Field("registry_mirrors", Texts(values.url, doc="list of URLs"), "Docker registry mirrors (URLs)",
               default=()),
         Field("insecure_registries", Texts(values.registry_host, doc="list of HOST[:PORT] or CIDR"),
               "registries Docker may reach over plain HTTP or without verifying TLS", default=()),
         Field("data_root", Text(values.absolute_path, doc="absolute path"), "absolute path",
               default="/var/lib/docker"),
         Field("log_max_size", Text(_log_size, "^[0-9]+[kmg]$", doc="size"), "json-file log size", default="100m"),
         Field("log_max_file", Int(1, 100), "json-file log files kept", default=5)),
    *_in("cluster.mirrors.*",
         Field("endpoints", Texts(values.url, min_items=1, empty_fix="list at least one mirror URL",
                                    doc="list of URLs"), "mirror URLs, tried in order "
               "before the registry itself", required=True),
         Field("ca_file", Text(values.local_file_name, doc="file name"), "PEM CA certificate(s) of the mirrors, "
               "a file on this machine (relative to the plan), written beside hosts.toml", default="",
               default_doc="none (the system's CA certificates)"),
         Field("skip_verify", Flag(), "do not verify the mirrors' TLS certificates", default=False)),
    *_in("cluster.distro_mirror",
         Field("url", Text(values.url, doc="URL"), "the mirror's root, e.g. http://mirror.example.internal/debian",
               required=True),
         Field("key_file", Text(values.local_file_name, doc="file name"), "ASCII-armored OpenPGP public key that "
               "signs the mirror, a file on this machine (relative to the plan), trusted in /etc/apt/trusted.gpg.d",
               default="", default_doc="none (the image's own apt keys)"),
         Field("suites", Texts(_suite, unique=True, doc="list of suite names"), "one sources.list line per suite, "
               "with the distribution's mirror_components (profiles/distros/)",
               default=(), default_doc="the distribution's codename and <codename>-updates")),
    *_in("endpoint",
         Field("mode", Choice(EndpointMode), "load-balancer (needs load-balancer nodes and vip), kube-vip (needs "
               "vip) or single", required=True),
         Field("vip", IPv4(), "the virtual IP of the API endpoint", nullable=True),
         Field("port", Int(1, 65535), "API endpoint port", default=6443),
         Field("name", DnsName(), "API endpoint DNS name, resolved through /etc/hosts", default="",
               default_doc="<cluster.name>-api")),
    *_in("network",
         Field("cidr", Cidr(), "the nodes' network", required=True),
         Field("gateway", IPv4(), "default gateway", required=True),
         Field("dns", IPv4s(), "DNS servers", default=()),
         Field("interface", Label("interface name", _interface), "interface name the NIC is renamed to (matched "
               "by MAC)", default="eth0")),
    *_in("nodes[]",
         Field("name", Label("hostname", _node_name), "host name, RFC 1123 label", required=True),
         Field("role", Choice(Role), "what the node does", required=True),
         Field("ip", IPv4(), "static address inside network.cidr", required=True),
         Field("mac", Mac(), "the NIC's MAC address (upper case is accepted, written in lower case)", required=True),
         Field("generation", Int(1, 1_000_000), "bump only to re-provision the node: part of its cloud-init "
               "instance-id", default=1)),
    *_in("registry",
         Field("hostname", DnsName(), "registry DNS name", required=True),
         Field("harbor_version", Text(values.harbor_version, doc="Harbor version"), "Harbor version, e.g. v2.11.1",
               default="v2.11.1"),
         Field("harbor_installer", Text(values.url_or_path, doc="URL or absolute path"), "offline installer URL or "
               "absolute path", default_from=_harbor_installer, default_doc="the GitHub release"),
         Field("data_volume", Text(values.absolute_path, doc="absolute path"), "absolute path",
               default="/data/harbor"),
         Field("use_as_mirror", Flag(), "containerd pulls docker.io and the image repository through Harbor "
               "proxy-cache projects", default=False)),
    *_in("bundle",
         Field("source", Choice(BundleSource), "online, disk or image", default=BundleSource.ONLINE),
         Field("label", Text(values.volume_label, doc="volume label"), "file system label of the bundle disk, at "
               "most 16 bytes", default="imagegen-bundle")),
    *_in("bootstrap",
         Field("deadline_seconds", Int(60, 86400), "how long a node's first boot may take", default=3600),
         Field("join_attempts", Int(1, 50), "kubeadm join attempts", default=5)),
)

# The model class each section fills, and its attributes that do not come from a plan key.
MODELS: dict[str, type] = {"": model.Plan, "cluster": model.Cluster, "cluster.docker": model.DockerSettings,
                           "cluster.mirrors.*": model.RegistryMirror, "cluster.distro_mirror": model.DistroMirror,
                           "endpoint": model.Endpoint, "network": model.Network, "nodes[]": model.Node,
                           "registry": model.Registry, "bundle": model.Bundle, "bootstrap": model.Bootstrap}
NOT_FROM_PLAN = {"": (), "cluster.mirrors.*": ("host", "ca_pem"), "cluster.distro_mirror": ("key",),
                 "nodes[]": ("index",)}

SECTIONS: dict[str, tuple[Field, ...]] = {
    name: tuple(f for f in FIELDS if f.section == name) for name in dict.fromkeys(f.section for f in FIELDS)}
BY_PATH: dict[str, Field] = {f.path: f for f in FIELDS}


def key_tables() -> dict[str, dict[str, bool]]:
    """Every section of a plan and its keys (name -> required): a view of FIELDS. `nodes[]` is one node,
    `cluster.mirrors.*` one registry's mirror."""
    return {name: {f.key: f.required for f in fields} for name, fields in SECTIONS.items()}


def choices(f: Field) -> tuple[str, ...]:
    """The values (or, for a mapping, the keys) a field accepts, if it names them."""
    t = f.type
    if isinstance(t, Choice):
        return tuple(m.value for m in t.choices)
    if isinstance(t, Texts):
        return t.choices
    if isinstance(t, Overrides):
        return t.keys
    return ()


def plan_constants() -> dict[str, tuple[str, ...]]:
    """The choices the parser accepts, by field path: a view of FIELDS."""
    return {f.path: choices(f) for f in FIELDS if choices(f)}


def plan_default(f: Field) -> Any:
    """A field's default as the plan would spell it (JSON-compatible), or None when it has none to show: required,
    derived from other fields, a section, or absent means none (endpoint.vip)."""
    if f.required or f.derived or isinstance(f.type, Section) or f.default is None:
        return None
    if isinstance(f.type, Overrides):
        return {}  # merged over imagegen's defaults (model.DEFAULT_SYSCTL, DEFAULT_JOURNALD)
    return _json_value(f.default)


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, (str, int, bool)):
        return value
    return str(value)


# -- the README's plan reference ------------------------------------------------------------------------------------

README = "README.md"
README_BEGIN = "<!-- plan-reference: generated from imagegen/plan/fields.py by `python -m imagegen.plan --readme`; " \
               "do not edit by hand -->"
README_END = "<!-- end of plan-reference -->"


def _value_doc(f: Field) -> str:
    t = f.type
    if isinstance(t, Choice | Texts | Overrides) and choices(f):
        listed = " \\| ".join(f"`{c}`" for c in choices(f))
        if isinstance(t, Choice):
            return listed
        return f"list of {listed}" if isinstance(t, Texts) else f"mapping with keys {listed}"
    if isinstance(t, Int):
        return f"integer, {t.low} to {t.high}"
    if isinstance(t, Section):
        return {"list": f"list of `{t.name}`", "map": f"mapping of registry host to `{t.name}`"}.get(t.each, "section")
    return t.doc


def _default_doc(f: Field) -> str:
    if f.required:
        return "**required**"
    if f.derived:
        return f.default_doc.replace("<", "&lt;").replace(">", "&gt;")
    shown = plan_default(f)
    if shown is None:
        return ""
    return f"`{shown}`" if isinstance(shown, str) and shown else f"`{json.dumps(shown)}`"


def reference_markdown() -> str:
    """The plan reference for README.md: every field of FIELDS with its value, default and description."""
    lines = [README_BEGIN, "", "| field | value | default | description |", "|---|---|---|---|"]
    for f in FIELDS:
        description = f.description.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `{f.path}` | {_value_doc(f)} | {_default_doc(f)} | {description} |")
    lines += ["", README_END]
    return "\n".join(lines) + "\n"


def readme_with_reference(readme: str) -> str:
    """`readme` with the text between the plan-reference markers replaced by `reference_markdown()`."""
    begin = readme.index(README_BEGIN.split(":")[0])
    end = readme.index(README_END, begin) + len(README_END) + 1
    return readme[:begin] + reference_markdown() + readme[end:]
