"""`imagegen init`: a commented plan from a few answers, valid as written (it is parsed before it is returned).

Addresses are laid out in order inside the node network: the VIP, then load balancers, control planes and
workers from --first-ip. MAC addresses are derived from each node's IP (52:54:00 + the last three octets, as the
examples do): replace them with your NICs' addresses, or give the VMs those MACs.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from imagegen.errors import UsageError
from imagegen.plan import parse_plan_text
from imagegen.planschema import schema_path
from imagegen.versions import KubeVersion
from imagegen.versiontable import version_table


@dataclass(frozen=True)
class InitOptions:
    name: str = "cluster"
    control_planes: int = 1
    workers: int = 2
    load_balancers: int | None = None
    endpoint: str | None = None
    vip: str | None = None
    endpoint_name: str = ""
    network: str = "192.168.10.0/24"
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    first_ip: str | None = None
    ssh_keys: tuple[str, ...] = ()
    kubernetes_version: str = ""
    runtime: str = "containerd"
    cni: str = "calico"
    distro: str = "ubuntu-24.04"
    image_repository: str = ""
    registry_mirrors: tuple[str, ...] = ()
    package_repository: str = ""
    cni_manifest: str = ""
    kube_vip_image: str = ""


def _q(value: object) -> str:
    """A YAML scalar: JSON strings are valid YAML double-quoted strings, so no value can change the structure."""
    return json.dumps(value)


def _hosts(net: ipaddress.IPv4Network, start: ipaddress.IPv4Address, count: int,
           taken: set[ipaddress.IPv4Address]) -> list[ipaddress.IPv4Address]:
    out: list[ipaddress.IPv4Address] = []
    addr = start
    while len(out) < count:
        if addr not in net or addr == net.broadcast_address:
            raise UsageError(f"--network {net}: too small for {count} more addresses from {start}; use a larger "
                             "network or another --first-ip")
        if addr not in taken:
            out.append(addr)
            taken.add(addr)
        addr += 1
    return out


def _mac(ip: ipaddress.IPv4Address) -> str:
    octets = ip.packed
    return "52:54:00:" + ":".join(f"{b:02x}" for b in octets[1:])


def resolve_version(text: str) -> KubeVersion:
    table = version_table()
    if not text:
        return table.minors[-1].newest
    try:
        return table.resolve(text)
    except ValueError as exc:
        raise UsageError(f"--kubernetes-version: {exc}") from None


def plan_text(o: InitOptions) -> str:
    if o.control_planes < 1:
        raise UsageError("--control-planes: at least 1")
    if o.workers < 0:
        raise UsageError("--workers: 0 or more")
    version = resolve_version(o.kubernetes_version)
    endpoint = o.endpoint or ("single" if o.control_planes == 1 else "kube-vip")
    try:
        net = ipaddress.ip_network(o.network, strict=True)
    except ValueError as exc:
        raise UsageError(f"--network {o.network}: {exc}; e.g. 192.168.10.0/24") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise UsageError(f"--network {o.network}: IPv4 only")
    try:
        gateway = ipaddress.IPv4Address(o.gateway) if o.gateway else net.network_address + 1
        first = ipaddress.IPv4Address(o.first_ip) if o.first_ip else net.network_address + 11
        vip = ipaddress.IPv4Address(o.vip) if o.vip else None
    except ValueError as exc:
        raise UsageError(f"{exc}") from None
    taken = {gateway}
    if endpoint != "single" and vip is None:
        vip = _hosts(net, net.network_address + 10, 1, set(taken))[0]
    if vip is not None:
        taken.add(vip)
    lbs = o.load_balancers if o.load_balancers is not None else (2 if endpoint == "load-balancer" else 0)
    rows: list[tuple[str, str]] = []
    addrs = _hosts(net, first, lbs + o.control_planes + o.workers, taken)
    rows += [(f"lb-{i + 1}", "load-balancer") for i in range(lbs)]
    rows += [(f"cp-{i + 1}", "control-plane") for i in range(o.control_planes)]
    rows += [(f"worker-{i + 1}", "worker") for i in range(o.workers)]
    runtime_lines = [f"  container_runtime: {o.runtime}"]
    if o.runtime == "docker" and version.minor >= 24:
        runtime_lines.append("  cri_dockerd: true                # Docker on >= 1.24 needs cri-dockerd (no dockershim)")
    if version.minor < 24 and not o.package_repository:
        raise UsageError(f"--kubernetes-version {version}: pkgs.k8s.io has no packages before 1.24; give "
                         "--package-repository (your mirror) or use an offline bundle (bundle.source in the plan)")
    dns = list(o.dns) or [str(gateway)]
    lines = [
        f"# yaml-language-server: $schema={schema_path()}",
        "# Written by `imagegen init`. Check it with `imagegen validate`, see what one node will do with",
        "# `imagegen explain PLAN NODE`, every default with `imagegen init --print-defaults`.",
        "cluster:",
        f"  name: {_q(o.name)}",
        f"  kubernetes_version: {_q(str(version))}   # newest {version.major}.{version.minor} patch in imagegen's "
        f"table ({version_table().updated})",
        *runtime_lines,
        f"  cni: {o.cni}",
        f"  distro: {o.distro}",
    ]
    if o.image_repository:
        lines.append(f"  image_repository: {_q(o.image_repository)}   # kubeadm's images come from here")
    if o.registry_mirrors:
        lines.append("  registry_mirrors:                # containerd pulls docker.io through these")
        lines += [f"    - {_q(m)}" for m in o.registry_mirrors]
    if o.package_repository:
        lines.append(f"  package_repository: {_q(o.package_repository)}")
    if o.cni_manifest:
        lines.append(f"  cni_manifest: {_q(o.cni_manifest)}   # nodes fetch the CNI manifest from here")
    if o.kube_vip_image:
        lines.append(f"  kube_vip_image: {_q(o.kube_vip_image)}")
    lines += ["endpoint:", f"  mode: {endpoint}"]
    if vip is not None:
        lines.append(f"  vip: {_q(str(vip))}   # a free address: no node, no DHCP lease")
    if o.endpoint_name:
        lines.append(f"  name: {_q(o.endpoint_name)}")
    lines += [
        "network:",
        f"  cidr: {_q(str(net))}",
        f"  gateway: {_q(str(gateway))}",
        f"  dns: [{', '.join(_q(d) for d in dns)}]",
    ]
    if o.ssh_keys:
        lines.append("ssh_authorized_keys:")
        lines += [f"  - {_q(k)}" for k in o.ssh_keys]
    else:
        lines += ["# ssh_authorized_keys: [ssh-ed25519 AAAA... you@host]   # none given: no SSH login (--ssh-key FILE)"]
    lines += ["# MACs are derived from the addresses: give the VMs these MACs or write your NICs' here.", "nodes:"]
    for (name, role), ip in zip(rows, addrs, strict=True):
        lines.append(f"  - {{name: {name}, role: {role}, ip: {_q(str(ip))}, mac: {_q(_mac(ip))}}}")
    text = "\n".join(lines) + "\n"
    parse_plan_text(text, "imagegen init")  # a PlanError here is a bad answer (exit 2), never a written file
    return text


def read_ssh_key(path: str) -> tuple[str, ...]:
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"--ssh-key {path}: cannot be read ({exc.strerror}); give a public key file such as "
                         "~/.ssh/id_ed25519.pub") from None
    keys = tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    if not keys:
        raise UsageError(f"--ssh-key {path}: holds no key")
    return keys


def defaults_text() -> str:
    """Every optional field with its default, as YAML comments grouped by section."""
    from imagegen.plan import key_tables
    from imagegen.planschema import FIELDS, defaults

    out = ["# imagegen plan defaults: every optional field and the value used when the plan leaves it out.",
           "# Fields whose default depends on others are described, not shown. Required: cluster.name,",
           "# cluster.kubernetes_version, endpoint.mode, network.cidr, network.gateway, nodes.",
           f"# Kubernetes versions: 1.{version_table().minors[0].minor} to 1.{version_table().minors[-1].minor}; "
           f"newest patches (table updated {version_table().updated}):"]
    out += [f"#   {m.newest}" for m in version_table().minors]
    found = defaults()
    tables = key_tables()

    def section(name: str, indent: str) -> None:
        for key, required in tables[name].items():
            path = f"{name}.{key}" if name else key
            description = FIELDS[path][1]
            if path in tables:
                out.append(f"{indent}{key}:   # {description}")
                section(path, indent + "  ")
            elif path in found:
                out.append(f"{indent}{key}: {json.dumps(found[path])}   # {description}")
            else:
                out.append(f"{indent}# {key}: {'required; ' if required else ''}{description}")

    section("", "")
    return "\n".join(out) + "\n"
