"""The harness gives /dev/kvm udev's owner and mode, so libvirtd keeps its QEMU capabilities cache."""

from __future__ import annotations

import grp
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm-tests"))

from harness.kvmdev import align_kvm_device  # noqa: E402


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to group kvm needs root (CI runs as root)")
def test_root_only_device_gets_group_kvm_0660(tmp_path: Path) -> None:
    # "daemon" stands in for "kvm", which only hosts with udev or QEMU have; base-passwd always has "daemon".
    kvm_gid = grp.getgrnam("daemon").gr_gid
    device = tmp_path / "kvm"
    device.touch(mode=0o600)
    os.chown(device, 0, 0)
    log: list[str] = []
    align_kvm_device(log, device, "daemon")
    assert device.stat().st_gid == kvm_gid and device.stat().st_mode & 0o777 == 0o660
    assert log and "group daemon, mode 0660" in log[0]
    log.clear()
    align_kvm_device(log, device, "daemon")  # already right: nothing done, nothing logged
    assert log == []


def test_missing_device_is_left_alone(tmp_path: Path) -> None:
    log: list[str] = []
    align_kvm_device(log, tmp_path / "absent")
    assert log == [] and not (tmp_path / "absent").exists()
