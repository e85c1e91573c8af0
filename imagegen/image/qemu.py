"""Runs qemu directly (no libvirt): the acceleration probe, the one-shot GRUB install and image preload boots, and
boot checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from imagegen.errors import UsageError
from imagegen.image.content import (
    GRUB_FAILED,
    GRUB_OK,
    GRUB_SETUP_PATH,
    PRELOAD_FAILED,
    PRELOAD_OK,
    PRELOAD_PATH,
)
from imagegen.image.proc import BuildError, query, run
from imagegen.proc import ProcessTimeout, capture

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
ACCELS = ("kvm", "tcg")

# A 512-byte boot sector: writes 'K' to COM1, then tells isa-debug-exit to quit with status (0x31 << 1) | 1 = 99.
# If the guest really executes under KVM, qemu exits 99; broken nested KVM fails or never gets there.
_PROBE_CODE = bytes.fromhex("baf803" "b04b" "ee" "baf400" "b031" "ee" "f4" "ebfd")
PROBE_SECTOR = _PROBE_CODE + bytes(510 - len(_PROBE_CODE)) + b"\x55\xaa"
_PROBE_OK = 99


def probe_accel(env: Mapping[str, str] | None = None) -> str:
    """'kvm' where a guest really runs under KVM with -cpu host, else 'tcg'; IMAGEGEN_ACCEL overrides."""
    env = os.environ if env is None else env
    setting = env.get("IMAGEGEN_ACCEL", "").strip().lower()
    if setting:
        if setting not in ACCELS:
            raise UsageError(f"IMAGEGEN_ACCEL={setting!r}: use kvm or tcg (or unset it to probe)")
        return setting
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    with tempfile.TemporaryDirectory(prefix="imagegen-kvm-probe-") as tmp:
        sector = Path(tmp, "probe.img")
        sector.write_bytes(PROBE_SECTOR)
        try:
            done = capture(
                [QEMU, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "32", "-nodefaults",
                 "-display", "none", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                 "-drive", f"file={sector},format=raw,if=ide"],
                timeout=15)
        except (ProcessTimeout, FileNotFoundError):
            return "tcg"
    return "kvm" if done.returncode == _PROBE_OK and "K" in done.stdout else "tcg"


def cpu_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # A 256 MiB translation cache instead of the default 1 GiB keeps qemu's RSS near guest RAM + 350 MB.
    return ["-accel", "tcg,tb-size=256", "-cpu", "max"]


def install_grub(raw: Path, *, kernel: Path, initrd: Path, accel: str, serial_log: Path, log: IO[str]) -> float:
    """Boot the image's own kernel once with the setup script as init; returns seconds taken."""
    return _boot_once(raw, kernel=kernel, initrd=initrd, init=GRUB_SETUP_PATH, ok=GRUB_OK, failed=GRUB_FAILED,
                      what="GRUB install boot", memory_mib=1024, timeout=900, accel=accel, serial_log=serial_log,
                      log=log)


# The preload boot reads ~0.5 GB of archives and writes them twice (content store and unpacked snapshots) under TCG:
# memory for the page cache and containerd, and time for a bigger bundle on a slower host.
PRELOAD_MEMORY_MIB = 2048
PRELOAD_TIMEOUT = 2400


def preload_images(raw: Path, *, kernel: Path, initrd: Path, accel: str, serial_log: Path, log: IO[str]) -> float:
    """Boot the image's own kernel once with the preload script as init (a spec with a bundle); returns seconds."""
    return _boot_once(raw, kernel=kernel, initrd=initrd, init=PRELOAD_PATH, ok=PRELOAD_OK, failed=PRELOAD_FAILED,
                      what="image preload boot", memory_mib=PRELOAD_MEMORY_MIB, timeout=PRELOAD_TIMEOUT,
                      accel=accel, serial_log=serial_log, log=log)


