"""OVF 1.0 descriptor and manifest for the VMware template (pure text; convert.py packs the OVA).

Hardware matches what linux-image-amd64 drives: LSI Logic SCSI for the disk, VMXNET3 for the NIC, an IDE cdrom
for a NoCloud/ConfigDrive seed ISO. disk.EnableUUID lets in-guest tools (and vSphere CSI) see stable disk IDs.

A node's descriptor (`node_ovf`) is the image's, named for the node, with the node's `guestinfo.*` keys as more
`vmw:ExtraConfig` entries: deploying it sets the keys cloud-init's VMware datasource reads, as guestinfo.vmx does.
(vApp properties would instead need cloud-init's OVF datasource, which reads another format.)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape, quoteattr

VMDK_STREAM_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
# The ExtraConfig every imagegen descriptor carries; a node's keys may not replace it.
IMAGE_EXTRA_CONFIG = {"disk.EnableUUID": "TRUE"}
_NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
       "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
       "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
       "vmw": "http://www.vmware.com/schema/ovf"}


class OvfError(ValueError):
    """A descriptor imagegen cannot derive a node's from: says what is wrong and what to do."""


@dataclass(frozen=True)
class OvfParams:
    name: str
    annotation: str
    vmdk_file: str
    vmdk_size: int  # bytes of the .vmdk file
    capacity: int  # virtual disk size, bytes
    populated: int  # bytes actually used inside the disk
    cpus: int = 2
    memory_mib: int = 2048
    hardware_version: str = "vmx-14"
    os_type: str = "debian11_64Guest"  # vSphere 7 knows this id; Debian 12 guests run as it


def _item(fields: Mapping[str, str], required: bool = True) -> str:
    # OVF 1.0's CIM schema is an ordered sequence: rasd elements must appear alphabetically.
    body = "".join(f"        <rasd:{k}>{escape(v)}</rasd:{k}>\n" for k, v in sorted(fields.items()))
    attr = "" if required else ' ovf:required="false"'
    return f"      <Item{attr}>\n{body}      </Item>\n"


def _extra_config(keys: Mapping[str, str]) -> str:
    return "".join(f'      <vmw:ExtraConfig ovf:required="false" vmw:key={quoteattr(k)} vmw:value={quoteattr(v)}/>\n'
                   for k, v in keys.items())


