"""The cluster plan: typed, frozen objects built once from YAML, with every problem reported at once.

Parsing happens here, at the edge. Everything after `load_plan` trusts these values.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from imagegen import safeyaml, values
from imagegen.errors import MISSING, PlanError, Problem
from imagegen.versions import SUPPORTED_RANGE, KubeVersion, VersionRules, rules_for

ROLES = ("control-plane", "worker", "load-balancer", "registry")
KUBERNETES_ROLES = ("control-plane", "worker")
RUNTIMES = ("containerd", "docker")
CNIS = ("calico", "flannel", "host-gw")
PROXY_MODES = ("ipvs", "iptables")
ENDPOINT_MODES = ("load-balancer", "kube-vip", "single")
DISTROS = ("debian-12", "ubuntu-22.04", "ubuntu-24.04")
BUNDLE_SOURCES = ("online", "disk", "image")
# Platforms whose user-data size limit a plan may ask render to enforce (imagegen.userdata holds the limits).
PLATFORMS = ("ec2", "openstack", "azure", "gce")
MIRROR_CA_MAX_BYTES = 1 << 20

# Every pattern is used with fullmatch: `$` would also accept a trailing newline ("cp-1\n").
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_SYSCTL_KEY = re.compile(r"[a-z0-9_]+(\.[a-zA-Z0-9_*-]+)+")
_SSH_KEY = re.compile(r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp[0-9]+|sk-[!-~]+) [A-Za-z0-9+/=]+( [ -~]*)?")
_LOG_SIZE = re.compile(r"[0-9]+[kmg]")
_JOURNALD_VALUE = re.compile(r"[A-Za-z0-9.]+")
_JOURNALD_KEYS = ("Storage", "Compress", "SystemMaxUse", "SystemMaxFileSize", "MaxRetentionSec",
                  "ForwardToSyslog", "SystemKeepFree", "RuntimeMaxUse", "MaxFileSec", "RateLimitBurst",
                  "RateLimitIntervalSec")

DEFAULT_SYSCTL: dict[str, str] = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
    "vm.swappiness": "0",
    "vm.overcommit_memory": "1",
    "vm.panic_on_oom": "0",
    "fs.inotify.max_user_instances": "8192",
    "fs.inotify.max_user_watches": "1048576",
    "fs.file-max": "52706963",
    "fs.nr_open": "52706963",
    "net.netfilter.nf_conntrack_max": "2310720",
}

DEFAULT_JOURNALD: dict[str, str] = {
    "Storage": "persistent",
    "Compress": "yes",
    "SystemMaxUse": "10G",
    "SystemMaxFileSize": "200M",
    "MaxRetentionSec": "2week",
    "ForwardToSyslog": "no",
}


@dataclass(frozen=True)
class DockerSettings:
    registry_mirrors: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    data_root: str = "/var/lib/docker"
    log_max_size: str = "100m"
    log_max_file: int = 5


@dataclass(frozen=True)
class RegistryMirror:
    """Where nodes pull one registry's images from: `cluster.mirrors.<host>` (or `registry_mirrors`, docker.io)."""

    host: str                       # the upstream registry as images name it, HOST[:PORT]: docker.io, ghcr.io
    endpoints: tuple[str, ...]      # mirror URLs, tried in order before the upstream
    ca_file: str = ""               # as written in the plan (the operator's machine)
    ca_pem: str = ""                # its certificates, read when the plan is loaded
    skip_verify: bool = False


@dataclass(frozen=True)
class Cluster:
    name: str
    kubernetes_version: KubeVersion
    container_runtime: str
    cri_dockerd: bool
    cni: str
    cni_manifest: str
    kube_proxy_mode: str
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    dns_domain: str
    image_repository: str
    package_repository: str
    distro: str
    timezone: str
    ntp_servers: tuple[str, ...]
    token_ttl: str
    certificate_signing_duration: str
    skip_addons: tuple[str, ...]
    ignore_preflight_errors: tuple[str, ...]
    kube_vip_image: str
    etcd_image_tag: str
    sysctl: tuple[tuple[str, str], ...]
    journald: tuple[tuple[str, str], ...]
    docker: DockerSettings
    registry_mirrors: tuple[str, ...]
    etcd_snapshot_retention: int
    component_args: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    mirrors: tuple[RegistryMirror, ...] = ()
    platform_limits: tuple[str, ...] = ()

    def mirror_for(self, host: str) -> RegistryMirror | None:
        return next((m for m in self.mirrors if m.host == host), None)

    def args_for(self, component: str) -> dict[str, str]:
        return dict(dict(self.component_args).get(component, ()))

    @property
    def rules(self) -> VersionRules:
        return rules_for(self.kubernetes_version)


@dataclass(frozen=True)
class Endpoint:
    mode: str
    vip: ipaddress.IPv4Address | None
    port: int
    name: str


@dataclass(frozen=True)
class Network:
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dns: tuple[ipaddress.IPv4Address, ...]
    interface: str


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    ip: ipaddress.IPv4Address
    mac: str
    index: int
    # Bumped by the operator only to re-provision this node: part of its cloud-init instance-id.
    generation: int = 1

    @property
    def is_kubernetes(self) -> bool:
        return self.role in KUBERNETES_ROLES


@dataclass(frozen=True)
class Registry:
    hostname: str
    harbor_version: str
    harbor_installer: str
    data_volume: str
    use_as_mirror: bool


@dataclass(frozen=True)
class Bundle:
    source: str
    label: str


@dataclass(frozen=True)
class Bootstrap:
    deadline_seconds: int
    join_attempts: int


@dataclass(frozen=True)
class Plan:
    cluster: Cluster
    endpoint: Endpoint
    network: Network
    nodes: tuple[Node, ...]
    ssh_authorized_keys: tuple[str, ...]
    admin_user: str
    registry: Registry | None
    bundle: Bundle
    bootstrap: Bootstrap
    pod_subnets: tuple[tuple[str, ipaddress.IPv4Network], ...] = field(default=())

    @property
    def control_planes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "control-plane")

    @property
    def first_control_plane(self) -> Node:
        return self.control_planes[0]

    @property
    def load_balancers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "load-balancer")

    @property
    def kubernetes_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.is_kubernetes)

    @property
    def endpoint_address(self) -> ipaddress.IPv4Address:
        if self.endpoint.vip is not None:
            return self.endpoint.vip
        return self.first_control_plane.ip

    @property
    def endpoint_hostport(self) -> str:
        return f"{self.endpoint.name}:{self.endpoint.port}"

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def pod_subnet(self, name: str) -> ipaddress.IPv4Network:
        return dict(self.pod_subnets)[name]