def _boot_once(raw: Path, *, kernel: Path, initrd: Path, init: str, ok: str, failed: str, what: str,
               memory_mib: int, timeout: float, accel: str, serial_log: Path, log: IO[str]) -> float:
    """Boot `raw` (written in place) with `init` as PID 1 until it powers off; the console must show `ok`."""
    started = time.monotonic()
    cmd = [QEMU, *cpu_args(accel), "-machine", "q35", "-m", str(memory_mib), "-smp", "2", "-nodefaults",
           "-display", "none", "-no-reboot", "-serial", f"file:{serial_log}",
           "-kernel", str(kernel), "-initrd", str(initrd),
           "-append", f"root=/dev/vda3 rw init={init} console=ttyS0,115200 panic=-1 quiet",
           "-drive", f"file={raw},format=raw,if=virtio,cache=unsafe"]
    try:
        run(cmd, log, step=f"{what} (qemu)", timeout=timeout)
    finally:
        console = serial_log.read_text(errors="replace") if serial_log.exists() else ""
        log.write(f"--- {what} serial console ---\n" + console + "\n--- end of console ---\n")
    if ok not in console:
        reason = next((ln for ln in console.splitlines() if failed in ln), "no completion marker")
        raise BuildError(f"{what}: {reason}; the serial console is in the build log")
    return time.monotonic() - started


class BootTimeout(Exception):
    pass


def boot_until(disk: Path, *, firmware: str, seed_iso: Path | None, marker: str, serial_log: Path,
               accel: str, timeout: float, memory_mib: int = 1536, bus: str = "virtio") -> float:
    """Boot a qcow2 overlay of `disk` (never the image itself) until `marker` is on the serial console.

    firmware: 'bios' (SeaBIOS) or 'uefi' (OVMF). Network is qemu user-mode with restrict=on: nothing leaves.
    bus: 'virtio' (disk, NIC and a virtio-scsi cdrom) or 'sata' (AHCI disk and cdrom, e1000 NIC: the drivers
    a VMware template needs, which only the generic kernel has).
    Returns seconds from start to marker; raises BootTimeout otherwise.
    """
    if firmware not in ("bios", "uefi"):
        raise UsageError(f"firmware {firmware!r}: use bios or uefi")
    with tempfile.TemporaryDirectory(prefix="imagegen-boot-") as tmp:
        overlay = Path(tmp, "overlay.qcow2")
        query(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk.resolve()), str(overlay)],
              step="boot overlay (qemu-img create)", timeout=120)
        if bus not in ("virtio", "sata"):
            raise UsageError(f"bus {bus!r}: use virtio or sata")
        cmd = [QEMU, *cpu_args(accel), "-machine", "q35", "-m", str(memory_mib), "-smp", "2", "-nodefaults",
               "-display", "none", "-serial", f"file:{serial_log}"]
        if bus == "virtio":
            cmd += ["-drive", f"file={overlay},format=qcow2,if=virtio",
                    "-nic", "user,model=virtio-net-pci,restrict=on"]
        else:  # q35's built-in AHCI controller
            cmd += ["-drive", f"file={overlay},format=qcow2,if=none,id=root",
                    "-device", "ide-hd,drive=root,bus=ide.0,bootindex=1",
                    "-nic", "user,model=e1000,restrict=on"]
        if firmware == "uefi":
            vars_copy = Path(tmp, "OVMF_VARS.fd")
            shutil.copyfile(OVMF_VARS, vars_copy)
            cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,file={vars_copy}"]
        if seed_iso is not None and bus == "sata":
            cmd += ["-drive", f"file={seed_iso},format=raw,if=none,id=seed,media=cdrom,readonly=on",
                    "-device", "ide-cd,drive=seed,bus=ide.1"]
        elif seed_iso is not None:
            # virtio-scsi: the cloud kernel has no AHCI driver, so a SATA cdrom would be invisible.
            cmd += ["-device", "virtio-scsi-pci,id=scsi0",
                    "-drive", f"file={seed_iso},format=raw,if=none,id=seed,media=cdrom,readonly=on",
                    "-device", "scsi-cd,bus=scsi0.0,drive=seed"]
        started = time.monotonic()
        # Popen, not imagegen.proc: qemu runs in the background while the serial log is watched for the marker,
        # and is stopped here when it appears or time runs out.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while time.monotonic() - started < timeout:
                if serial_log.exists() and marker in serial_log.read_text(errors="replace"):
                    return time.monotonic() - started
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise BootTimeout(f"qemu exited with {proc.returncode} before {marker!r}: {err.strip()}")
                time.sleep(1)
            raise BootTimeout(f"no {marker!r} on the serial console within {timeout:.0f} s")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
