"""`imagegen image netboot` without VMs: the installer script run under the real static busybox with a fake
busybox for every program it runs (network, disk, mounts, HTTP, reboot), and the pure helpers (cpio, initrd
segments, partition table, modules.dep). The installer must do its steps in order, print exactly one sentinel on
every exit path, and never reboot after a failure."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen.image import netboot

from .conftest import ROOT

INSTALLER = ROOT / "profiles" / "images" / "netboot" / "imagegen-install"
MAC = "52:54:00:79:00:02"
URL = "http://10.79.0.1:8089"
IMAGE = b"GPT-DISK-IMAGE" * 1000


def _busybox() -> Path | None:
    cached = sorted(netboot.busybox_cache().glob("*/busybox"))
    if cached:
        return cached[-1]
    found = shutil.which("busybox")
    return Path(found) if found else None


BUSYBOX = _busybox()
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="no busybox (run `imagegen image netboot` once, or "
                                                             "apt-get install busybox-static)")

# Stands in for /imagegen/bin/busybox: logs each call, answers HTTP from R/server/, keeps the disk as R/disk.
# FAKE_FAIL lists applets (or "wget:PATH") that fail.
FAKE = r"""#!/bin/sh
R=$IMAGEGEN_INSTALL_ROOT
applet=$1; shift
echo "$applet $*" >> "$R/calls.log"
for f in $FAKE_FAIL; do [ "$f" = "$applet" ] && exit 1; done
case "$applet" in
  cat|tr|sed|rm|chmod|mv|mkdir) exec "$applet" "$@" ;;
  gunzip) exec gzip -dc ;;
  dd) cat > "$R/disk"; exit 0 ;;
  blockdev) mkdir -p "$R/sys/class/block/${PART_NAME:-vda3}"; exit 0 ;;
  wget)
    out=""; url=""
    while [ $# -gt 0 ]; do
      case "$1" in -O-) out=- ;; -O) out=$2; shift ;; -q) ;; --post-data) shift ;; *) url=$1 ;; esac
      shift
    done
    path=${url#http://*/}
    for f in $FAKE_FAIL; do [ "$f" = "wget:$path" ] && exit 1; done
    if [ "${url%/installed}" != "$url" ]; then exit 0; fi
    [ -f "$R/server/$path" ] || exit 1
    if [ "$out" = - ]; then cat "$R/server/$path"; else cat "$R/server/$path" > "$out"; fi ;;
  *) exit 0 ;;
