"""/dev/kvm as libvirt expects to find it, on hosts where no udev set it up."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

KVM_DEVICE = Path("/dev/kvm")


def align_kvm_device(log: list[str], device: Path = KVM_DEVICE, group: str = "kvm") -> None:
    """Give /dev/kvm the owner and mode Debian's udev rules give it (root:kvm 0660) where no udev did.

    libvirt probes QEMU's capabilities as root (QEMU reports KVM: the device answers) but decides whether KVM is
    usable by testing the device as the qemu user (libvirt-qemu, group kvm). With the device root-only 0600, the
    two disagree, so libvirtd throws its capabilities cache away on every lookup ("KVM was enabled when probing
    ..., but it is not available now") and re-probes QEMU: a domain definition took 32-90 s here instead of
    0.02 s. Whether guests then run with KVM or TCG is decided elsewhere (harness.lab's probe)."""
    if os.geteuid() != 0 or not device.exists():
        return
    try:
        kvm_gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return
    st = device.stat()
    if st.st_gid == kvm_gid and stat.S_IMODE(st.st_mode) & 0o060 == 0o060:
        return
    os.chown(device, -1, kvm_gid)
    os.chmod(device, stat.S_IMODE(st.st_mode) | 0o060)
    log.append(f"{device}: group {group}, mode 0660 (as udev sets it), so libvirtd keeps its QEMU capabilities cache")
