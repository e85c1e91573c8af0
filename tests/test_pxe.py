"""`imagegen pxe`: dnsmasq accepts both configurations (`dnsmasq --test`), every node has a reservation with its
planned address, and the iPXE, GRUB and kernel-argument files carry the same seed that cloud-init parses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagegen import channels
from imagegen.cli import main
from imagegen.serve import ipxe_script, load_output

from .conftest import ROOT, require_tool

URL = "http://192.168.10.5:8080"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pxe")
    out, dest = root / "out", root / "pxe"
    assert main(["render", str(ROOT / "examples" / "ha.yaml"), "--out", str(out), "--state", str(root / "st"),
                 "--quiet"]) == 0
    assert main(["pxe", str(out), "--url", URL, "--dest", str(dest)]) == 0
    return out, dest


@pytest.mark.parametrize("name", ["dnsmasq.conf", "dnsmasq-proxy.conf"])
def test_dnsmasq_accepts_the_configuration(written: tuple[Path, Path], name: str) -> None:
    dnsmasq = require_tool("dnsmasq")
    result = subprocess.run([dnsmasq, "--test", "-C", str(written[1] / name)], capture_output=True, text=True)
    assert result.returncode == 0 and "syntax check OK" in result.stdout + result.stderr, result.stderr


def test_reservations_and_chain_loading(written: tuple[Path, Path]) -> None:
    out, dest = written
    conf = (dest / "dnsmasq.conf").read_text()
    for node in load_output(out).nodes.values():
        assert f"dhcp-host={node.mac},{node.ip},{node.name}\n" in conf
    assert f"dhcp-boot=tag:ipxe,{URL}/ipxe/${{mac}}" in conf
    assert "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe" in conf and "tag:efi64,ipxe.efi" in conf
    assert ",proxy" in (dest / "dnsmasq-proxy.conf").read_text()


def test_scripts_grub_and_cmdline_agree(written: tuple[Path, Path]) -> None:
    out, dest = written
    for node in load_output(out).nodes.values():
        cmdline = (dest / "cmdline" / node.name).read_text().strip()
        assert cmdline == channels.kernel_cmdline(node.name, f"{URL}/nodes/{node.name}/",
                                                  node.files["network-config"])
        assert (dest / "ipxe" / f"{node.mac}.ipxe").read_text() == ipxe_script(node, URL, f"{URL}/boot")
        grub = (dest / "grub" / f"{node.name}.cfg").read_text()
        assert f"linux (http,192.168.10.5:8080)/boot/vmlinuz {channels.grub_escape(cmdline)} " in grub
        assert (dest / "smbios" / node.name).read_text().strip() == f"ds=nocloud-net;s={URL}/nodes/{node.name}/"
    assert not any("PRIVATE KEY" in p.read_text() for p in dest.rglob("*") if p.is_file())


def test_refuses_a_non_empty_destination(written: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, dest = written
    assert main(["pxe", str(out), "--url", URL, "--dest", str(dest)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_installer_scripts_with_a_netboot_boot_dir(written: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = written
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "installer.cpio.gz").write_bytes(b"x")
    dest = tmp_path / "pxe"
    assert main(["pxe", str(out), "--url", URL, "--dest", str(dest), "--boot-dir", str(boot)]) == 0
    for node in load_output(out).nodes.values():
        script = (dest / "ipxe" / f"{node.mac}.ipxe").read_text()
        assert script == ipxe_script(node, URL, f"{URL}/boot", installer=True)
        assert f"initrd=installer.cpio.gz imagegen.url={URL} imagegen.mac={node.mac} " in script
        assert f"initrd {URL}/boot/installer.cpio.gz\n" in script and "ds=nocloud" not in script


def test_boot_dir_must_exist(written: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = written
    assert main(["pxe", str(out), "--url", URL, "--dest", str(tmp_path / "d"), "--boot-dir", str(tmp_path / "no")]) == 2
    assert "--boot-dir" in capsys.readouterr().err