esac
"""


def _root(tmp_path: Path, cmdline: str = f"imagegen.url={URL} imagegen.mac={MAC} console=ttyS0",
          nics: dict[str, str] | None = None, disks: tuple[str, ...] = ("vda",)) -> Path:
    r = tmp_path / "r"
    (r / "proc").mkdir(parents=True)
    (r / "proc" / "cmdline").write_text(cmdline + "\n")
    for name, addr in (nics or {"lo": "00:00:00:00:00:00", "ens3": MAC}).items():
        (r / "sys" / "class" / "net" / name).mkdir(parents=True)
        (r / "sys" / "class" / "net" / name / "address").write_text(addr + "\n")
    for d in disks:
        (r / "sys" / "block" / d).mkdir(parents=True)
    (r / "imagegen" / "bin").mkdir(parents=True)
    fake = r / "imagegen" / "bin" / "busybox"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    (r / "imagegen" / "install.conf").write_text(netboot.install_conf(netboot.RootPartition(3, 0, 0), []))
    server = r / "server"
    (server / "boot").mkdir(parents=True)
    (server / "boot" / netboot.IMAGE_FILE).write_bytes(gzip.compress(IMAGE))
    node = server / "mac" / MAC
    node.mkdir(parents=True)
    (node / "meta-data").write_text("instance-id: n1-abc\nlocal-hostname: n1\n")
    (node / "user-data").write_text("#cloud-config\nsecret: 1\n")
    (node / "network-config").write_text("version: 2\n")
    return r


def _install(r: Path, fail: str = "", part_name: str = "vda3") -> tuple[int, list[str], list[str]]:
    assert BUSYBOX is not None
    env = {"PATH": os.environ["PATH"], "IMAGEGEN_INSTALL_ROOT": str(r), "FAKE_FAIL": fail, "PART_NAME": part_name}
    done = subprocess.run([str(BUSYBOX), "sh", str(INSTALLER)], capture_output=True, text=True, env=env, timeout=60)
    calls = (r / "calls.log").read_text().splitlines() if (r / "calls.log").exists() else []
    return done.returncode, (done.stdout + done.stderr).splitlines(), calls


def _sentinels(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("IMAGEGEN-INSTALL-")]


def _index(calls: list[str], prefix: str) -> int:
    return next(i for i, c in enumerate(calls) if c.startswith(prefix))


@needs_busybox
def test_installs_in_order_and_reboots_once(tmp_path: Path) -> None:
    r = _root(tmp_path)
    code, lines, calls = _install(r)
    assert _sentinels(lines) == [f"IMAGEGEN-INSTALL-OK node=n1 disk=/dev/vda mac={MAC}"], lines
    seed_dir = r / "run" / "imagegen-install" / "root" / "var" / "lib" / "cloud" / "seed" / "nocloud"
    order = ["ip link set ens3 up", "udhcpc -i ens3", f"wget -q -O- {URL}/mac/{MAC}/meta-data",
             "sync", "blockdev --rereadpt /dev/vda", "mount -t ext4 /dev/vda3", f"wget -q -O {seed_dir}/meta-data",
             f"wget -q -O {seed_dir}/user-data", "umount",
             f"wget -q -O /dev/null --post-data node=n1 {URL}/mac/{MAC}/installed", "reboot -f"]
    positions = [_index(calls, step) for step in order]
    assert positions == sorted(positions), calls
    # The three programs of the image pipeline run at once: all between the node's meta-data and the sync.
    for step in (f"wget -q -O- {URL}/boot/node.raw.gz", "gunzip -c", "dd of=/dev/vda bs=4M"):
        assert positions[2] < _index(calls, step) < positions[3]
    assert calls[-1] == "reboot -f"
    assert (r / "disk").read_bytes() == IMAGE
    seed = r / "run" / "imagegen-install" / "root" / "var" / "lib" / "cloud" / "seed" / "nocloud"
    assert (seed / "user-data").read_text() == "#cloud-config\nsecret: 1\n"
    assert stat.S_IMODE((seed / "user-data").stat().st_mode) == 0o600
    assert sorted(p.name for p in seed.iterdir()) == ["meta-data", "network-config", "user-data"]


@pytest.mark.parametrize(("fail", "reason", "not_reached"), [
    ("udhcpc", "dhcp", "wget"),
    (f"wget:mac/{MAC}/meta-data", "node-data", "dd"),
    ("wget:boot/node.raw.gz", "image-write", "blockdev"),
    ("gunzip", "image-write", "blockdev"),
    ("dd", "image-write", "blockdev"),
    ("blockdev", "partition-table", "mount"),
    ("mount", "mount-root", "umount"),
    (f"wget:mac/{MAC}/user-data", "seed", "umount"),
    ("umount", "umount", "wget -q -O /dev/null"),
    (f"wget:mac/{MAC}/installed", "report", "reboot"),
])
@needs_busybox
def test_each_failure_stops_with_one_sentinel_and_no_reboot(tmp_path: Path, fail: str, reason: str,
                                                            not_reached: str) -> None:
    code, lines, calls = _install(_root(tmp_path), fail=fail)
    sentinels = _sentinels(lines)
    assert len(sentinels) == 1 and sentinels[0].startswith(f"IMAGEGEN-INSTALL-FAILED reason={reason}"), lines
    assert code == 1 and not any(c.startswith(("reboot", not_reached)) for c in calls), calls


@needs_busybox
def test_corrupt_image_is_a_failure(tmp_path: Path) -> None:
    r = _root(tmp_path)
    data = gzip.compress(IMAGE)
    (r / "server" / "boot" / netboot.IMAGE_FILE).write_bytes(data[: len(data) // 2])  # truncated download
    code, lines, calls = _install(r)
    assert _sentinels(lines) == ["IMAGEGEN-INSTALL-FAILED reason=image-write detail=gunzip failed"]
    assert not any(c.startswith(("mount", "reboot")) for c in calls)


@needs_busybox
def test_no_url_on_the_command_line(tmp_path: Path) -> None:
    code, lines, calls = _install(_root(tmp_path, cmdline="console=ttyS0"))
    assert _sentinels(lines) == ["IMAGEGEN-INSTALL-FAILED reason=cmdline detail=no imagegen.url= on the kernel "
                                 "command line"]
    assert not any(c.startswith(("udhcpc", "dd", "reboot")) for c in calls)


@needs_busybox
def test_picks_the_nic_by_mac_and_names_nvme_partitions(tmp_path: Path) -> None:
    other = "52:54:00:00:00:99"
    r = _root(tmp_path, cmdline=f"imagegen.url={URL}/ imagegen.mac={MAC.upper().replace(':', '-')}",
              nics={"ens3": other, "ens4": MAC}, disks=("nvme0n1",))
    code, lines, calls = _install(r, part_name="nvme0n1p3")
    assert _sentinels(lines) == [f"IMAGEGEN-INSTALL-OK node=n1 disk=/dev/nvme0n1 mac={MAC}"], lines
    assert "udhcpc -i ens4 -n -q -t 10 -T 3 -s " + str(r / "imagegen" / "udhcpc.script") in calls
    assert any(c.startswith("mount -t ext4 /dev/nvme0n1p3 ") for c in calls)


@needs_busybox
def test_no_nic_with_that_mac(tmp_path: Path) -> None:
    r = _root(tmp_path, nics={"ens3": "52:54:00:00:00:99"})
    code, lines, calls = _install(r)
    assert _sentinels(lines) == [f"IMAGEGEN-INSTALL-FAILED reason=no-nic detail=no network interface with MAC "
                                 f"{MAC} after 30 s"]
    assert calls.count("sleep 1") == 30 and not any(c.startswith("reboot") for c in calls)


@needs_busybox
def test_empty_network_config_is_not_written(tmp_path: Path) -> None:
    r = _root(tmp_path)
    (r / "server" / "mac" / MAC / "network-config").write_text("")
    _code, lines, _calls = _install(r)
    seed = r / "run" / "imagegen-install" / "root" / "var" / "lib" / "cloud" / "seed" / "nocloud"
    assert _sentinels(lines)[0].startswith("IMAGEGEN-INSTALL-OK")
    assert sorted(p.name for p in seed.iterdir()) == ["meta-data", "user-data"]


@needs_busybox
def test_shell_syntax_for_busybox() -> None:
    assert BUSYBOX is not None
    for name in ("imagegen-install", "udhcpc.script"):
        done = subprocess.run([str(BUSYBOX), "sh", "-n", str(INSTALLER.parent / name)], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr


def test_installer_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("no shellcheck")
    for name in ("imagegen-install", "udhcpc.script"):
        done = subprocess.run(["shellcheck", "-s", "sh", "-e", "SC3043", str(INSTALLER.parent / name)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


# --- pure helpers ------------------------------------------------------------------------------------------------
SFDISK = json.dumps({"partitiontable": {"label": "gpt", "sectorsize": 512, "partitions": [
    {"node": "node.raw1", "start": 2048, "size": 2048, "type": "21686148-6449-6E6F-744E-656564454649", "name": "bios"},
    {"node": "node.raw2", "start": 4096, "size": 258048, "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "name": "esp"},
    {"node": "node.raw3", "start": 262144, "size": 16513024, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
     "name": "root"}]}})


def test_root_partition_from_sfdisk() -> None:
    assert netboot.root_partition(SFDISK) == netboot.RootPartition(3, 262144 * 512, 16513024 * 512)
    bad = json.loads(SFDISK)
    bad["partitiontable"]["partitions"] = bad["partitiontable"]["partitions"][:2]
    with pytest.raises(netboot.BuildError, match="root partition"):
        netboot.root_partition(json.dumps(bad))


def test_symlinks_from_debugfs() -> None:
    out = ('Inode: 21004   Type: symlink    Mode:  0777   Flags: 0x0\n'
           'Fast link dest: "boot/vmlinuz-6.1.0-50-cloud-amd64"\n')
    assert netboot.symlink_target(out) == "boot/vmlinuz-6.1.0-50-cloud-amd64"
    assert netboot.symlink_target("Inode: 16   Type: regular\n") is None
    assert netboot.resolve_in_root("/vmlinuz", "boot/vmlinuz-6") == "/boot/vmlinuz-6"
    assert netboot.resolve_in_root("/boot/initrd.img", "/boot/initrd.img-6") == "/boot/initrd.img-6"


def test_cpio_round_trip_and_busybox_reads_it(tmp_path: Path) -> None:
    entries = [netboot.CpioEntry("a", stat.S_IFDIR | 0o755), netboot.CpioEntry("a/b", stat.S_IFREG | 0o600, b"xyz"),
               netboot.CpioEntry("a/l", stat.S_IFLNK | 0o777, b"b")]
    data = netboot.cpio_newc(entries)
    assert len(data) % 512 == 0 and data == netboot.cpio_newc(entries)
    assert list(netboot.cpio_members(data)) == [(e.name, e.mode, e.data) for e in entries]
    if BUSYBOX is not None:
        listed = subprocess.run([str(BUSYBOX), "cpio", "-t"], input=data, capture_output=True, check=True).stdout
        assert listed.decode().split() == ["a", "a/b", "a/l"]


def test_initrd_segments_microcode_then_compressed() -> None:
    early = netboot.cpio_newc([netboot.CpioEntry("kernel/x86/microcode/GenuineIntel.bin", stat.S_IFREG | 0o644,
                                                 b"u")])
    main = netboot.cpio_newc([netboot.CpioEntry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n")])
    plain, rest = netboot.initrd_segments(early + gzip.compress(main))
    assert plain == [early] and netboot.compression_of(rest) == "gzip" and gzip.decompress(rest) == main
    assert netboot.initrd_segments(gzip.compress(main)) == ([], gzip.compress(main))


def test_modules_missing_and_their_dependencies() -> None:
    names = ["usr/lib/modules/6.1/kernel/drivers/virtio/virtio_pci.ko"]
    config = "CONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=m\n"
    assert netboot.missing_modules(names, config) == ["virtio_net"]
    dep = ("kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
           "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\nkernel/net/core/failover.ko:\n")
    assert netboot.module_closure(["virtio_net"], dep) == [
        "kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko"]
    with pytest.raises(netboot.BuildError, match="e1000"):
        netboot.module_closure(["e1000"], dep)


def test_installer_cpio_hooks_into_init_premount(tmp_path: Path) -> None:
    conf = netboot.install_conf(netboot.RootPartition(3, 0, 0), ["/usr/lib/modules/6.1/kernel/x.ko"])
    entries = netboot.installer_entries(b"BUSYBOX", INSTALLER.parent, conf, ["scripts/init-premount/existing"],
                                        {"usr/lib/modules/6.1/kernel/x.ko": b"KO"})
    by_name = {e.name: e for e in entries}
    assert by_name[netboot.HOOK].data == INSTALLER.read_bytes() and by_name[netboot.HOOK].mode & 0o111
    order = by_name["scripts/init-premount/ORDER"].data.decode().splitlines()
    assert order[0] == '/scripts/init-premount/existing "$@"' and order[2] == f'/{netboot.HOOK} "$@"'
    assert b"ROOT_PARTITION=3\n" in by_name["imagegen/install.conf"].data
    assert "usr/lib/modules/6.1/kernel" in by_name and by_name["usr/lib/modules/6.1/kernel/x.ko"].data == b"KO"
    names = [e.name for e in entries]
    assert all(names.index("/".join(n.split("/")[:-1])) < names.index(n) for n in names if "/" in n)


def test_pxe_test_help(capsys: pytest.CaptureFixture[str]) -> None:
    """In-process, so CI (no libvirt-python: the [vm] extra) runs it too, with test_vm_session's stand-in module."""
    import importlib

    importlib.import_module("tests.test_vm_session")  # first: vm-tests on sys.path, libvirt stubbed where missing
    pxe_test = importlib.import_module("pxe_test")

    with pytest.raises(SystemExit) as done:
        pxe_test.parse_args(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "make vm-pxe" in out and "--node" in out


def test_pxe_lab_network_reservations_in_dnsmasq_options() -> None:
    sys.path[:0] = [str(ROOT / "vm-tests")]
    try:
        from harness.xml import HostEntry, NetworkSpec, network_xml
    finally:
        del sys.path[0]
    spec = NetworkSpec("n", "igpx1", "10.81.0.0/24", "10.81.0.1", (HostEntry("52:54:00:81:00:02", "10.81.0.2", "a"),),
                       bootp_file="http://10.81.0.1:8089/ipxe/boot", dnsmasq_reservations=True)
    xml = network_xml(spec)
    assert "<dnsmasq:option value=\"dhcp-host=52:54:00:81:00:02,10.81.0.2,a\"/>" in xml and "<host " not in xml
    assert "<bootp file=\"http://10.81.0.1:8089/ipxe/boot\"/>" in xml
    plain = network_xml(NetworkSpec("n", "igpx1", "10.81.0.0/24", "10.81.0.1", spec.hosts))
    assert "dnsmasq" not in plain and "bootp" not in plain and "<host mac=" in plain
