"""Other channels, checked with cloud-init's own datasource code from Debian bookworm (22.4) and trixie (25.1):
VMware guestinfo through a stand-in for `vmware-rpctool` (QEMU cannot emulate VMware's guest RPC; the stand-in
answers `info-get` from the keys imagegen wrote, everything after it is cloud-init's), and NoCloud over HTTP
through the kernel command line and SMBIOS serial parsers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imagegen import channels

from .conftest import Rendered, cloud_init_root

SUITES = ("bookworm", "trixie")

_VMWARE_PROBE = r"""
import json, sys, tempfile
from unittest import mock
from cloudinit import dmi, helpers
from cloudinit.sources import DataSourceVMware as mod

tmp = tempfile.mkdtemp()
paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
# The platform check reads /sys/class/dmi; on VMware it says "VMware ...". Everything else is cloud-init's code.
with mock.patch.object(dmi, "read_dmi_data", return_value="VMware7,1"):
    ds = mod.DataSourceVMware(sys_cfg={}, distro=None, paths=paths)
    ok = ds._get_data()
ud = ds.userdata_raw
print(json.dumps({"ok": ok, "instance_id": ds.get_instance_id(),
                  "user_data": ud.decode() if isinstance(ud, bytes) else ud,
                  "network": ds.network_config, "method": ds.data_access_method}))
"""

_CMDLINE_PROBE = r"""
import json, sys
from cloudinit.net import cmdline
from cloudinit.sources import DataSourceNoCloud as nocloud

line = sys.argv[1]
fill = {}
found = nocloud.load_cmdline_data(fill, line)
print(json.dumps({"found": found, "fill": fill, "network": cmdline.read_kernel_cmdline_config(cmdline=line)}))
"""


def _cloud_init(suite: str, code: str, *args: str, path_prefix: str = "") -> dict:
    root = cloud_init_root(suite)
    if not (root / "cloudinit").is_dir():
        pytest.fail(f"cloud-init ({suite}) is not unpacked under {root}: run `make deps`")
    env = {**os.environ, "PYTHONPATH": str(root)}
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def _node_files(r: Rendered, name: str) -> tuple[bytes, bytes, bytes]:
    a = r.artifacts
    return (a[f"nodes/{name}/user-data"].data, a[f"nodes/{name}/meta-data"].data,
            a[f"nodes/{name}/network-config"].data)


def _stand_in_rpctool(tmp_path: Path, keys: dict[str, str]) -> Path:
    """`vmware-rpctool 'info-get guestinfo.KEY'` answering from `keys`, failing for unknown keys like the real one."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    store = tmp_path / "guestinfo.json"
    store.write_text(json.dumps(keys))
    tool = bindir / "vmware-rpctool"
    tool.write_text(f"""#!{sys.executable}
import json, sys
keys = json.load(open({str(store)!r}))
verb, _, key = sys.argv[1].partition(" ")
if verb != "info-get" or key not in keys:
    sys.stderr.write("No value found\\n")
    sys.exit(1)
print(keys[key])
""")
    tool.chmod(0o755)
    return bindir


@pytest.mark.parametrize("suite", SUITES)
def test_guestinfo_through_cloud_init_vmware_datasource(rendered: dict[str, Rendered], suite: str,
                                                        tmp_path: Path) -> None:
    r = rendered["ha"]
    name = r.plan.kubernetes_nodes[-1].name
    user_data, meta_data, network_config = _node_files(r, name)
    keys = channels.guestinfo(name, user_data, meta_data, network_config)
    got = _cloud_init(suite, _VMWARE_PROBE, path_prefix=str(_stand_in_rpctool(tmp_path, keys)))
    assert got["ok"] and got["method"] == "guestinfo"
    assert got["user_data"].encode() == user_data  # byte for byte
    assert got["instance_id"] == yaml.safe_load(meta_data)["instance-id"]
    assert got["network"] == yaml.safe_load(network_config)  # the plan's static network, not the fallback


def test_guestinfo_files_are_reproducible_and_quoted(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    name = r.plan.control_planes[0].name
    a = channels.guestinfo(name, *_node_files(r, name))
    assert a == channels.guestinfo(name, *_node_files(r, name))
    vmx = channels.vmx_fragment(a)
    assert vmx.count("\n") == 4 and 'guestinfo.userdata.encoding = "gzip+base64"' in vmx
    assert channels.govc_command(name, a).startswith(f"govc vm.change -vm {name} -e guestinfo.metadata=")


def test_guestinfo_over_the_limit_names_node_and_way_out() -> None:
    big = os.urandom(900_000)
    with pytest.raises(channels.ChannelError, match=r"node cp-9: guestinfo.userdata is \d+ bytes .* seed ISO"):
        channels.guestinfo("cp-9", big, b"instance-id: x\n", b"version: 2\n")


@pytest.mark.parametrize("suite", SUITES)
def test_kernel_cmdline_through_cloud_init(rendered: dict[str, Rendered], suite: str) -> None:
    r = rendered["ha"]
    name = r.plan.nodes[0].name
    _, _, network_config = _node_files(r, name)
    url = f"http://192.168.10.5:8080/n/{name}/"
    line = channels.kernel_cmdline(name, url, network_config)
    got = _cloud_init(suite, _CMDLINE_PROBE, f"console=ttyS0 {line} quiet")
    assert got["found"] and got["fill"] == {"seedfrom": url, "dsmode": "net"}
    assert got["network"] == yaml.safe_load(network_config)


@pytest.mark.parametrize("suite", SUITES)
def test_smbios_serial_through_cloud_init(suite: str) -> None:
    url = "http://192.168.10.5:8080/n/wk-1/"
    got = _cloud_init(suite, _CMDLINE_PROBE, channels.smbios_serial(url))
    assert got["found"] and got["fill"]["seedfrom"] == url and got["network"] is None


def test_kernel_cmdline_limit() -> None:
    with pytest.raises(channels.ChannelError, match="over Linux's 2048"):
        channels.kernel_cmdline("wk-1", "http://x/" + "a" * 2100 + "/", b"version: 2\n")


def test_grub_escape() -> None:
    assert channels.grub_escape("ds=nocloud-net;s=http://x/") == "ds=nocloud-net\\;s=http://x/"
