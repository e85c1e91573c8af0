"""vm-tests/boot_profile.py's reading of systemd's per-unit CPU accounting (the VM part runs with `make vm-profile`)."""

from __future__ import annotations

from .test_vm_session import VM_TESTS

PROFILER = VM_TESTS / "boot_profile.py"  # test_vm_session put vm-tests on sys.path (and stubbed libvirt where missing)

import boot_profile  # noqa: E402

# `systemctl show -p Id -p CPUUsageNSec ...` as systemd 252 prints it for several units (the order is systemd's).
SHOW = """Id=ssh.service
CPUUsageNSec=1980000000
ExecMainStartTimestampMonotonic=0

Id=apt-daily.timer
CPUUsageNSec=[not set]

Id=init.scope
CPUUsageNSec=9920000000

Id=cloud-init.service
CPUUsageNSec=5810000000

Id=idle.service
CPUUsageNSec=0
"""


def test_units_by_cpu_biggest_first_without_unaccounted_ones() -> None:
    assert boot_profile.parse_unit_cpu(SHOW) == [("init.scope", 9.92), ("cloud-init.service", 5.81),
                                                  ("ssh.service", 1.98)]


def test_empty_output_is_no_units() -> None:
    assert boot_profile.parse_unit_cpu("") == []


def test_the_profiler_is_where_make_vm_profile_runs_it() -> None:
    assert PROFILER.is_file()


def test_defaults_profile_the_smoke_plans_load_balancer() -> None:
    args = boot_profile.parse_args([])
    assert args.plan.name == "smoke.yaml" and args.node == [] and args.bundle is None and not args.keep
    args = boot_profile.parse_args(["--node", "a", "--node", "b", "--keep"])
    assert args.node == ["a", "b"] and args.keep
