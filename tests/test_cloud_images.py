"""Cloud images (issue 12): gzip user-data and the platforms' size limits, the OpenStack config drive and Proxmox's
cicustom lines. The gzip user-data and the config drive are fed to cloud-init's own code from Debian bookworm (22.4)
and trixie (25.1): `cloudinit.user_data.UserDataProcessor` (which decompresses gzip through util.decomp_gzip),
`DataSourceConfigDrive.read_config_drive` (ConfigDriveReader.read_v2) and `openstack.convert_net_json`; the ISO is
read back with pycdlib and with isoinfo."""

from __future__ import annotations

import copy
import gzip
import io
import json
import subprocess
from pathlib import Path

import pycdlib
import pytest

from imagegen import configdrive, proxmox, userdata
from imagegen.cli import main
from imagegen.errors import PlanError
from imagegen.plan import parse_plan
from imagegen.render import instance_id, render_cluster
from imagegen.state import ensure_state

from .conftest import Rendered, require_tool
from .test_channels import SUITES, _cloud_init

CONFIG_DRIVE_FILES = ("openstack/latest/meta_data.json", "openstack/latest/network_data.json",
                      "openstack/latest/user_data")

_GZIP_PROBE = r"""
import json, sys
from cloudinit import user_data
data = open(sys.argv[1], "rb").read()
msg = user_data.convert_string(data)
parts = [p for p in msg.walk() if not p.is_multipart()]
payload = parts[0].get_payload(decode=True)
print(json.dumps({"parts": len(parts), "payload": payload.decode()}))
"""

_CONFIG_DRIVE_PROBE = r"""
import json, sys
from cloudinit.sources import DataSourceConfigDrive as cd
from cloudinit.sources.helpers import openstack
results = cd.read_config_drive(sys.argv[1])
net = openstack.convert_net_json(results["networkdata"], known_macs={sys.argv[2]: "ens3"})
ud = results["userdata"]
print(json.dumps({"metadata": results["metadata"], "user_data": ud.decode() if isinstance(ud, bytes) else ud,
                  "version": results["version"], "network": net}))
"""


# -- gzip user-data and limits ------------------------------------------------------------------------------------

