"""OVF 1.0 descriptor and manifest for the VMware template (pure text; convert.py packs the OVA).

Hardware matches what linux-image-amd64 drives: LSI Logic SCSI for the disk, VMXNET3 for the NIC, an IDE cdrom
for a NoCloud/ConfigDrive seed ISO. disk.EnableUUID lets in-guest tools (and vSphere CSI) see stable disk IDs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

VMDK_STREAM_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


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


def render_ovf(p: OvfParams) -> str:
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
{items}      <vmw:ExtraConfig ovf:required="false" vmw:key="disk.EnableUUID" vmw:value="TRUE"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def render_manifest(digests: Mapping[str, str]) -> str:
    """OVF manifest: one `SHA256(file)= hex` line per file, in the order given."""
    return "".join(f"SHA256({name})= {digest}\n" for name, digest in digests.items())
