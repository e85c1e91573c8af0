"""`imagegen vmware ovf`: one OVF per node from the image's OVA, carrying the node's guestinfo as ExtraConfig.
The keys are the render's guestinfo.vmx byte for byte, cloud-init's own VMware datasource (22.4 and 25.1, through
the stand-in for vmware-rpctool of test_channels) reads the user-data and network back from the values taken out
of the descriptor, the manifests hash what they name, and the descriptor keeps OVF 1.0's element order."""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from imagegen import channels
from imagegen.cli import main
from imagegen.image.convert import pack_ova
from imagegen.image.ovf import OvfError, OvfParams, node_ovf, parse_ovf, render_ovf
from imagegen.serve import load_output

from .conftest import ROOT
from .test_channels import _VMWARE_PROBE, SUITES, _cloud_init, _stand_in_rpctool

NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1", "vmw": "http://www.vmware.com/schema/ovf",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
      "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"}
OVF, VMW = f"{{{NS['ovf']}}}", f"{{{NS['vmw']}}}"
IMAGE = "debian-node"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A render of examples/ha.yaml, an OVA packed as `image build` packs it (the disk is stand-in bytes: only
    its name, size and digest matter here) and `imagegen vmware ovf` over both."""
    root = tmp_path_factory.mktemp("vmware-ovf")
    out, dest, vmdk = root / "out", root / "deploy", root / f"{IMAGE}.vmdk"
    assert main(["render", str(ROOT / "examples" / "ha.yaml"), "--out", str(out), "--state", str(root / "st"),
                 "--quiet"]) == 0
    vmdk.write_bytes(b"KDMV" + os.urandom(70_000))
    pack_ova(vmdk, root / f"{IMAGE}.ova", name=IMAGE, annotation="node image <test> & more", capacity=8 << 30,
             populated=1 << 30)
    assert main(["vmware", "ovf", str(out), "--ova", str(root / f"{IMAGE}.ova"), "--dest", str(dest)]) == 0
    return out, root / f"{IMAGE}.ova", dest


def _node_keys(out: Path, name: str) -> dict[str, str]:
    node = out / "nodes" / name
    meta = yaml.safe_load((node / "meta-data").read_bytes())
    return channels.guestinfo(name, (node / "user-data").read_bytes(), meta, (node / "network-config").read_bytes())


def _extra_config(ovf: Path) -> dict[str, str]:
    hw = ET.parse(ovf).getroot().find("ovf:VirtualSystem/ovf:VirtualHardwareSection", NS)
    assert hw is not None
    return {e.get(f"{VMW}key", ""): e.get(f"{VMW}value", "") for e in hw.iterfind("vmw:ExtraConfig", NS)}


def _guestinfo(ovf: Path) -> dict[str, str]:
    return {k: v for k, v in _extra_config(ovf).items() if k.startswith("guestinfo.")}


def test_every_node_gets_its_guestinfo_as_in_guestinfo_vmx(deployed: tuple[Path, Path, Path]) -> None:
    out, _, dest = deployed
    names = sorted(load_output(out).nodes)
    assert sorted(p.stem for p in dest.glob("*.ovf")) == names
    for name in names:
        keys = _guestinfo(dest / f"{name}.ovf")
        assert keys == _node_keys(out, name)
        # Same keys, same order, same bytes as the render's .vmx lines.
        assert channels.vmx_fragment(keys).encode() == (out / "nodes" / name / "guestinfo.vmx").read_bytes()
        assert _extra_config(dest / f"{name}.ovf")["disk.EnableUUID"] == "TRUE"
        assert stat.S_IMODE((dest / f"{name}.ovf").stat().st_mode) == 0o600


@pytest.mark.parametrize("suite", SUITES)
def test_values_from_the_ovf_through_cloud_init_vmware_datasource(deployed: tuple[Path, Path, Path], suite: str,
                                                                  tmp_path: Path) -> None:
    out, _, dest = deployed
    name = sorted(load_output(out).nodes)[0]
    node = out / "nodes" / name
    got = _cloud_init(suite, _VMWARE_PROBE,
                      path_prefix=str(_stand_in_rpctool(tmp_path, _guestinfo(dest / f"{name}.ovf"))))
    assert got["ok"] and got["method"] == "guestinfo"
    assert got["user_data"].encode() == (node / "user-data").read_bytes()  # byte for byte
    assert got["instance_id"] == yaml.safe_load((node / "meta-data").read_bytes())["instance-id"]
    assert got["network"] == yaml.safe_load((node / "network-config").read_bytes())


def test_descriptor_is_the_images_named_for_the_node_in_ovf_order(deployed: tuple[Path, Path, Path]) -> None:
    out, ova, dest = deployed
    with tarfile.open(ova) as tar:
        f = tar.extractfile(f"{IMAGE}.ovf")
        assert f is not None
        image = parse_ovf(f.read().decode())
    for name in load_output(out).nodes:
        text = (dest / f"{name}.ovf").read_text()
        root = ET.fromstring(text)  # well-formed
        # Everything but the name is the image's; the ExtraConfig adds only the node's keys.
        assert text == render_ovf(OvfParams(**{**image.__dict__, "name": name}),
                                  _guestinfo(dest / f"{name}.ovf"))
        vs = root.find("ovf:VirtualSystem", NS)
        assert vs is not None and vs.get(f"{OVF}id") == name and vs.findtext("ovf:Name", namespaces=NS) == name
        assert vs.findtext("ovf:VirtualHardwareSection/ovf:System/vssd:VirtualSystemIdentifier",
                           namespaces=NS) == name
        file_ref = root.find("ovf:References/ovf:File", NS)
        assert file_ref is not None and file_ref.get(f"{OVF}href") == f"{IMAGE}.vmdk"
        # OVF 1.0 (DSP8023): VirtualHardwareSection is Info, System, Item*, then any extension elements.
        hw = vs.find("ovf:VirtualHardwareSection", NS)
        assert hw is not None
        tags = [child.tag for child in hw]
        kinds = ["Info" if t == f"{OVF}Info" else "System" if t == f"{OVF}System" else "Item" if t == f"{OVF}Item"
                 else "ExtraConfig" if t == f"{VMW}ExtraConfig" else t for t in tags]
        first_extra = kinds.index("ExtraConfig")
        assert kinds[:2] == ["Info", "System"] and set(kinds[2:first_extra]) == {"Item"}
        assert set(kinds[first_extra:]) == {"ExtraConfig"}
        # Envelope order: References, DiskSection, NetworkSection, VirtualSystem.
        assert [c.tag.rpartition("}")[2] for c in root] == ["References", "DiskSection", "NetworkSection",
                                                            "VirtualSystem"]


def test_manifests_hash_the_descriptor_and_the_disk(deployed: tuple[Path, Path, Path]) -> None:
    out, ova, dest = deployed
    with tarfile.open(ova) as tar:
        f = tar.extractfile(f"{IMAGE}.vmdk")
        assert f is not None
        assert (dest / f"{IMAGE}.vmdk").read_bytes() == f.read()
    disk = hashlib.sha256((dest / f"{IMAGE}.vmdk").read_bytes()).hexdigest()
    for name in load_output(out).nodes:
        descriptor = hashlib.sha256((dest / f"{name}.ovf").read_bytes()).hexdigest()
        assert (dest / f"{name}.mf").read_text() == (f"SHA256({name}.ovf)= {descriptor}\n"
                                                      f"SHA256({IMAGE}.vmdk)= {disk}\n")


def test_one_node_again_reuses_the_disk(deployed: tuple[Path, Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out, ova, dest = deployed
    name = sorted(load_output(out).nodes)[-1]
    disk_inode = (dest / f"{IMAGE}.vmdk").stat().st_ino
    before = (dest / f"{name}.ovf").read_bytes()
    assert main(["vmware", "ovf", str(out), "--ova", str(ova), "--dest", str(dest), "--node", name]) == 0
    assert capsys.readouterr().out.split() == [str(dest / f"{name}.ovf")]
    assert (dest / f"{IMAGE}.vmdk").stat().st_ino == disk_inode and (dest / f"{name}.ovf").read_bytes() == before


def test_refusals_name_the_problem(deployed: tuple[Path, Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, ova, _ = deployed
    dest = tmp_path / "d"
    assert main(["vmware", "ovf", str(out), "--ova", str(ova), "--dest", str(dest), "--node", "nope"]) == 2
    assert "--node nope: not in" in capsys.readouterr().err and not dest.exists()
    foreign = tmp_path / "foreign.ova"
    with tarfile.open(foreign, "w") as tar:
        tar.add(out / "manifest.json", arcname="x.ovf")
    assert main(["vmware", "ovf", str(out), "--ova", str(foreign), "--dest", str(dest)]) == 2
    assert "not an imagegen image descriptor" in capsys.readouterr().err and not dest.exists()


def test_edited_guestinfo_vmx_is_refused(deployed: tuple[Path, Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out, ova, _ = deployed
    name = sorted(load_output(out).nodes)[0]
    vmx = out / "nodes" / name / "guestinfo.vmx"
    original = vmx.read_bytes()
    try:
        vmx.write_bytes(original.replace(b"gzip+base64", b"base64", 1))
        assert main(["vmware", "ovf", str(out), "--ova", str(ova), "--dest", str(tmp_path / "d")]) == 2
        assert f"{name}/guestinfo.vmx differs" in capsys.readouterr().err
    finally:
        vmx.write_bytes(original)


def test_guestinfo_over_the_limit_is_refused_by_channels(deployed: tuple[Path, Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out, ova, _ = deployed
    name = sorted(load_output(out).nodes)[0]
    user_data = out / "nodes" / name / "user-data"
    original = user_data.read_bytes()
    try:
        user_data.write_bytes(os.urandom(900_000))
        assert main(["vmware", "ovf", str(out), "--ova", str(ova), "--dest", str(tmp_path / "d"),
                     "--node", name]) == 2
        assert f"node {name}: guestinfo.userdata is" in capsys.readouterr().err
    finally:
        user_data.write_bytes(original)


def test_node_ovf_escapes_and_keeps_the_images_keys() -> None:
    image = render_ovf(OvfParams(name="img", annotation="a", vmdk_file="img.vmdk", vmdk_size=1, capacity=2,
                                 populated=1))
    text = node_ovf(image, "wk-1", {"guestinfo.odd": "a\"b'<&>\n"})
    assert _extra_of(text)["guestinfo.odd"] == "a\"b'<&>\n"
    with pytest.raises(OvfError, match="not guestinfo keys"):
        node_ovf(image, "wk-1", {"disk.EnableUUID": "FALSE"})
    with pytest.raises(OvfError, match="differs from what this imagegen writes"):
        node_ovf(image.replace("<Info>A virtual machine</Info>", "<Info>Changed</Info>"), "wk-1", {})


def _extra_of(text: str) -> dict[str, str]:
    hw = ET.fromstring(text).find("ovf:VirtualSystem/ovf:VirtualHardwareSection", NS)
    assert hw is not None
    return {e.get(f"{VMW}key", ""): e.get(f"{VMW}value", "") for e in hw.iterfind("vmw:ExtraConfig", NS)}
