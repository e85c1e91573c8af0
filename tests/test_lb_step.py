"""The load balancer's install step against the interface its network actually came up on: keepalived.conf names
the plan's interface (network-config's set-name); a node seeded without that network-config (SMBIOS on cloud-init
< 24.3: DHCP on the kernel's name) has its address elsewhere, and vrrp_interface points keepalived there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import Rendered

CONF = "/etc/keepalived/keepalived.conf"


def _run(r: Rendered, tmp_path: Path, links: str, addrs: str) -> tuple[subprocess.CompletedProcess[str], str]:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(r.file("lb-1", CONF))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ip = bin_dir / "ip"
    # `ip -o link show dev NAME` succeeds for the links given; `ip -o -4 addr show` prints the addresses given.
    ip.write_text(f'#!/bin/bash\nif [ "$2" = link ]; then for l in {links}; do [ "$5" = "$l" ] && exit 0; done; '
                  f'exit 1; fi\nprintf "%s\\n" {addrs}\n')
    ip.chmod(0o755)
    script = "set -uo pipefail\n" + r.program("lb-1", "lib", "steps/install_load_balancer") + \
        f"\nCURRENT_STEP=install_load_balancer\nKEEPALIVED_CONF={conf}\nvrrp_interface; echo \"rc=$?\"\n"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE_DIR": str(tmp_path)})
    return done, conf.read_text()


@pytest.fixture
def lb(rendered: dict[str, Rendered]) -> Rendered:
    return rendered["ha"]


def _addr(iface: str, cidr: str) -> str:
    return f"'2: {iface}    inet {cidr} brd 0.0.0.0 scope global {iface}'"


def test_planned_interface_present_changes_nothing(lb: Rendered, tmp_path: Path) -> None:
    conf = lb.file("lb-1", CONF)
    assert "interface eth0" in conf
    done, after = _run(lb, tmp_path, "eth0", _addr("eth0", "192.168.10.2/24"))
    assert "rc=0" in done.stdout, done.stderr
    assert after == conf


def test_address_on_another_interface_moves_keepalived_there(lb: Rendered, tmp_path: Path) -> None:
    conf = lb.file("lb-1", CONF)
    src = next(ln.split()[1] for ln in conf.splitlines() if ln.strip().startswith("unicast_src_ip"))
    done, after = _run(lb, tmp_path, "enp1s0", f"{_addr('lo', '127.0.0.1/8')} {_addr('enp1s0', src + '/24')}")
    assert "rc=0" in done.stdout, done.stdout + done.stderr
    assert "eth0" not in after
    assert after == conf.replace("interface eth0", "interface enp1s0").replace("dev eth0", "dev enp1s0")
    assert "keepalived uses enp1s0" in done.stdout + done.stderr


def test_address_on_no_interface_is_a_failure(lb: Rendered, tmp_path: Path) -> None:
    conf = lb.file("lb-1", CONF)
    done, after = _run(lb, tmp_path, "enp1s0", _addr("enp1s0", "10.9.9.9/24"))
    assert "rc=1" in done.stdout, done.stdout + done.stderr
    assert after == conf
