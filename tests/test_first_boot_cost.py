"""First-boot cost the node program controls: systemd reloads. vm-tests/boot_profile.py measured a daemon-reload at
2.4-5 s of systemd's CPU under TCG, and a control plane did nine of them at first boot; each one the node program
asks for must be one it needs."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import Rendered

ROOT = Path(__file__).resolve().parent.parent


def _run_runcmd(tmp_path: Path, command: list[str], need_reload: str) -> list[str]:
    """Run the user-data's runcmd entry with a stand-in systemctl; the systemctl calls it made."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$*" >>{calls}\n'
                    f'[ "$1" = show ] && echo {need_reload}\nexit 0\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    done = subprocess.run(command, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()


@pytest.mark.parametrize("need_reload", ["no", "yes"])
def test_runcmd_reloads_systemd_only_for_a_changed_unit(rendered: dict[str, Rendered], tmp_path: Path,
                                                        need_reload: str) -> None:
    (command,) = rendered["ha"].user_data("lb-1")["runcmd"]
    calls = _run_runcmd(tmp_path, command, need_reload)
    reload = ["daemon-reload"] if need_reload == "yes" else []
    assert calls == ["show -p NeedDaemonReload --value imagegen-bootstrap.service", *reload,
                     "start --no-block imagegen-bootstrap.service"]


def test_every_role_starts_its_bootstrap_the_same_way(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        runcmds = {str(r.user_data(n.name)["runcmd"]) for n in r.plan.nodes}
        assert len(runcmds) == 1


# `systemctl enable|disable|mask|unmask` reloads systemd unless given --no-reload; add-wants with --no-reload is what
# enable_units (node/lib.sh) uses.
_IMPLICIT_RELOAD = re.compile(r"\bsystemctl\s+(?!--no-reload)(?:\S+\s+)*?(enable|disable|mask|unmask|add-wants)\b")


def test_node_program_never_reloads_systemd_as_a_side_effect() -> None:
    """Every reload is an explicit `systemctl daemon-reload` right after the step put unit files in place
    itself (kubelet from the bundle, cri-dockerd); enabling, disabling and masking never reload."""
    sources = sorted((ROOT / "cloud-init").rglob("*.j2"))
    offenders = []
    for src in sources:
        for number, line in enumerate(src.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _IMPLICIT_RELOAD.search(code):
                offenders.append(f"{src.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