# ---------------------------------------------------------------------------------------------------------------
# Field readers: each appends Problems instead of raising, so a whole plan is checked in one pass.


def _suggest(value: object, options: tuple[str, ...] | list[str], fallback: str = "") -> str:
    """'did you mean ...?' for the closest option, else `fallback`."""
    close = difflib.get_close_matches(str(value), list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else fallback


class _Reader:
    def __init__(self, base: Path | None = None) -> None:
        self.problems: list[Problem] = []
        # Relative file names in the plan (cluster.mirrors.*.ca_file) are read from the plan's directory.
        self.base = base or Path.cwd()

    def add(self, path: str, value: object, message: str, fix: str = "") -> None:
        self.problems.append(Problem(path, value, message, fix))

    def section(self, data: object, path: str, keys: Mapping[str, bool]) -> dict[str, Any]:
        """Check that `data` is a mapping with only `keys` (name -> required); return it (or {})."""
        if data is MISSING or data is None:
            data = {}
        if not isinstance(data, dict):
            self.add(path, data, "must be a mapping", f"write {path} as 'key: value' lines")
            return {}
        for key in data:
            if not isinstance(key, str) or key not in keys:
                hint = _suggest(key, list(keys), f"allowed keys: {', '.join(sorted(keys))}")
                self.add(f"{path}.{key}" if path else str(key), MISSING, "unknown key", hint)
        for key, required in keys.items():
            if required and key not in data:
                self.add(f"{path}.{key}" if path else key, MISSING, "is required", "add it")
        return data

    def string(self, data: dict[str, Any], key: str, path: str, default: str = "") -> str:
        value = data.get(key, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, str) or not value.strip():
            self.add(path, value, "must be a non-empty string", "quote it if YAML reads it as another type")
            return default
        return value

    def checked(self, data: dict[str, Any], key: str, path: str, default: str,
                check: Callable[[str], values.Verdict]) -> str:
        """A string that reaches a shell or a config file: it passes `check` or is a problem (and the default)."""
        value = self.string(data, key, path, default)
        verdict = check(value)
        if verdict is not None:
            self.add(path, value, *verdict)
            return default
        return value

    def boolean(self, data: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.add(path, value, "must be true or false")
            return default
        return value

    def integer(self, data: dict[str, Any], key: str, path: str, default: int, low: int, high: int) -> int:
        value = data.get(key, MISSING)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.add(path, value, f"must be a whole number from {low} to {high}")
            return default
        return value

    def choice(self, data: dict[str, Any], key: str, path: str, choices: tuple[str, ...], default: str) -> str:
        value = data.get(key, MISSING)
        if value is MISSING:
            return default
        if value not in choices:
            self.add(path, value, f"must be one of {', '.join(choices)}", _suggest(value, choices))
            return default
        return str(value)

    def string_list(self, data: dict[str, Any], key: str, path: str,
                    check: Callable[[str], values.Verdict] | None = None) -> tuple[str, ...]:
        value = data.get(key, MISSING)
        if value is MISSING or value is None:
            return ()
        if not isinstance(value, list):
            self.add(path, value, "must be a list", f"write {path} as '- item' lines")
            return ()
        out = []
        for i, item in enumerate(value):
            verdict = check(item) if check is not None and isinstance(item, str) and item.strip() else None
            if not isinstance(item, str) or not item.strip():
                self.add(f"{path}[{i}]", item, "must be a non-empty string")
            elif verdict is not None:
                self.add(f"{path}[{i}]", item, *verdict)
            else:
                out.append(item)
        return tuple(out)

    def ipv4(self, path: str, value: object) -> ipaddress.IPv4Address | None:
        if value is MISSING:
            return None
        if not isinstance(value, str):
            self.add(path, value, "must be an IPv4 address written as a string", "e.g. '192.168.10.11'")
            return None
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            self.add(path, value, "is not a valid IP address", "write four decimal octets without leading zeros")
            return None
        if not isinstance(addr, ipaddress.IPv4Address):
            self.add(path, value, "IPv6 is not supported yet", "use an IPv4 address")
            return None
        if str(addr) != value:
            self.add(path, value, "is not in canonical form", f"write '{addr}'")
            return None
        return addr

    def cidr(self, path: str, value: object) -> ipaddress.IPv4Network | None:
        if value is MISSING:
            return None
        if not isinstance(value, str) or "/" not in value:
            self.add(path, value, "must be a CIDR string", "e.g. '10.244.0.0/16'")
            return None
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            self.add(path, value, "is not a valid CIDR", "e.g. '10.244.0.0/16'")
            return None
        if not isinstance(net, ipaddress.IPv4Network):
            self.add(path, value, "IPv6 is not supported yet", "use an IPv4 CIDR")
            return None
        if str(net) != value:
            self.add(path, value, "is not in canonical form (host bits set or leading zeros)", f"write '{net}'")
            return None
        return net

    def mac(self, path: str, value: object) -> str | None:
        if value is MISSING:
            return None
        if not isinstance(value, str):
            self.add(path, value, "must be a MAC address string", "e.g. '52:54:00:12:34:56'")
            return None
        # Proxmox and VMware print MACs in upper case: accepted and written in lower case.
        if _MAC.fullmatch(value.lower()):
            mac = value.lower()
            if int(mac[:2], 16) & 1:
                self.add(path, value, "is a multicast MAC address", "use a unicast address, e.g. 52:54:00:..")
                return None
            if mac == "00:00:00:00:00:00":
                self.add(path, value, "is the all-zero MAC address", "use the NIC's real address")
                return None
            return mac
        canonical = re.sub(r"[^0-9a-fA-F]", "", value).lower()
        if len(canonical) == 12:
            fixed = ":".join(canonical[i:i + 2] for i in range(0, 12, 2))
            self.add(path, value, "is not in canonical form", f"write '{fixed}' (lower case, colons)")
        else:
            self.add(path, value, "is not a valid MAC address", "six hex octets, e.g. '52:54:00:12:34:56'")
        return None

    def label(self, path: str, value: object, what: str = "hostname") -> str | None:
        if value is MISSING:
            return None
        if not isinstance(value, str):
            self.add(path, value, f"must be a {what} string")
            return None
        if len(value) > 63:
            self.add(path, value, f"{what} is longer than 63 characters", "shorten it (RFC 1123 label)")
            return None
        if not _LABEL.fullmatch(value):
            fix = f"write '{value.lower()}'" if _LABEL.fullmatch(value.lower()) else \
                "use lower-case letters, digits and '-', starting and ending with a letter or digit (RFC 1123)"
            self.add(path, value, f"is not a valid {what}", fix)
            return None
        return value

    def dns_name(self, path: str, value: object) -> str | None:
        if value is MISSING:
            return None
        if not isinstance(value, str) or len(value) > 253 or not all(
                _LABEL.fullmatch(part) for part in value.split(".")):
            fix = "use lower-case RFC 1123 labels separated by dots, e.g. 'k8s-api.example.internal'"
            self.add(path, value, "is not a valid DNS name", fix)
            return None
        return value

    def duration(self, data: dict[str, Any], key: str, path: str, default: str) -> str:
        value = data.get(key, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, str) or not value or not values.DURATION.fullmatch(value):
            self.add(path, value, "must be a duration like '24h', '90m' or '8760h'")
            return default
        return value


# ---------------------------------------------------------------------------------------------------------------

_TOP = {"cluster": True, "endpoint": True, "network": True, "nodes": True, "ssh_authorized_keys": False,
        "admin_user": False, "registry": False, "bundle": False, "bootstrap": False}
_CLUSTER = {"name": True, "kubernetes_version": True, "container_runtime": False, "cri_dockerd": False, "cni": False,
            "cni_manifest": False, "kube_proxy_mode": False, "pod_cidr": False, "service_cidr": False,
            "dns_domain": False, "image_repository": False, "package_repository": False, "distro": False,
            "timezone": False, "ntp_servers": False, "token_ttl": False, "certificate_signing_duration": False,
            "skip_addons": False, "ignore_preflight_errors": False, "kube_vip_image": False,
            "etcd_image_tag": False, "sysctl": False, "journald": False, "docker": False, "registry_mirrors": False,
            "etcd_snapshot_retention": False, "component_args": False,
            "mirrors": False, "platform_limits": False}
_DOCKER = {"registry_mirrors": False, "insecure_registries": False, "data_root": False, "log_max_size": False,
           "log_max_file": False}
_MIRROR = {"endpoints": True, "ca_file": False, "skip_verify": False}
_ENDPOINT = {"mode": True, "vip": False, "port": False, "name": False}
_NETWORK = {"cidr": True, "gateway": True, "dns": False, "interface": False}
_NODE = {"name": True, "role": True, "ip": True, "mac": True, "generation": False}
_REGISTRY = {"hostname": True, "harbor_version": False, "harbor_installer": False, "data_volume": False,
             "use_as_mirror": False}
_BUNDLE = {"source": False, "label": False}
_BOOTSTRAP = {"deadline_seconds": False, "join_attempts": False}

_CNI_MANIFESTS = {
    "calico": "https://raw.githubusercontent.com/projectcalico/calico/v3.28.2/manifests/calico.yaml",
    "flannel": "https://github.com/flannel-io/flannel/releases/download/v0.25.7/kube-flannel.yml",
    "host-gw": "",
}
_ADDONS = ("coredns", "kube-proxy")


def default_package_repository(version: KubeVersion) -> str:
    return f"https://pkgs.k8s.io/core:/stable:/{version.minor_series}/deb/"


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; raise PlanError listing every problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes() if source != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        raise PlanError([Problem("plan", source, f"cannot be read: {exc.strerror}", "check the path")],
                        source) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise PlanError([Problem("plan", MISSING, f"is not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line})",
                                 "save the plan as UTF-8")], source) from exc
    return parse_plan_text(text, source)


def parse_plan_text(text: str, source: str = "plan") -> Plan:
    try:
        data = safeyaml.load(text)
    except safeyaml.PlanYamlError as exc:
        raise PlanError([Problem("plan", MISSING, exc.message, exc.fix)], source) from exc
    except RecursionError as exc:
        raise PlanError([Problem("plan", MISSING, "is nested too deeply", "a plan is a few levels deep")],
                        source) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError([Problem("plan", MISSING, f"YAML syntax error at {where}: {problem}",
                                 "fix the YAML (indentation, quotes, colons)")], source) from exc
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise PlanError([Problem("plan", MISSING, f"the document is {kind}, not a mapping",
                                 "start with 'cluster:', 'endpoint:', 'network:' and 'nodes:' sections")], source)
    return parse_plan(data, source)


def parse_plan(data: dict[str, Any], source: str = "plan") -> Plan:
    plan_file = Path(source)
    r = _Reader(plan_file.resolve().parent if source != "-" and plan_file.is_file() else None)
    top = r.section(data, "", _TOP)
    cluster = _parse_cluster(r, top.get("cluster", MISSING))
    endpoint = _parse_endpoint(r, top.get("endpoint", MISSING))
    network = _parse_network(r, top.get("network", MISSING))
    nodes, nodes_complete = _parse_nodes(r, top.get("nodes", MISSING))
    keys = r.string_list(top, "ssh_authorized_keys", "ssh_authorized_keys", _ssh_key_check)
    admin_user = r.checked(top, "admin_user", "admin_user", "ops", values.admin_user)
    registry = _parse_registry(r, top.get("registry", MISSING))
    bundle = _parse_bundle(r, top.get("bundle", MISSING))
    bootstrap = _parse_bootstrap(r, top.get("bootstrap", MISSING))

    if endpoint is not None and cluster is not None:
        endpoint = _resolve_endpoint(endpoint, cluster, nodes)
    _cross_checks(r, _Parsed(cluster, endpoint, network, nodes, nodes_complete, registry, bundle))
    if r.problems or cluster is None or endpoint is None or network is None or not nodes_complete:
        if not r.problems:  # pragma: no cover - a None above always records a problem
            r.add("plan", MISSING, "is incomplete")
        raise PlanError(r.problems, source)
    plan = Plan(cluster=cluster, endpoint=endpoint, network=network, nodes=nodes, ssh_authorized_keys=keys,
                admin_user=admin_user, registry=registry, bundle=bundle, bootstrap=bootstrap)
    return _with_pod_subnets(plan)


def _ssh_key_check(key: str) -> values.Verdict:
    if not _SSH_KEY.fullmatch(key):
        return "is not an OpenSSH public key", "paste one line of ~/.ssh/id_ed25519.pub"
    return None


def _parse_cluster(r: _Reader, data: object) -> Cluster | None:
    if data is MISSING:
        return None
    c = r.section(data, "cluster", _CLUSTER)
    name = r.label("cluster.name", c.get("name", MISSING), "cluster name")
    raw_version = c.get("kubernetes_version", MISSING)
    version = None
    if raw_version is not MISSING:
        try:
            version = KubeVersion.parse(raw_version) if isinstance(raw_version, str) else None
        except ValueError:
            version = None
        if version is None:
            fix = f"write '{raw_version[1:]}'" if isinstance(raw_version, str) and raw_version.startswith("v") \
                else "write MAJOR.MINOR.PATCH as a quoted string, e.g. '1.34.2'"
            r.add("cluster.kubernetes_version", raw_version, "is not a Kubernetes version", fix)
        elif not version.supported():
            r.add("cluster.kubernetes_version", raw_version, "is not supported",
                  f"imagegen supports {SUPPORTED_RANGE}")
            version = None
    runtime = r.choice(c, "container_runtime", "cluster.container_runtime", RUNTIMES, "containerd")
    cri_dockerd = r.boolean(c, "cri_dockerd", "cluster.cri_dockerd", False)
    cni = r.choice(c, "cni", "cluster.cni", CNIS, "calico")
    cni_manifest = r.checked(c, "cni_manifest", "cluster.cni_manifest", _CNI_MANIFESTS[cni], _url_or_path_or_none)
    proxy = r.choice(c, "kube_proxy_mode", "cluster.kube_proxy_mode", PROXY_MODES, "ipvs")
    pod = r.cidr("cluster.pod_cidr", c.get("pod_cidr", "10.244.0.0/16"))
    svc = r.cidr("cluster.service_cidr", c.get("service_cidr", "10.96.0.0/12"))
    dns_domain = r.dns_name("cluster.dns_domain", c.get("dns_domain", "cluster.local")) or "cluster.local"
    image_repo = r.checked(c, "image_repository", "cluster.image_repository", "registry.k8s.io",
                           values.image_repository)
    distro = r.choice(c, "distro", "cluster.distro", DISTROS, "debian-12")
    timezone = r.checked(c, "timezone", "cluster.timezone", "UTC", values.timezone)
    ntp = r.string_list(c, "ntp_servers", "cluster.ntp_servers", values.host_or_ip)
    ttl = r.duration(c, "token_ttl", "cluster.token_ttl", "24h")
    signing = r.duration(c, "certificate_signing_duration", "cluster.certificate_signing_duration", "87600h")
    skip = r.string_list(c, "skip_addons", "cluster.skip_addons")
    for i, addon in enumerate(skip):
        if addon not in _ADDONS:
            r.add(f"cluster.skip_addons[{i}]", addon, f"is not a kubeadm addon; use {' or '.join(_ADDONS)}")
    ignore = r.string_list(c, "ignore_preflight_errors", "cluster.ignore_preflight_errors", values.preflight_check)
    kube_vip_image = r.checked(c, "kube_vip_image", "cluster.kube_vip_image", "ghcr.io/kube-vip/kube-vip:v0.8.9",
                               values.image)
    etcd_tag = r.checked(c, "etcd_image_tag", "cluster.etcd_image_tag", "", _or_empty(values.image_tag))
    sysctl = _parse_sysctl(r, c.get("sysctl", MISSING))
    journald = _parse_journald(r, c.get("journald", MISSING))
    docker = _parse_docker(r, c.get("docker", MISSING))
    mirrors = r.string_list(c, "registry_mirrors", "cluster.registry_mirrors", values.url)
    by_registry = _parse_mirrors(r, c.get("mirrors", MISSING), mirrors)
    platforms = r.string_list(c, "platform_limits", "cluster.platform_limits")
    for i, platform in enumerate(platforms):
        if platform not in PLATFORMS:
            r.add(f"cluster.platform_limits[{i}]", platform, "is not a platform with a known user-data limit",
                  _suggest(platform, PLATFORMS, f"use {', '.join(PLATFORMS)}"))
    retention = r.integer(c, "etcd_snapshot_retention", "cluster.etcd_snapshot_retention", 7, 1, 365)
    component_args = _parse_component_args(r, c.get("component_args", MISSING))
    if name is None or version is None or pod is None or svc is None:
        return None
    package_repo = r.checked(c, "package_repository", "cluster.package_repository",
                             default_package_repository(version), values.url)
    return Cluster(name=name, kubernetes_version=version, container_runtime=runtime, cri_dockerd=cri_dockerd,
                   cni=cni, cni_manifest=cni_manifest, kube_proxy_mode=proxy, pod_cidr=pod, service_cidr=svc,
                   dns_domain=dns_domain, image_repository=image_repo, package_repository=package_repo,
                   distro=distro, timezone=timezone, ntp_servers=ntp, token_ttl=ttl,
                   certificate_signing_duration=signing, skip_addons=skip, ignore_preflight_errors=ignore,
                   kube_vip_image=kube_vip_image, etcd_image_tag=etcd_tag, sysctl=sysctl, journald=journald,
                   docker=docker, registry_mirrors=mirrors, etcd_snapshot_retention=retention,
                   component_args=component_args, mirrors=by_registry, platform_limits=tuple(dict.fromkeys(platforms)))


COMPONENTS = ("apiserver", "controller-manager", "scheduler", "etcd")
_FLAG = re.compile(r"[a-z0-9][a-z0-9-]*")


def _url_or_path_or_none(value: str) -> values.Verdict:
    # host-gw has no manifest: its default is the empty string.
    return values.url_or_path(value) if value else None


def _or_empty(check: Callable[[str], values.Verdict]) -> Callable[[str], values.Verdict]:
    return lambda value: check(value) if value else None


def _parse_mirrors(r: _Reader, data: object, docker_io: tuple[str, ...]) -> tuple[RegistryMirror, ...]:
    """cluster.mirrors: registry host -> {endpoints, ca_file, skip_verify}; `registry_mirrors` is docker.io's
    shorthand (endpoints only). Sorted by host, so the rendered order never depends on the plan's."""
    out: dict[str, RegistryMirror] = {}
    if docker_io:
        out["docker.io"] = RegistryMirror("docker.io", docker_io)
    if data is MISSING or data is None:
        return tuple(out.values())
    if not isinstance(data, dict):
        r.add("cluster.mirrors", data, "must be a mapping of registry host to its mirror",
              "e.g. {docker.io: {endpoints: ['https://mirror.example.internal']}}")
        return tuple(out.values())
    for host, item in data.items():
        path = f"cluster.mirrors.{host}"
        if not isinstance(host, str) or (verdict := values.registry_name(host)) is not None:
            r.add(path, host, *(verdict or ("is not a registry host", "")))
            continue
        if host in out:
            r.add(path, host, "is also given by cluster.registry_mirrors (docker.io's shorthand)",
                  "move those URLs into cluster.mirrors.docker.io.endpoints and drop registry_mirrors")
            continue
        m = r.section(item, path, _MIRROR)
        if not m:
            continue
        endpoints = r.string_list(m, "endpoints", f"{path}.endpoints", values.url)
        if "endpoints" in m and not endpoints and isinstance(m["endpoints"], list) and not m["endpoints"]:
            r.add(f"{path}.endpoints", [], "is empty", "list at least one mirror URL")
        skip = r.boolean(m, "skip_verify", f"{path}.skip_verify", False)
        ca_file = r.checked(m, "ca_file", f"{path}.ca_file", "", _or_empty(values.local_file_name))
        pem = _read_ca(r, f"{path}.ca_file", ca_file) if ca_file else ""
        if endpoints:
            out[host] = RegistryMirror(host, endpoints, ca_file, pem, skip)
    return tuple(out[h] for h in sorted(out))


def _read_ca(r: _Reader, path: str, name: str) -> str:
    """The PEM certificates of a mirror's CA file, read on the operator's machine when the plan is loaded."""
    file = r.base / name
    fix = "give the path of a PEM file of CA certificates (relative paths are read from the plan's directory)"
    try:
        if file.stat().st_size > MIRROR_CA_MAX_BYTES:
            r.add(path, name, f"is larger than {MIRROR_CA_MAX_BYTES} bytes", fix)
            return ""
        data = file.read_bytes()
    except OSError as exc:
        r.add(path, name, f"cannot be read: {exc.strerror}", fix)
        return ""
    verdict = values.pem_certificates(data)
    if verdict is not None:
        r.add(path, name, *verdict)
        return ""
    return data.decode("ascii")


def _parse_component_args(r: _Reader, data: object) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Extra flags for the control-plane components (kubeadm's extraArgs), e.g. longer leader-election
    timeouts on slow hosts: {controller-manager: {leader-elect-lease-duration: 60s}}."""
    if data is MISSING or data is None:
        return ()
    if not isinstance(data, dict):
        r.add("cluster.component_args", data, "must be a mapping of component to flags",
              f"components: {', '.join(COMPONENTS)}")
        return ()
    out = []
    for component, flags in data.items():
        path = f"cluster.component_args.{component}"
        if component not in COMPONENTS:
            r.add(path, MISSING, "is not a control-plane component",
                  _suggest(component, COMPONENTS, f"use one of {', '.join(COMPONENTS)}"))
            continue
        if not isinstance(flags, dict):
            r.add(path, flags, "must be a mapping of flag name (without --) to value")
            continue
        items = []
        for flag, value in flags.items():
            if not isinstance(flag, str) or not _FLAG.fullmatch(flag):
                r.add(f"{path}.{flag}", flag, "is not a flag name", "write it without the leading --")
            elif isinstance(value, bool) or not isinstance(value, (str, int)):
                r.add(f"{path}.{flag}", value, "must be a string or number")
            elif (verdict := values.flag_value(str(value))) is not None:
                r.add(f"{path}.{flag}", value, *verdict)
            else:
                items.append((flag, str(value)))
        out.append((component, tuple(sorted(items))))
    return tuple(sorted(out))


def _parse_sysctl(r: _Reader, data: object) -> tuple[tuple[str, str], ...]:
    merged = dict(DEFAULT_SYSCTL)
    if data is not MISSING and data is not None:
        if not isinstance(data, dict):
            r.add("cluster.sysctl", data, "must be a mapping of sysctl key to value")
        else:
            for key, value in data.items():
                path = f"cluster.sysctl.{key}"
                if not isinstance(key, str) or not _SYSCTL_KEY.fullmatch(key):
                    r.add(path, key, "is not a sysctl key", "e.g. 'net.core.somaxconn'")
                elif key == "net.ipv4.tcp_tw_recycle":
                    r.add(path, value, "was removed from Linux 4.12 and breaks NAT clients", "drop this key")
                elif isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
                    r.add(path, value, "must be a number or string")
                elif (verdict := values.sysctl_value(str(value))) is not None:
                    r.add(path, value, *verdict)
                else:
                    merged[key] = str(value)
    return tuple(sorted(merged.items()))


def _parse_journald(r: _Reader, data: object) -> tuple[tuple[str, str], ...]:
    merged = dict(DEFAULT_JOURNALD)
    if data is not MISSING and data is not None:
        if not isinstance(data, dict):
            r.add("cluster.journald", data, "must be a mapping of journald.conf key to value")
        else:
            for key, value in data.items():
                path = f"cluster.journald.{key}"
                if key not in _JOURNALD_KEYS:
                    r.add(path, MISSING, "is not a journald.conf [Journal] key handled here",
                          _suggest(key, _JOURNALD_KEYS, f"use one of {', '.join(_JOURNALD_KEYS)}"))
                elif isinstance(value, bool):
                    merged[key] = "yes" if value else "no"
                elif not isinstance(value, (int, str)) or not _JOURNALD_VALUE.fullmatch(str(value)):
                    r.add(path, value, "must be a plain value such as '10G', 'yes' or '2week'")
                else:
                    merged[key] = str(value)
    return tuple(merged.items())


def _parse_docker(r: _Reader, data: object) -> DockerSettings:
    d = r.section(data, "cluster.docker", _DOCKER)
    mirrors = r.string_list(d, "registry_mirrors", "cluster.docker.registry_mirrors", values.url)
    insecure = r.string_list(d, "insecure_registries", "cluster.docker.insecure_registries", values.registry_host)
    data_root = r.checked(d, "data_root", "cluster.docker.data_root", "/var/lib/docker", values.absolute_path)
    size = r.string(d, "log_max_size", "cluster.docker.log_max_size", "100m")
    if not _LOG_SIZE.fullmatch(size):
        r.add("cluster.docker.log_max_size", size, "must be a size like '100m'")
    count = r.integer(d, "log_max_file", "cluster.docker.log_max_file", 5, 1, 100)
    return DockerSettings(mirrors, insecure, data_root, size, count)


def _parse_endpoint(r: _Reader, data: object) -> Endpoint | None:
    if data is MISSING:
        return None
    e = r.section(data, "endpoint", _ENDPOINT)
    mode = r.choice(e, "mode", "endpoint.mode", ENDPOINT_MODES, "")
    vip = r.ipv4("endpoint.vip", e.get("vip", MISSING))
    port = r.integer(e, "port", "endpoint.port", 6443, 1, 65535)
    name = r.dns_name("endpoint.name", e.get("name", MISSING)) or ""
    if not mode:
        return None
    return Endpoint(mode=mode, vip=vip, port=port, name=name)


def _parse_network(r: _Reader, data: object) -> Network | None:
    if data is MISSING:
        return None
    n = r.section(data, "network", _NETWORK)
    cidr = r.cidr("network.cidr", n.get("cidr", MISSING))
    gateway = r.ipv4("network.gateway", n.get("gateway", MISSING))
    dns_raw = n.get("dns", [])
    dns: list[ipaddress.IPv4Address] = []
    if not isinstance(dns_raw, list):
        r.add("network.dns", dns_raw, "must be a list of IPv4 addresses")
    else:
        for i, item in enumerate(dns_raw):
            addr = r.ipv4(f"network.dns[{i}]", item)
            if addr is not None:
                dns.append(addr)
    iface = r.label("network.interface", n.get("interface", "eth0"), "interface name") or "eth0"
    if len(iface) > 15:
        r.add("network.interface", iface, "is longer than Linux's 15-character interface names")
    if cidr is None or gateway is None:
        return None
    return Network(cidr=cidr, gateway=gateway, dns=tuple(dns), interface=iface)


def _parse_nodes(r: _Reader, data: object) -> tuple[tuple[Node, ...], bool]:
    """The nodes that parsed cleanly, and whether that is every node of the plan."""
    if data is MISSING:
        return (), False
    if not isinstance(data, list) or not data:
        r.add("nodes", data, "must be a non-empty list of nodes", "add '- {name: ..., role: ..., ip: ..., mac: ...}'")
        return (), False
    nodes: list[Node] = []
    complete = True
    for i, item in enumerate(data):
        path = f"nodes[{i}]"
        n = r.section(item, path, _NODE)
        if not n:
            complete = False
            continue
        name = r.label(f"{path}.name", n.get("name", MISSING))
        if name == "localhost":
            r.add(f"{path}.name", name, "is reserved (it resolves to 127.0.0.1 on every node)",
                  "give the node a name of its own")
            name = None
        elif name is not None and name.endswith("-configdrive"):
            r.add(f"{path}.name", name, "ends with '-configdrive', which names another node's config drive "
                  "(seeds/<name>-configdrive.iso)", "give the node another name")
            name = None
        role = r.choice(n, "role", f"{path}.role", ROLES, "")
        ip = r.ipv4(f"{path}.ip", n.get("ip", MISSING))
        mac = r.mac(f"{path}.mac", n.get("mac", MISSING))
        generation = r.integer(n, "generation", f"{path}.generation", 1, 1, 1_000_000)
        if name is None or not role or ip is None or mac is None:
            complete = False
            continue
        nodes.append(Node(name=name, role=role, ip=ip, mac=mac, index=i, generation=generation))
    return tuple(nodes), complete


def _parse_registry(r: _Reader, data: object) -> Registry | None:
    if data is MISSING or data is None:
        return None
    g = r.section(data, "registry", _REGISTRY)
    hostname = r.dns_name("registry.hostname", g.get("hostname", MISSING))
    version = r.checked(g, "harbor_version", "registry.harbor_version", "v2.11.1", values.harbor_version)
    installer = r.checked(g, "harbor_installer", "registry.harbor_installer",
                          f"https://github.com/goharbor/harbor/releases/download/{version}/"
                          f"harbor-offline-installer-{version}.tgz", values.url_or_path)
    volume = r.checked(g, "data_volume", "registry.data_volume", "/data/harbor", values.absolute_path)
    mirror = r.boolean(g, "use_as_mirror", "registry.use_as_mirror", False)
    if hostname is None:
        return None
    return Registry(hostname=hostname, harbor_version=version, harbor_installer=installer, data_volume=volume,
                    use_as_mirror=mirror)


def _parse_bundle(r: _Reader, data: object) -> Bundle:
    b = r.section(data, "bundle", _BUNDLE)
    source = r.choice(b, "source", "bundle.source", BUNDLE_SOURCES, "online")
    label = r.checked(b, "label", "bundle.label", "imagegen-bundle", values.volume_label)
    return Bundle(source=source, label=label)


def _parse_bootstrap(r: _Reader, data: object) -> Bootstrap:
    b = r.section(data, "bootstrap", _BOOTSTRAP)
    deadline = r.integer(b, "deadline_seconds", "bootstrap.deadline_seconds", 3600, 60, 86400)
    attempts = r.integer(b, "join_attempts", "bootstrap.join_attempts", 5, 1, 50)
    return Bootstrap(deadline_seconds=deadline, join_attempts=attempts)


def _resolve_endpoint(endpoint: Endpoint, cluster: Cluster, nodes: tuple[Node, ...]) -> Endpoint:
    """Fill in the endpoint name: an explicit name, else '<cluster>-api' resolved through /etc/hosts."""
    if endpoint.name:
        return endpoint
    return Endpoint(mode=endpoint.mode, vip=endpoint.vip, port=endpoint.port, name=f"{cluster.name}-api")


@dataclass(frozen=True)
class _Parsed:
    """What parsed cleanly, section by section: the cross-field rules run on whatever is there, in the same pass
    as the field checks, so one run reports every problem."""

    cluster: Cluster | None
    endpoint: Endpoint | None
    network: Network | None
    nodes: tuple[Node, ...]
    nodes_complete: bool
    registry: Registry | None
    bundle: Bundle


# Ports a control plane's own components hold; the API server cannot bind them (single and kube-vip modes bind
# endpoint.port on the control planes), and 22 is sshd on every node (load balancers bind endpoint.port).
_RESERVED_PORTS = {22: "sshd", 2379: "etcd", 2380: "etcd peers", 10250: "the kubelet", 10256: "kube-proxy health",
                   10257: "kube-controller-manager", 10259: "kube-scheduler"}
SERVICE_CIDR_MIN_PREFIX = 12   # kube-apiserver refuses service ranges with more than 20 host bits
SERVICE_CIDR_MAX_PREFIX = 28   # the cluster DNS address is the range's 10th; /28 is the smallest that holds it


def _cross_checks(r: _Reader, p: _Parsed) -> None:
    _check_unique_nodes(r, p.nodes)
    if p.network is not None:
        _check_addresses(r, p.network, p.nodes, p.endpoint)
    if p.cluster is not None:
        _check_ranges(r, p.cluster, p.network)
        _check_runtime_and_packages(r, p.cluster, p.bundle)
    if p.endpoint is not None:
        _check_endpoint(r, p.endpoint, p.nodes, p.nodes_complete)
    if p.nodes_complete:
        _check_registry(r, p.nodes, p.registry)
        if p.cluster is not None:
            _check_mirrors(r, p.cluster, p.nodes, p.registry)
        if p.cluster is not None and p.cluster.cni == "host-gw":
            count = sum(1 for n in p.nodes if n.is_kubernetes)
            if p.cluster.pod_cidr.prefixlen > 24 - _bits_for(count):
                r.add("cluster.pod_cidr", str(p.cluster.pod_cidr), f"is too small for a /24 per node for "
                      f"{count} Kubernetes nodes", "use a larger range, e.g. 10.244.0.0/16")


def _check_unique_nodes(r: _Reader, nodes: tuple[Node, ...]) -> None:
    for attr in ("name", "ip", "mac"):
        seen: dict[str, int] = {}
        for n in nodes:
            key = str(getattr(n, attr))
            if key in seen:
                r.add(f"nodes[{n.index}].{attr}", key, f"duplicates nodes[{seen[key]}].{attr}",
                      f"give every node its own {attr}")
            else:
                seen[key] = n.index


def _check_addresses(r: _Reader, net: Network, nodes: tuple[Node, ...], e: Endpoint | None) -> None:
    def inside(path: str, addr: ipaddress.IPv4Address) -> None:
        if addr not in net.cidr:
            r.add(path, str(addr), f"is outside network.cidr {net.cidr}", f"use an address inside {net.cidr}")
        elif addr in (net.cidr.network_address, net.cidr.broadcast_address) and net.cidr.prefixlen < 31:
            r.add(path, str(addr), f"is the network or broadcast address of {net.cidr}", "use a host address")

    inside("network.gateway", net.gateway)
    for n in nodes:
        inside(f"nodes[{n.index}].ip", n.ip)
        if n.ip == net.gateway:
            r.add(f"nodes[{n.index}].ip", str(n.ip), "equals network.gateway", "give the node its own address")
    if e is not None and e.vip is not None:
        inside("endpoint.vip", e.vip)
        if e.vip == net.gateway:
            r.add("endpoint.vip", str(e.vip), "equals network.gateway", "pick a free address for the VIP")
        for n in nodes:
            if n.ip == e.vip:
                r.add("endpoint.vip", str(e.vip), f"equals nodes[{n.index}].ip ({n.name})",
                      "pick an address no node uses")


def _check_ranges(r: _Reader, c: Cluster, net: Network | None) -> None:
    nets = [("cluster.pod_cidr", c.pod_cidr), ("cluster.service_cidr", c.service_cidr)]
    if net is not None:
        nets.append(("network.cidr", net.cidr))
    for i, (pa, a) in enumerate(nets):
        for pb, b in nets[i + 1:]:
            if a.overlaps(b):
                r.add(pa, str(a), f"overlaps {pb} {b}", "choose ranges that do not overlap")
    svc = c.service_cidr
    if svc.prefixlen > SERVICE_CIDR_MAX_PREFIX:
        r.add("cluster.service_cidr", str(svc), f"holds {svc.num_addresses} addresses, too few for the API "
              "service and the cluster DNS address (the range's 10th)",
              f"use /{SERVICE_CIDR_MAX_PREFIX} or larger, e.g. 10.96.0.0/12")
    elif svc.prefixlen < SERVICE_CIDR_MIN_PREFIX:
        r.add("cluster.service_cidr", str(svc), "is larger than kube-apiserver accepts (at most 20 host bits)",
              f"use /{SERVICE_CIDR_MIN_PREFIX} or smaller, e.g. 10.96.0.0/12")


def _check_runtime_and_packages(r: _Reader, c: Cluster, bundle: Bundle) -> None:
    rules = c.rules
    if c.container_runtime == "docker" and not rules.has_dockershim and not c.cri_dockerd:
        r.add("cluster.container_runtime", "docker",
              f"Kubernetes {c.kubernetes_version} has no dockershim (removed in 1.24)",
              "set cluster.cri_dockerd: true, or use containerd")
    if c.cri_dockerd and c.container_runtime != "docker":
        r.add("cluster.cri_dockerd", True, "only applies with container_runtime docker", "remove it")
    if c.cri_dockerd and rules.has_dockershim:
        r.add("cluster.cri_dockerd", True, f"is not needed on {c.kubernetes_version}, which has dockershim",
              "remove it")
    if bundle.source == "online" and not rules.pkgs_k8s_io and c.package_repository == \
            default_package_repository(c.kubernetes_version):
        r.add("cluster.kubernetes_version", str(c.kubernetes_version),
              "has no packages on pkgs.k8s.io (its repositories start at 1.24)",
              "set cluster.package_repository to your mirror, or bundle.source: disk|image")


def _check_endpoint(r: _Reader, e: Endpoint, nodes: tuple[Node, ...], complete: bool) -> None:
    if e.port in _RESERVED_PORTS:
        r.add("endpoint.port", e.port, f"is held by {_RESERVED_PORTS[e.port]} on the nodes serving the endpoint",
              "use 6443 or another free port")
    for n in nodes:
        if n.name == e.name:
            r.add("endpoint.name", e.name, f"equals nodes[{n.index}].name; /etc/hosts would map it to two "
                  "addresses", "give the API endpoint its own name, e.g. '<cluster>-api'")
    if not complete:
        return  # counting roles over a partial node list would report problems that are not there
    cps = [n for n in nodes if n.role == "control-plane"]
    lbs = [n for n in nodes if n.role == "load-balancer"]
    if not cps:
        r.add("nodes", MISSING, "has no control-plane node", "give at least one node role: control-plane")
    if e.mode == "single":
        if len(cps) > 1:
            r.add("endpoint.mode", e.mode, f"'single' allows one control plane, the plan has {len(cps)}",
                  "use 'load-balancer' or 'kube-vip' for several control planes")
        if e.vip is not None:
            r.add("endpoint.vip", str(e.vip), "is not used with endpoint.mode 'single'",
                  "remove it (the control plane's own address is the endpoint)")
    if e.mode == "load-balancer":
        if not lbs:
            r.add("endpoint.mode", e.mode, "needs at least one node with role load-balancer",
                  "add load-balancer nodes or use 'kube-vip'")
        if e.vip is None:
            r.add("endpoint.vip", MISSING, "is required with endpoint.mode 'load-balancer'", "add a free address")
    elif lbs:
        r.add(f"nodes[{lbs[0].index}].role", "load-balancer", f"is unused with endpoint.mode '{e.mode}'",
              "set endpoint.mode: load-balancer or remove the load-balancer nodes")
    if e.mode == "kube-vip" and e.vip is None:
        r.add("endpoint.vip", MISSING, "is required with endpoint.mode 'kube-vip'", "add a free address")


def _check_registry(r: _Reader, nodes: tuple[Node, ...], registry: Registry | None) -> None:
    registries = [n for n in nodes if n.role == "registry"]
    if registries and registry is None:
        r.add("registry.hostname", MISSING, f"is required because nodes[{registries[0].index}] has role registry",
              "add 'registry: {hostname: harbor.example.internal}'")
    if registry is not None and registry.use_as_mirror and not registries:
        r.add("registry.use_as_mirror", True, "needs a node with role registry", "add one or set it to false")


def _check_mirrors(r: _Reader, c: Cluster, nodes: tuple[Node, ...], registry: Registry | None) -> None:
    if registry is not None and any(n.role == "registry" for n in nodes) and c.mirror_for(registry.hostname):
        r.add(f"cluster.mirrors.{registry.hostname}", MISSING, "is the plan's own registry; imagegen writes its "
              "configuration", "drop this entry (use registry.use_as_mirror for Harbor's proxy caches)")
    if c.container_runtime != "docker":
        return
    # Docker's daemon refuses to start on a mirror URL with a path (moby's registry.ValidateMirror).
    docker_io = c.mirror_for("docker.io")
    if c.docker.registry_mirrors:
        where, urls = "cluster.docker.registry_mirrors", c.docker.registry_mirrors
    elif docker_io is not None:
        where = "cluster.registry_mirrors" if c.registry_mirrors else "cluster.mirrors.docker.io.endpoints"
        urls = docker_io.endpoints
    else:
        return
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            r.add(f"{where}[{i}]", url, "has a path; Docker's registry-mirrors take only scheme://host[:port]",
                  "point Docker at the mirror's root (Docker mirrors docker.io only)")


def _bits_for(count: int) -> int:
    return max(0, (count - 1).bit_length())


def _with_pod_subnets(plan: Plan) -> Plan:
    """host-gw gives every Kubernetes node a /24 of the pod CIDR in plan order, like kube-controller-manager would."""
    subnets = list(plan.cluster.pod_cidr.subnets(new_prefix=24)) if plan.cluster.pod_cidr.prefixlen <= 24 else []
    pairs = tuple((n.name, subnets[i]) for i, n in enumerate(plan.kubernetes_nodes) if i < len(subnets))
    return Plan(**{**plan.__dict__, "pod_subnets": pairs})


def key_tables() -> dict[str, Mapping[str, bool]]:
    """Every section of a plan and its keys (name -> required), as the parser reads them: the one source for the
    generated JSON Schema (imagegen.planschema) and `imagegen init --print-defaults`. `nodes[]` is one node."""
    return {"": _TOP, "cluster": _CLUSTER, "cluster.docker": _DOCKER, "cluster.mirrors.*": _MIRROR,
            "endpoint": _ENDPOINT, "network": _NETWORK,
            "nodes[]": _NODE, "registry": _REGISTRY, "bundle": _BUNDLE, "bootstrap": _BOOTSTRAP}


def plan_constants() -> dict[str, tuple[str, ...]]:
    """The choices the parser accepts, by field path (read-only view for the schema and `init`)."""
    return {"cluster.container_runtime": RUNTIMES, "cluster.cni": CNIS, "cluster.kube_proxy_mode": PROXY_MODES,
            "cluster.distro": DISTROS, "cluster.skip_addons": _ADDONS, "cluster.journald": _JOURNALD_KEYS,
            "cluster.component_args": COMPONENTS, "endpoint.mode": ENDPOINT_MODES, "nodes[].role": ROLES,
            "bundle.source": BUNDLE_SOURCES, "cluster.platform_limits": PLATFORMS}
