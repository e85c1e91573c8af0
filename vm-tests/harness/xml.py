"""libvirt network and domain XML from frozen descriptions (pure; golden-tested in tests/test_image_vm_xml.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr


@dataclass(frozen=True)
class HostEntry:
    mac: str
    ip: str
    name: str


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    bridge: str  # at most 15 characters (Linux interface name limit)
    cidr: str  # e.g. 192.168.150.0/24
    gateway: str  # the host's address on the bridge
    hosts: tuple[HostEntry, ...]
    bootp_file: str = ""  # network boot: the boot file name DHCP hands out (an http:// URL for iPXE), else none
    # Reservations as dhcp-host options in dnsmasq's conf file (read as root) instead of libvirt's hostsfile: a
    # libvirtd started with umask 077 writes that file 0600, dnsmasq reads it after dropping to nobody and hands
    # out range addresses instead (seen here). For suites whose nodes take their address from DHCP.
    dnsmasq_reservations: bool = False

    def __post_init__(self) -> None:
        if len(self.bridge) > 15:
            raise ValueError(f"bridge name {self.bridge!r} is longer than 15 characters")
        net = ipaddress.ip_network(self.cidr, strict=True)
        if ipaddress.ip_address(self.gateway) not in net:
            raise ValueError(f"gateway {self.gateway} is outside {self.cidr}")
        for h in self.hosts:
            if ipaddress.ip_address(h.ip) not in net:
                raise ValueError(f"{h.name}: address {h.ip} is outside {self.cidr}")


def _dnsmasq_options(spec: NetworkSpec) -> str:
    options = "".join(f"    <dnsmasq:option value={quoteattr(f'dhcp-host={h.mac.lower()},{h.ip},{h.name}')}/>\n"
                      for h in spec.hosts)
    return f"  <dnsmasq:options>\n{options}  </dnsmasq:options>\n"


def network_xml(spec: NetworkSpec) -> str:
    """NAT network with DHCP reservations by MAC and no DNS service (dnsmasq must never forward a query).

    The DHCP range is a small tail of the subnet so a node without a reservation still gets an address the
    harness can report, instead of silently colliding with a planned static one.
    """
    net = ipaddress.ip_network(spec.cidr)
    last = net.broadcast_address - 1
    first = last - 9
    hosts = "".join(
        f"      <host mac={quoteattr(h.mac.lower())} name={quoteattr(h.name)} ip={quoteattr(h.ip)}/>\n"
        for h in spec.hosts
    ) if not spec.dnsmasq_reservations else ""
    opening = "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>" \
        if spec.dnsmasq_reservations else "<network>"
    options = _dnsmasq_options(spec) if spec.dnsmasq_reservations else ""
    bootp = f"      <bootp file={quoteattr(spec.bootp_file)}/>\n" if spec.bootp_file else ""
    return f"""{opening}
  <name>{escape(spec.name)}</name>
  <forward mode='nat'/>
  <bridge name={quoteattr(spec.bridge)} stp='off' delay='0'/>
  <dns enable='no'/>
  <ip address={quoteattr(spec.gateway)} netmask={quoteattr(str(net.netmask))}>
    <dhcp>
      <range start='{first}' end='{last}'/>
{hosts}{bootp}    </dhcp>
  </ip>
{options}</network>
"""


def dhcp_host_xml(host: HostEntry) -> str:
    """One DHCP reservation, as `virNetwork.update` adds it to a running network (a node added on day 2)."""
    return f"<host mac={quoteattr(host.mac.lower())} name={quoteattr(host.name)} ip={quoteattr(host.ip)}/>"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    memory_mib: int
    vcpus: int
    disk: str  # qcow2 overlay path
    seed_iso: str | None
    mac: str
    network: str
    serial_log: str
    accel: str  # kvm | tcg
    firmware: str = "bios"  # bios | uefi
    ovmf_code: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    ovmf_vars_template: str = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    nvram: str = ""
    tb_cache_mib: int = 256
    extra_disks: tuple[str, ...] = ()  # read-only raw disks (e.g. the bundle), shared between domains
    boot_network: bool = False  # PXE from the NIC first (QEMU's iPXE ROM), then the disk
    smbios_serial: str = ""  # SMBIOS type 1 system serial (cloud-init's NoCloud reads `ds=...` there)


def domain_xml(spec: DomainSpec) -> str:
    """A throw-away test domain. qemu runs as root (static DAC label +0:+0) because the overlays, seeds and the
    cached image live under the invoking user's home, which libvirt-qemu cannot traverse (/root is 0700)."""
    if spec.accel == "kvm":
        dom_type, cpu, tcg = "kvm", "<cpu mode='host-passthrough' check='none' migratable='off'/>", ""
    elif spec.accel == "tcg":
        # 'maximum' gives TCG every feature it can emulate (x86-64-v2+); the smaller translation cache keeps
        # qemu's RSS near guest RAM + 350 MB instead of + 1 GiB.
        dom_type, cpu = "qemu", "<cpu mode='maximum' check='none'/>"
        tcg = f"    <tcg>\n      <tb-cache unit='MiB'>{spec.tb_cache_mib}</tb-cache>\n    </tcg>\n"
    else:
        raise ValueError(f"accel {spec.accel!r}: use kvm or tcg")
    if spec.firmware == "uefi":
        loader = (f"    <loader readonly='yes' type='pflash'>{escape(spec.ovmf_code)}</loader>\n"
                  f"    <nvram template={quoteattr(spec.ovmf_vars_template)}>{escape(spec.nvram)}</nvram>\n")
    elif spec.firmware == "bios":
        loader = ""
    else:
        raise ValueError(f"firmware {spec.firmware!r}: use bios or uefi")
    boot = "    <boot dev='network'/>\n" if spec.boot_network else ""
    sysinfo = ""
    if spec.smbios_serial:  # libvirt formatdomain "SMBIOS System Information": <sysinfo> + <smbios mode='sysinfo'/>
        boot += "    <smbios mode='sysinfo'/>\n"
        sysinfo = (f"  <sysinfo type='smbios'>\n    <system>\n      <entry name='serial'>{escape(spec.smbios_serial)}"
                   "</entry>\n    </system>\n  </sysinfo>\n")
    seed = ""
    if spec.seed_iso:
        # virtio-scsi, not SATA: the cloud kernel has no AHCI driver.
        seed = f"""    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(spec.seed_iso)}/>
      <target dev='sda' bus='scsi'/>
      <readonly/>
    </disk>
"""
    extra = "".join(f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(path)}/>
      <target dev='vd{chr(ord("b") + i)}' bus='virtio'/>
      <readonly/>
      <shareable/>
    </disk>
""" for i, path in enumerate(spec.extra_disks))
    return f"""<domain type='{dom_type}'>
  <name>{escape(spec.name)}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
{sysinfo}  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
{loader}{boot}    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
{tcg}  </features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file={quoteattr(spec.disk)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
{extra}{seed}    <controller type='scsi' model='virtio-scsi'/>
    <interface type='network'>
      <mac address={quoteattr(spec.mac.lower())}/>
      <source network={quoteattr(spec.network)}/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file={quoteattr(spec.serial_log)} append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
"""
