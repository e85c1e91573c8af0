"""Makes sure virtlogd and libvirtd are running; starts them by hand where no init system does (this host)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import libvirt

from harness.kvmdev import align_kvm_device

URI = "qemu:///system"
SOCKET = Path("/run/libvirt/libvirt-sock")


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; the harness reports the ones that matter itself."""


libvirt.registerErrorHandler(_quiet, None)


def _try_open() -> libvirt.virConnect | None:
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError:
        return None


def _running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True, check=False).returncode == 0


def connect(log: list[str]) -> libvirt.virConnect:
    """Open qemu:///system, starting virtlogd/libvirtd first if nothing answers. Started daemons keep running
    (other runs and people share them); `log` records what was done."""
    align_kvm_device(log)
    conn = _try_open()
    if conn is not None:
        return conn
    if os.geteuid() != 0:
        raise RuntimeError("libvirtd is not running and only root can start it: start it, or run as root")
    for binary in ("/usr/sbin/virtlogd", "/usr/sbin/libvirtd"):
        if not Path(binary).exists() and not shutil.which(Path(binary).name):
            raise RuntimeError(f"{binary} missing: apt-get install libvirt-daemon-system")
    Path("/run/libvirt").mkdir(parents=True, exist_ok=True)
    if not _running("virtlogd"):
        subprocess.run(["/usr/sbin/virtlogd", "-d"], check=True)
        log.append("started virtlogd -d")
    if not _running("libvirtd"):
        # With the umask of a root shell that set 077, libvirtd writes its networks' DHCP hostsfiles 0600 and
        # dnsmasq (running as nobody) cannot read them: DHCP reservations silently vanish (vm-pxe saw a node get
        # a pool address). systemd starts libvirtd with 022; so does the harness.
        subprocess.run(["/usr/sbin/libvirtd", "-d"], check=True, preexec_fn=lambda: os.umask(0o022))
        log.append("started libvirtd -d")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn = _try_open()
        if conn is not None:
            return conn
        time.sleep(0.5)
    raise RuntimeError(f"libvirtd did not answer on {URI} within 30 s (is {SOCKET} there?)")