def render_ovf(p: OvfParams, extra_config: Mapping[str, str] | None = None) -> str:
    """The descriptor; `extra_config` adds `vmw:ExtraConfig` entries after the image's own (OVF 1.0 wants every
    extension element of VirtualHardwareSection after its Items)."""
    extra = dict(extra_config or {})
    clash = sorted(set(extra) & set(IMAGE_EXTRA_CONFIG))
    if clash:
        raise OvfError(f"ExtraConfig {', '.join(clash)} is the image's own; a node may not set it")
    items = "".join([
        _item({"AllocationUnits": "hertz * 10^6", "Description": "Number of Virtual CPUs",
               "ElementName": f"{p.cpus} virtual CPU(s)", "InstanceID": "1", "ResourceType": "3",
               "VirtualQuantity": str(p.cpus)}),
        _item({"AllocationUnits": "byte * 2^20", "Description": "Memory Size",
               "ElementName": f"{p.memory_mib}MB of memory", "InstanceID": "2", "ResourceType": "4",
               "VirtualQuantity": str(p.memory_mib)}),
        _item({"Address": "0", "Description": "SCSI Controller", "ElementName": "SCSI Controller 0",
               "InstanceID": "3", "ResourceSubType": "lsilogic", "ResourceType": "6"}),
        _item({"Address": "0", "Description": "IDE Controller", "ElementName": "IDE 0",
               "InstanceID": "4", "ResourceType": "5"}),
        _item({"AddressOnParent": "0", "ElementName": "Hard Disk 1", "HostResource": "ovf:/disk/vmdisk1",
               "InstanceID": "5", "Parent": "3", "ResourceType": "17"}),
        _item({"AddressOnParent": "0", "AutomaticAllocation": "false", "ElementName": "CD/DVD drive 1",
               "InstanceID": "6", "Parent": "4", "ResourceType": "15"}, required=False),
        _item({"AddressOnParent": "7", "AutomaticAllocation": "true", "Connection": "VM Network",
               "Description": "VmxNet3 ethernet adapter on \"VM Network\"", "ElementName": "Network adapter 1",
               "InstanceID": "7", "ResourceSubType": "VmxNet3", "ResourceType": "10"}),
    ])
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" \
xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" \
xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" \
xmlns:vmw="http://www.vmware.com/schema/ovf" \
xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href={quoteattr(p.vmdk_file)} ovf:id="file1" ovf:size="{p.vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{p.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" \
ovf:fileRef="file1" ovf:format="{VMDK_STREAM_FORMAT}" ovf:populatedSize="{p.populated}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id={quoteattr(p.name)}>
    <Info>A virtual machine</Info>
    <Name>{escape(p.name)}</Name>
    <AnnotationSection>
      <Info>A human-readable annotation</Info>
      <Annotation>{escape(p.annotation)}</Annotation>
    </AnnotationSection>
    <OperatingSystemSection ovf:id="96" vmw:osType="{p.os_type}">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{escape(p.name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>{p.hardware_version}</vssd:VirtualSystemType>
      </System>
{items}{_extra_config({**IMAGE_EXTRA_CONFIG, **extra})}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def render_manifest(digests: Mapping[str, str]) -> str:
    """OVF manifest: one `SHA256(file)= hex` line per file, in the order given."""
    return "".join(f"SHA256({name})= {digest}\n" for name, digest in digests.items())


def _find(root: ET.Element, path: str) -> ET.Element:
    found = root.find(path, _NS)
    if found is None:
        raise OvfError(f"the descriptor has no {path}")
    return found


def _attr(element: ET.Element, name: str) -> str:
    prefix, _, local = name.partition(":")
    value = element.get(f"{{{_NS[prefix]}}}{local}")
    if value is None:
        raise OvfError(f"the descriptor's {element.tag.rpartition('}')[2]} has no {name}")
    return value


def _quantity(root: ET.Element, resource_type: str) -> int:
    for item in root.iterfind("ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item", _NS):
        if item.findtext("rasd:ResourceType", namespaces=_NS) == resource_type:
            return int(item.findtext("rasd:VirtualQuantity", default="", namespaces=_NS))
    raise OvfError(f"the descriptor has no Item of ResourceType {resource_type}")


def parse_ovf(text: str) -> OvfParams:
    """The OvfParams `render_ovf` made `text` from; OvfError when it is not a descriptor render_ovf writes."""
    try:
        root = ET.fromstring(text)
        vs = _find(root, "ovf:VirtualSystem")
        params = OvfParams(
            name=_attr(vs, "ovf:id"),
            annotation=_find(vs, "ovf:AnnotationSection/ovf:Annotation").text or "",
            vmdk_file=_attr(_find(root, "ovf:References/ovf:File"), "ovf:href"),
            vmdk_size=int(_attr(_find(root, "ovf:References/ovf:File"), "ovf:size")),
            capacity=int(_attr(_find(root, "ovf:DiskSection/ovf:Disk"), "ovf:capacity")),
            populated=int(_attr(_find(root, "ovf:DiskSection/ovf:Disk"), "ovf:populatedSize")),
            cpus=_quantity(root, "3"),
            memory_mib=_quantity(root, "4"),
            hardware_version=_find(vs, "ovf:VirtualHardwareSection/ovf:System/vssd:VirtualSystemType").text or "",
            os_type=_attr(_find(vs, "ovf:OperatingSystemSection"), "vmw:osType"))
    except (ET.ParseError, ValueError) as exc:
        raise OvfError(f"not an imagegen image descriptor ({exc})") from None
    if render_ovf(params) != text:
        # Rebuilding from the parsed fields would silently drop whatever this imagegen does not know about.
        raise OvfError("the descriptor differs from what this imagegen writes for the same image (another tool's "
                       "OVA, or another imagegen version's); build the OVA with this `imagegen image build`")
    return params


def node_ovf(image_ovf: str, node: str, guestinfo: Mapping[str, str]) -> str:
    """The image's descriptor for one node: its VirtualSystem named `node`, the node's guestinfo keys (as
    `channels.guestinfo` returns them) as ExtraConfig; same disk, same hardware."""
    bad = sorted(k for k in guestinfo if not k.startswith("guestinfo."))
    if bad:
        raise OvfError(f"node {node}: {', '.join(bad)} are not guestinfo keys")
    return render_ovf(replace(parse_ovf(image_ovf), name=node), guestinfo)
