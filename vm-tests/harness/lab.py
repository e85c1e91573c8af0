"""A test lab in libvirt: one isolated network and a few domains on qcow2 overlays of the node image.

Everything created is recorded as it is created and removed by `close()`, which harness.session runs in its
teardown (also on Ctrl-C and SIGTERM, which it turns into KeyboardInterrupt). Overlays are deleted; serial logs,
seeds and pulled guest logs stay in the run directory.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from harness.console import ConsoleTail, Marker, MarkerScanner
from harness.xml import DomainSpec, HostEntry, NetworkSpec, dhcp_host_xml, domain_xml, network_xml


@dataclass
class Node:
    name: str
    role: str
    ip: str
    mac: str
    domain_name: str
    disk: Path
    seed: Path | None
    serial_log: Path
    started: float = 0.0  # monotonic time of virDomain.create()
    scanner: MarkerScanner = field(default_factory=MarkerScanner)
    tail: ConsoleTail | None = None
    events: list[tuple[str, float]] = field(default_factory=list)  # harness-side events (ssh, checks, reboot)
    # Guest CPU seconds (the domain's cpu_time: under TCG all of the emulation) when each marker was first seen.
    # Stable where wall time is not: guests share the host's cores, so compare these across runs.
    cpu: dict[str, float] = field(default_factory=dict)

    def since_start(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def note(self, kind: str) -> None:
        self.events.append((kind, self.since_start()))

    def timeline_events(self) -> list[tuple[str, float]]:
        return [(m.kind, m.at) for m in self.scanner.markers.values()] + self.events


class LabError(Exception):
    pass


# How the lab runs qemu-img and iptables: subprocess.run, or a recording fake in unit tests.
Runner = Callable[..., "subprocess.CompletedProcess[Any]"]


class Lab:
    def __init__(self, conn: libvirt.virConnect, run_dir: Path, run_id: str, accel: str, log: list[str],
                 run: Runner = subprocess.run) -> None:
        self.conn = conn
        self._run = run
        self.run_dir = run_dir
        self.run_id = run_id
        self.accel = accel
        self.log = log
        self.nodes: dict[str, Node] = {}
        self.removed: list[Node] = []  # nodes taken out during the run (day 2), still in the report
        self._sizes: dict[str, dict[str, Any]] = {}  # add_node's machine arguments per node, for add_node_like
        self._network: libvirt.virNetwork | None = None
        self._bridge: str | None = None
        self._firewall_rule: list[str] | None = None
        self._domains: list[libvirt.virDomain] = []
        self._disks_dir = run_dir / "disks"

    # --- network -------------------------------------------------------------------------------------------
    def create_network(self, spec: NetworkSpec) -> None:
        xml = network_xml(spec)
        (self.run_dir / "network.xml").write_text(xml)
        try:
            net = self.conn.networkDefineXML(xml)
        except libvirt.libvirtError as exc:
            raise LabError(f"defining network {spec.name}: {exc}") from None
        self._network = net
        try:
            net.create()
        except libvirt.libvirtError as exc:
            raise LabError(f"starting network {spec.name} ({spec.cidr}): {exc}; is that subnet already in use "
                           f"by another bridge or libvirt network?") from None
        self._bridge = spec.bridge
        # Nothing from the lab may leave this machine: reject everything routed out of the bridge. Inserted
        # after libvirt's own rules so it sits first in FORWARD.
        rule = ["FORWARD", "-i", spec.bridge, "!", "-o", spec.bridge, "-j", "REJECT"]
        self._run(["iptables", "-w", "-I", rule[0], "1", *rule[1:]], check=True)
        self._firewall_rule = rule
        self.log.append(f"network {spec.name} on {spec.bridge} ({spec.cidr}), forwarding out rejected")

    def add_dhcp_host(self, host: HostEntry) -> None:
        """A DHCP reservation for a node planned after the network started (day 2), live and in its definition.
        Nodes configure their planned address statically, so a failure is logged, not fatal."""
        assert self._network is not None, "create_network first"
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        try:
            self._network.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                                 -1, dhcp_host_xml(host), flags)
        except libvirt.libvirtError as exc:
            self.log.append(f"DHCP reservation for {host.name} ({host.ip}) not added: {exc}")
            return
        self.log.append(f"DHCP reservation added: {host.name} {host.mac} {host.ip}")

    # --- domains -------------------------------------------------------------------------------------------
    def add_node(self, *, name: str, role: str, ip: str, mac: str, image: Path | None, seed: Path | None,
                 memory_mib: int, vcpus: int, firmware: str = "bios", disk_gib: int = 12,
                 extra_disks: tuple[Path, ...] = (), boot_network: bool = False, smbios_serial: str = "") -> Node:
        """A domain on a qcow2 overlay of `image`; `image=None` gives it an empty disk instead (a machine to
        install over the network, with `boot_network`: PXE first, then the disk). `smbios_serial`: the system
        serial the guest's firmware reports (a NoCloud `ds=` seed without any ISO)."""
        assert self._network is not None, "create_network first"
        self._sizes[name] = {"role": role, "image": image, "memory_mib": memory_mib, "vcpus": vcpus,
                             "firmware": firmware, "disk_gib": disk_gib, "extra_disks": extra_disks}
        self._disks_dir.mkdir(parents=True, exist_ok=True)
        disk = self._disks_dir / f"{name}.qcow2"
        backing = ["-F", "qcow2", "-b", str(image.resolve())] if image is not None else []
        self._run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(disk), f"{disk_gib}G"], check=True)
        serial = self.run_dir / "console" / f"{name}.log"
        serial.parent.mkdir(parents=True, exist_ok=True)
        domain_name = f"imagegen-{self.run_id}-{name}"
        spec = DomainSpec(name=domain_name, memory_mib=memory_mib, vcpus=vcpus, disk=str(disk),
                          seed_iso=str(seed) if seed else None, mac=mac, network=self._network.name(),
                          serial_log=str(serial), accel=self.accel, firmware=firmware,
                          nvram=str(self._disks_dir / f"{name}.nvram.fd"),
                          extra_disks=tuple(str(p) for p in extra_disks), boot_network=boot_network,
                          smbios_serial=smbios_serial)
        xml = domain_xml(spec)
        (self.run_dir / "domains").mkdir(exist_ok=True)
        (self.run_dir / "domains" / f"{name}.xml").write_text(xml)
        try:
            dom = self.conn.defineXML(xml)
        except libvirt.libvirtError as exc:
            raise LabError(f"defining domain for {name}: {exc}") from None
        self._domains.append(dom)
        node = Node(name, role, ip, mac, domain_name, disk, seed, serial)
        self.nodes[name] = node
        return node

    def add_node_like(self, template: str, *, name: str, ip: str, mac: str, seed: Path | None) -> Node:
        """One more domain with the image, size and extra disks node `template` was added with (day 2)."""
        return self.add_node(name=name, ip=ip, mac=mac, seed=seed, **self._sizes[template])

    def remove_node(self, node: Node) -> None:
        """A dead machine: power off, undefine and delete its overlay. Its console log is kept beside the others
        (console/NAME.removed-N.log) and the node stays in `removed` for the report; a new domain of the same name
        may be added afterwards."""
        dom = self.conn.lookupByName(node.domain_name)
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as exc:
            raise LabError(f"removing {node.name}: {exc}") from None
        self._domains = [d for d in self._domains if d.name() != node.domain_name]
        node.disk.unlink(missing_ok=True)
        (self._disks_dir / f"{node.name}.nvram.fd").unlink(missing_ok=True)
        n = len([r for r in self.removed if r.name == node.name]) + 1
        if node.serial_log.exists():
            kept = node.serial_log.with_name(f"{node.name}.removed-{n}.log")
            node.serial_log.rename(kept)
            node.serial_log = kept
        node.note("removed")
        self.nodes.pop(node.name, None)
        self.removed.append(node)
        self.log.append(f"removed {node.name} ({node.domain_name}): domain undefined, overlay deleted")

    def start(self, node: Node) -> None:
        dom = self.conn.lookupByName(node.domain_name)
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise LabError(f"starting {node.name}: {exc}") from None
        node.started = time.monotonic()
        node.tail = ConsoleTail(node.serial_log)
        self.log.append(f"started {node.name} ({node.domain_name})")

    def poll(self) -> list[tuple[Node, Marker]]:
        """Read new console output of every started node; returns markers seen for the first time."""
        seen: list[tuple[Node, Marker]] = []
        for node in self.nodes.values():
            if node.tail is None:
                continue
            text = node.tail.read_new()
            if text:
                new = node.scanner.feed(text, node.since_start())
                if new:
                    cpu = self.cpu_seconds(node)
                    for marker in new:
                        if cpu is not None:
                            node.cpu.setdefault(marker.kind, cpu)
                seen += [(node, m) for m in new]
        return seen

    def cpu_seconds(self, node: Node) -> float | None:
        """CPU seconds the node's domain has used since it started (libvirt's domain cpu_time), or None."""
        try:
            stats = self.conn.lookupByName(node.domain_name).getCPUStats(True)
        except libvirt.libvirtError:
            return None
        return round(stats[0]["cpu_time"] / 1e9, 1) if stats and "cpu_time" in stats[0] else None

    def power_off(self, node: Node) -> None:
        """Pull the plug (virsh destroy): a crashed machine, no clean shutdown."""
        try:
            self.conn.lookupByName(node.domain_name).destroy()
        except libvirt.libvirtError as exc:
            raise LabError(f"powering off {node.name}: {exc}") from None
        node.note("power-off")
        self.log.append(f"powered off {node.name}")

    def qemu_pids(self) -> list[int]:
        """PIDs of this lab's qemu processes (libvirt's pid files), for memory accounting."""
        pids = []
        for node in self.nodes.values():
            try:
                pids.append(int(Path(f"/run/libvirt/qemu/{node.domain_name}.pid").read_text().strip()))
            except (FileNotFoundError, ValueError):
                continue
        return pids

    def is_running(self, node: Node) -> bool:
        try:
            return bool(self.conn.lookupByName(node.domain_name).isActive())
        except libvirt.libvirtError:
            return False

    # --- cleanup -------------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Remove every domain, the network, the firewall rule and the overlays; returns problems met."""
        problems: list[str] = []
        for dom in self._domains:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as exc:
                problems.append(f"domain {dom.name()}: {exc}")
        self._domains.clear()
        if self._firewall_rule is not None:
            done = self._run(["iptables", "-w", "-D", *self._firewall_rule], capture_output=True, text=True,
                             check=False)
            if done.returncode != 0:
                problems.append(f"iptables -D {' '.join(self._firewall_rule)}: {done.stderr.strip()}")
            self._firewall_rule = None
        if self._network is not None:
            try:
                if self._network.isActive():
                    self._network.destroy()
                self._network.undefine()
            except libvirt.libvirtError as exc:
                problems.append(f"network: {exc}")
            self._network = None
        shutil.rmtree(self._disks_dir, ignore_errors=True)
        return problems
