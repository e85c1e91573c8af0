"""Disk geometry, rendered boot configuration, OVF descriptor and the kernel-module check (all pure)."""

from __future__ import annotations

import itertools
import shlex
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from imagegen.image import content
from imagegen.image.build import load_spec
from imagegen.image.layout import ESP_TYPE, GIB, MIB, disk_size_for, plan_disk
from imagegen.image.ovf import OvfParams, render_manifest, render_ovf

from .conftest import cloud_init_root


def test_partitions_are_aligned_ordered_and_fill_the_disk() -> None:
    layout = plan_disk(8, "k")
    parts = [layout.bios, layout.esp, layout.root]
    assert [p.number for p in parts] == [1, 2, 3]
    for a, b in itertools.pairwise(parts):
        assert a.start + a.size == b.start
    for p in parts:
        assert p.start % MIB == 0 and p.size % MIB == 0
    assert layout.bios.start == MIB and layout.esp.size == 126 * MIB
    assert layout.root.start + layout.root.size == 8 * GIB - MIB  # room for the backup GPT


def test_identifiers_follow_the_key_only() -> None:
    a, b = plan_disk(8, "k1"), plan_disk(20, "k1")
    assert (a.disk_guid, a.root_fs_uuid, a.esp_volume_id) == (b.disk_guid, b.root_fs_uuid, b.esp_volume_id)
    assert plan_disk(8, "k2").root_fs_uuid != a.root_fs_uuid
    assert len(a.esp_volume_id) == 8 and a.esp_fs_uuid[4] == "-"


def test_sfdisk_script_names_every_partition() -> None:
    script = plan_disk(8, "k").sfdisk_script()
    assert script.startswith("label: gpt\n")
    assert script.count("start=") == 3 and ESP_TYPE in script
    assert 'name="root"' in script


def test_disk_grows_for_big_content_but_not_below_spec() -> None:
    assert disk_size_for(100 * MIB, 8) == 8
    assert disk_size_for(12 * GIB, 8) >= 17


def test_boot_config_puts_the_serial_console_last_and_uses_uuids() -> None:
    layout = plan_disk(8, "k")
    grub = content.default_grub()
    assert 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"' in grub
    fstab = content.fstab(layout)
    assert f"UUID={layout.root_fs_uuid} / ext4" in fstab
    assert f"UUID={layout.esp_fs_uuid} /boot/efi vfat" in fstab
    setup = content.grub_setup_script(layout)
    assert "--target=i386-pc" in setup and "--target=x86_64-efi" in setup and "--removable" in setup
    assert f"root=UUID={layout.root_fs_uuid}" in setup


def test_cloud_config_lists_the_datasources() -> None:
    cfg = yaml.safe_load(content.cloud_cfg())
    assert cfg["datasource_list"] == ["NoCloud", "ConfigDrive", "VMware", "None"]
    assert cfg["locale"] == "C.UTF-8"


def test_ds_identify_reads_the_images_datasource_list(tmp_path: Path) -> None:
    """cloud-init's generator runs ds-identify (a shell script) on every boot and daemon-reload; it reads
    datasource_list from the config files with its own line reader. Debian 12's real ds-identify must see the
    image's list (it probed ~27 sources when the file was JSON)."""
    ds_identify = cloud_init_root("bookworm").parents[1] / "cloud-init" / "ds-identify"
    if not ds_identify.is_file():
        pytest.fail(f"cloud-init (bookworm) is not unpacked: {ds_identify} missing; run `make deps`")
    cfg_d = tmp_path / "etc" / "cloud" / "cloud.cfg.d"
    cfg_d.mkdir(parents=True)
    (tmp_path / "etc" / "cloud" / "cloud.cfg").write_text("# Debian's own has no datasource_list\n")
    (cfg_d / "90_imagegen.cfg").write_text(content.cloud_cfg())
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cmdline").write_text("root=/dev/vda3 console=ttyS0\n")
    script = f'. {shlex.quote(str(ds_identify))}; read_datasource_list; echo "LIST=$DI_DSLIST"'
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PATH_ROOT": str(tmp_path), "DI_MAIN": "noop",
                               "DI_LOG": str(tmp_path / "ds-identify.log")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LIST=NoCloud ConfigDrive VMware None"


def test_customize_script_cleans_like_a_template() -> None:
    script = content.customize_script(load_spec("node"))
    for needle in ("ssh_host_", ": > \"$root\"/etc/machine-id", "cloud-init clean --logs", "var/lib/apt/lists",
                   "/etc/nginx/sites-enabled/default"):
        assert needle in script
    # Host paths arrive as arguments: the script text (part of the cache key) does not contain them.
    assert "/tmp" not in script and "/.cache" not in script
    assert 'staging="$2"' in script


def test_missing_modules_reads_modules_dep_and_builtin() -> None:
    dep = "kernel/fs/overlayfs/overlay.ko: \nkernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko\n"
    builtin = "kernel/net/ipv4/ip_tables.ko\n"
    assert content.missing_modules(("overlay", "br_netfilter", "ip_tables", "ip_vs"), dep, builtin) == ["ip_vs"]
    # Not fooled by a module whose path merely contains the name.
    assert content.missing_modules(("ip_vs",), "kernel/net/netfilter/xt_ipvs.ko: \n", "") == ["ip_vs"]


NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"}


def test_ovf_descriptor_is_well_formed_and_references_the_disk() -> None:
    text = render_ovf(OvfParams(name="node-generic", annotation="a <node> & more", vmdk_file="node-generic.vmdk",
                                vmdk_size=1234, capacity=8 * GIB, populated=900 * MIB))
    root = ET.fromstring(text)
    file_el = root.find("ovf:References/ovf:File", NS)
    assert file_el is not None and file_el.get(f"{{{NS['ovf']}}}href") == "node-generic.vmdk"
    assert file_el.get(f"{{{NS['ovf']}}}size") == "1234"
    disk = root.find("ovf:DiskSection/ovf:Disk", NS)
    assert disk is not None and disk.get(f"{{{NS['ovf']}}}capacity") == str(8 * GIB)
    items = root.findall("ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item", NS)
    types = {i.findtext("rasd:ResourceType", namespaces=NS): i for i in items}
    assert set(types) == {"3", "4", "5", "6", "10", "15", "17"}
    assert types["6"].findtext("rasd:ResourceSubType", namespaces=NS) == "lsilogic"
    assert types["10"].findtext("rasd:ResourceSubType", namespaces=NS) == "VmxNet3"
    assert types["17"].findtext("rasd:Parent", namespaces=NS) == types["6"].findtext("rasd:InstanceID",
                                                                                       namespaces=NS)
    for item in items:  # CIM's sequence: elements in alphabetical order
        names = [child.tag.split("}")[1] for child in item]
        assert names == sorted(names)


def test_manifest_lines() -> None:
    assert render_manifest({"a.ovf": "00", "a.vmdk": "11"}) == "SHA256(a.ovf)= 00\nSHA256(a.vmdk)= 11\n"
