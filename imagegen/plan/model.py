"""The plan's typed, frozen objects. Everything after `load_plan` trusts these values.

Choices are `StrEnum`s: a member equals its string ("calico" == Cni.CALICO), so templates and modules that compare
with strings keep working. Which plan key fills which attribute, its default and its check are in `fields.py`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import yaml

from imagegen.versions import KubeVersion, VersionRules, rules_for


class Role(StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"
    LOAD_BALANCER = "load-balancer"
    REGISTRY = "registry"


class ContainerRuntime(StrEnum):
    CONTAINERD = "containerd"
    DOCKER = "docker"


class Cni(StrEnum):
    CALICO = "calico"
    FLANNEL = "flannel"
    HOST_GW = "host-gw"


class ProxyMode(StrEnum):
    IPVS = "ipvs"
    IPTABLES = "iptables"


class EndpointMode(StrEnum):
    LOAD_BALANCER = "load-balancer"
    KUBE_VIP = "kube-vip"
    SINGLE = "single"


class Distro(StrEnum):
    DEBIAN_12 = "debian-12"
    UBUNTU_22_04 = "ubuntu-22.04"
    UBUNTU_24_04 = "ubuntu-24.04"


class BundleSource(StrEnum):
    ONLINE = "online"
    DISK = "disk"
    IMAGE = "image"


def _represent_choice(dumper: yaml.SafeDumper, value: StrEnum) -> yaml.Node:
    return dumper.represent_str(value.value)


# Safe YAML dumpers know `str` but not its subclasses: registered here, a choice is written as its string wherever
# a plan value reaches a YAML document (kube-proxy's mode, render's own dumper derives from CSafeDumper).
for _dumper in {yaml.SafeDumper, getattr(yaml, "CSafeDumper", yaml.SafeDumper)}:
    _dumper.add_multi_representer(StrEnum, _represent_choice)


# The choices as plain strings, for modules that list them (fetches walks ROLES in this order).
ROLES = tuple(m.value for m in Role)
KUBERNETES_ROLES = (Role.CONTROL_PLANE.value, Role.WORKER.value)
RUNTIMES = tuple(m.value for m in ContainerRuntime)
CNIS = tuple(m.value for m in Cni)
PROXY_MODES = tuple(m.value for m in ProxyMode)
ENDPOINT_MODES = tuple(m.value for m in EndpointMode)
DISTROS = tuple(m.value for m in Distro)
BUNDLE_SOURCES = tuple(m.value for m in BundleSource)
# Platforms whose user-data size limit a plan may ask render to enforce (imagegen.userdata holds the limits).
PLATFORMS = ("ec2", "openstack", "azure", "gce")
COMPONENTS = ("apiserver", "controller-manager", "scheduler", "etcd")
ADDONS = ("coredns", "kube-proxy")
JOURNALD_KEYS = ("Storage", "Compress", "SystemMaxUse", "SystemMaxFileSize", "MaxRetentionSec", "ForwardToSyslog",
                 "SystemKeepFree", "RuntimeMaxUse", "MaxFileSec", "RateLimitBurst", "RateLimitIntervalSec")
MIRROR_CA_MAX_BYTES = 1 << 20
DISTRO_MIRROR_KEY_MAX_BYTES = 1 << 20

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


def default_package_repository(version: KubeVersion) -> str:
    return f"https://pkgs.k8s.io/core:/stable:/{version.minor_series}/deb/"


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
class DistroMirror:
    """`cluster.distro_mirror`: the distribution's package mirror, given to cloud-init's apt module."""

    url: str
    key_file: str = ""              # as written in the plan (the operator's machine)
    suites: tuple[str, ...] = ()    # empty: the distribution's codename and <codename>-updates
    key: str = ""                   # the armored OpenPGP public key, read when the plan is loaded

    def suites_for(self, codename: str) -> tuple[str, ...]:
        return self.suites or (codename, f"{codename}-updates")


@dataclass(frozen=True)
class Cluster:
    name: str
    kubernetes_version: KubeVersion
    container_runtime: ContainerRuntime
    cri_dockerd: bool
    cni: Cni
    cni_manifest: str
    kube_proxy_mode: ProxyMode
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    dns_domain: str
    image_repository: str
    package_repository: str
    distro: Distro
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
    distro_mirror: DistroMirror | None = None

    def mirror_for(self, host: str) -> RegistryMirror | None:
        return next((m for m in self.mirrors if m.host == host), None)

    def args_for(self, component: str) -> dict[str, str]:
        return dict(dict(self.component_args).get(component, ()))

    @property
    def rules(self) -> VersionRules:
        return rules_for(self.kubernetes_version)


@dataclass(frozen=True)
class Endpoint:
    mode: EndpointMode
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
    role: Role
    ip: ipaddress.IPv4Address
    mac: str
    index: int                      # the node's place in the plan (nodes[index]), not a plan key
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
    source: BundleSource
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

    @cached_property
    def control_planes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == Role.CONTROL_PLANE)

    @property
    def first_control_plane(self) -> Node:
        return self.control_planes[0]

    @cached_property
    def load_balancers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == Role.LOAD_BALANCER)

    @cached_property
    def registry_node(self) -> Node | None:
        return next((n for n in self.nodes if n.role == Role.REGISTRY), None)

    @cached_property
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

