"""The plan's cross-field rules, one function per rule. They run in the same pass as the field checks, on whatever
parsed cleanly, so one run reports every problem."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from imagegen.errors import MISSING
from imagegen.plan.model import (
    Bundle,
    Cluster,
    Endpoint,
    Network,
    Node,
    Registry,
    default_package_repository,
)


class Report(Protocol):
    def add(self, path: str, value: object, message: str, fix: str = "") -> None: ...


@dataclass(frozen=True)
class Parsed:
    """What parsed cleanly, section by section."""

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


def cross_checks(r: Report, p: Parsed) -> None:
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


def _check_unique_nodes(r: Report, nodes: tuple[Node, ...]) -> None:
    for attr in ("name", "ip", "mac"):
        seen: dict[str, int] = {}
        for n in nodes:
            key = str(getattr(n, attr))
            if key in seen:
                r.add(f"nodes[{n.index}].{attr}", key, f"duplicates nodes[{seen[key]}].{attr}",
                      f"give every node its own {attr}")
            else:
                seen[key] = n.index


def _check_addresses(r: Report, net: Network, nodes: tuple[Node, ...], e: Endpoint | None) -> None:
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


def _check_ranges(r: Report, c: Cluster, net: Network | None) -> None:
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


def _check_runtime_and_packages(r: Report, c: Cluster, bundle: Bundle) -> None:
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


def _check_endpoint(r: Report, e: Endpoint, nodes: tuple[Node, ...], complete: bool) -> None:
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


def _check_registry(r: Report, nodes: tuple[Node, ...], registry: Registry | None) -> None:
    registries = [n for n in nodes if n.role == "registry"]
    if registries and registry is None:
        r.add("registry.hostname", MISSING, f"is required because nodes[{registries[0].index}] has role registry",
              "add 'registry: {hostname: harbor.example.internal}'")
    if registry is not None and registry.use_as_mirror and not registries:
        r.add("registry.use_as_mirror", True, "needs a node with role registry", "add one or set it to false")


def _check_mirrors(r: Report, c: Cluster, nodes: tuple[Node, ...], registry: Registry | None) -> None:
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