def test_gzip_user_data_is_reproducible(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        for node in r.plan.nodes:
            gz = r.artifacts[f"nodes/{node.name}/user-data.gz"]
            assert gz.mode == 0o600
            assert gz.data[4:8] == b"\0\0\0\0", "gzip mtime must be 0"
            assert gzip.decompress(gz.data) == r.artifacts[f"nodes/{node.name}/user-data"].data


@pytest.mark.parametrize("suite", SUITES)
def test_cloud_init_decompresses_gzip_user_data(rendered: dict[str, Rendered], suite: str, tmp_path: Path) -> None:
    r = rendered["ha"]
    path = tmp_path / "user-data.gz"
    path.write_bytes(r.artifacts["nodes/cp-1/user-data.gz"].data)
    got = _cloud_init(suite, _GZIP_PROBE, str(path))
    assert got["parts"] == 1
    assert got["payload"].encode() == r.artifacts["nodes/cp-1/user-data"].data


def test_platform_fit_counts_as_each_platform_does() -> None:
    ud, gz = b"x" * 20000, b"y" * 9000
    fit = userdata.fit(ud, gz)
    assert fit["ec2"] == {"limit": 16384, "raw": 20000, "gzip": 9000, "fits": "gzip"}
    assert fit["openstack"]["raw"] == 26668 and fit["openstack"]["gzip"] == 12000  # base64 text
    assert fit["openstack"]["fits"] == "raw"
    assert fit["gce"]["gzip"] == 12000 and fit["azure"]["gzip"] == 9000
    assert userdata.fit(b"x" * 70000, b"y" * 50000)["openstack"]["fits"] is None


def test_ha_roles_fit_nova_gzipped(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    for node in r.plan.nodes:
        fit = userdata.fit(r.artifacts[f"nodes/{node.name}/user-data"].data,
                           r.artifacts[f"nodes/{node.name}/user-data.gz"].data)
        assert fit["openstack"]["fits"] and fit["azure"]["fits"] and fit["gce"]["fits"], (node.name, fit)


def test_render_refuses_a_node_over_a_requested_platform_limit(tmp_path: Path, base_plan: dict,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    data = copy.deepcopy(base_plan)
    data["cluster"]["platform_limits"] = ["ec2"]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["render", str(plan_file), "--out", str(out), "--state", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert "node cp-1 (control-plane)" in err and "over its limit of 16384" in err and "seed this node" in err
    assert not out.exists()


def test_render_passes_platforms_every_node_fits(tmp_path: Path, base_plan: dict) -> None:
    data = copy.deepcopy(base_plan)
    data["cluster"]["platform_limits"] = ["openstack", "azure", "gce"]
    plan = parse_plan(data)
    render_cluster(plan, ensure_state(tmp_path / "state", plan))


def test_check_names_node_size_limit_and_way_out(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    node = r.plan.node("cp-1")
    with pytest.raises(PlanError) as info:
        userdata.check(("ec2",), node, b"x" * 40000, b"y" * 17000)
    text = info.value.render()
    assert "cp-1" in text and "40000" in text and "17000" in text and "16384" in text and "config drive" in text


# -- OpenStack config drive ---------------------------------------------------------------------------------------

def _drive(r: Rendered, node: str) -> bytes:
    return r.artifacts[f"seeds/{node}-configdrive.iso"].data


def _read_pycdlib(iso_bytes: bytes) -> tuple[str, dict[str, bytes]]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(iso_bytes))
    label = iso.pvd.volume_identifier.decode().strip()
    files = {}
    for name in CONFIG_DRIVE_FILES:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        files[name] = out.getvalue()
        joliet = io.BytesIO()
        iso.get_file_from_iso_fp(joliet, joliet_path=f"/{name}")
        assert joliet.getvalue() == files[name]
    iso.close()
    return label, files


def test_config_drive_layout_pycdlib(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    for node in r.plan.nodes:
        assert r.artifacts[f"seeds/{node.name}-configdrive.iso"].mode == 0o600
        label, files = _read_pycdlib(_drive(r, node.name))
        assert label == "config-2"
        assert files["openstack/latest/user_data"] == r.artifacts[f"nodes/{node.name}/user-data"].data
        meta = json.loads(files["openstack/latest/meta_data.json"])
        iid = instance_id(r.state.cluster_id or r.state.cluster_name, node)
        assert meta == {"uuid": iid, "hostname": node.name, "name": node.name}


def test_config_drive_isoinfo(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    require_tool("isoinfo")
    r = rendered["ha"]
    path = tmp_path / "cd.iso"
    path.write_bytes(_drive(r, "worker-1"))
    pvd = subprocess.run(["isoinfo", "-d", "-i", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: config-2" in pvd and "Rock Ridge" in pvd
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(path)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(listing) == ["/openstack", "/openstack/latest", *sorted(f"/{n}" for n in CONFIG_DRIVE_FILES)]
    got = subprocess.run(["isoinfo", "-R", "-x", "/openstack/latest/user_data", "-i", str(path)],
                         capture_output=True, check=True).stdout
    assert got == r.artifacts["nodes/worker-1/user-data"].data


def test_config_drive_is_byte_identical(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    node = r.plan.node("cp-1")
    iid = instance_id(r.state.cluster_id or r.state.cluster_name, node)
    again = configdrive.build_config_drive(r.plan, node, iid, r.artifacts["nodes/cp-1/user-data"].data)
    assert again == _drive(r, "cp-1")


@pytest.mark.parametrize("suite", SUITES)
def test_cloud_init_reads_the_config_drive(rendered: dict[str, Rendered], suite: str, tmp_path: Path) -> None:
    """Unpacked (as cloud-init mounts it) with pycdlib, then read by cloud-init's ConfigDrive code."""
    r = rendered["ha"]
    for name in ("cp-1", "worker-1", "lb-1"):
        node = r.plan.node(name)
        _, files = _read_pycdlib(_drive(r, name))
        root = tmp_path / suite / name
        for path, data in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        got = _cloud_init(suite, _CONFIG_DRIVE_PROBE, str(root), node.mac)
        assert got["version"] == 2
        assert got["user_data"].encode() == r.artifacts[f"nodes/{name}/user-data"].data
        assert got["metadata"]["instance-id"] == instance_id(r.state.cluster_id or r.state.cluster_name, node)
        assert got["metadata"]["local-hostname"] == name
        net = got["network"]
        phys = [c for c in net["config"] if c["type"] == "physical"]
        assert len(phys) == 1 and phys[0]["mac_address"] == node.mac
        assert phys[0]["name"] == r.plan.network.interface
        subnet = phys[0]["subnets"][0]
        assert subnet["type"] == "static" and subnet["address"] == str(node.ip)
        assert subnet["netmask"] == str(r.plan.network.cidr.netmask)
        assert subnet["routes"] == [{"network": "0.0.0.0", "netmask": "0.0.0.0",
                                     "gateway": str(r.plan.network.gateway)}]
        dns = [c for c in net["config"] if c["type"] == "nameserver"]
        assert [d["address"] for d in dns] == [str(a) for a in r.plan.network.dns]


# -- Proxmox ------------------------------------------------------------------------------------------------------

def test_proxmox_lines(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    node = r.plan.node("worker-1")
    text = r.artifacts["nodes/worker-1/proxmox.txt"].data.decode()
    assert r.artifacts["nodes/worker-1/proxmox.txt"].mode == 0o644
    commands = [line for line in text.splitlines() if not line.startswith("#")]
    assert commands == [
        f"qm set VMID --net0 virtio={node.mac},bridge=vmbr0",
        "qm set VMID --ide2 local:cloudinit",
        'qm set VMID --cicustom "user=local:snippets/prod-worker-1-user.yaml,'
        'network=local:snippets/prod-worker-1-network.yaml,meta=local:snippets/prod-worker-1-meta.yaml"',
    ]
    assert "nodes/worker-1/user-data -> /var/lib/vz/snippets/prod-worker-1-user.yaml" in text
    assert proxmox.snippet_name(r.plan, node, "meta") == "prod-worker-1-meta.yaml"


def test_configdrive_suffix_is_not_a_node_name(base_plan: dict) -> None:
    data = copy.deepcopy(base_plan)
    data["nodes"][5]["name"] = "worker-1-configdrive"
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    assert [p for p in info.value.problems if p.field == "nodes[5].name" and "-configdrive" in p.message]
