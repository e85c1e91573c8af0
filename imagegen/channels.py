"""The same node data over the other channels operators provision with: VMware guestinfo, NoCloud over HTTP
(kernel command line for iPXE/GRUB, SMBIOS serial), each shaped for what cloud-init's own code reads.

Pure functions over a node's rendered files (user-data, meta-data, network-config); no I/O.

Choices, read in cloud-init's sources (22.4 as in Debian 12 and the node image, 25.1 as in Debian 13/Ubuntu):
- `ds=nocloud-net;s=URL/` on every version. `ds=nocloud;s=http://` only seeds from 24.1 on (22.4's local NoCloud
  source takes `/` and `file://` seeds only); `nocloud-net` is still parsed by 25.1's `load_cmdline_data`.
- network-config is fetched over HTTP only from 24.3, so the kernel command line also carries it as
  `network-config=` (gzip + base64, read by `cloudinit.net.cmdline.read_kernel_cmdline_config` on every version,
  and that source wins over the datasource's). An SMBIOS serial carries only `ds=`; without a kernel argument a
  22.4 node gets its address from DHCP (give it a reservation with the plan's address; `imagegen pxe` will).
- VMware's datasource reads the network only from `network`/`network.encoding` inside the metadata, so the
  metadata carries it. Every value is gzip+base64 (`.encoding` keys), gzip with mtime 0 so output is reproducible.
"""

from __future__ import annotations

import base64
import gzip

import yaml

# Linux x86's COMMAND_LINE_SIZE; iPXE and GRUB pass the line on unchanged.
KERNEL_CMDLINE_LIMIT = 2048
# The VMX answers a guest's RPC with at most about 1 MB (VMware Guest SDK, "In-Guest Communication Limits");
# cloud-init reads each guestinfo key with one `vmware-rpctool info-get`.
GUESTINFO_VALUE_LIMIT = 1_000_000
GUESTINFO_ENCODING = "gzip+base64"


class ChannelError(ValueError):
    """Node data that does not fit a channel: names the node, the size, the limit and the way out."""


def gzip_base64(data: bytes) -> str:
    # zlib's default level: level 9 took twice the time for 1-2 % less on user-data (keys do not compress).
    return base64.b64encode(gzip.compress(data, compresslevel=6, mtime=0)).decode()


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def guestinfo(node: str, user_data: bytes, meta_data: bytes | dict[str, str], network_config: bytes
              ) -> dict[str, str]:
    """The `guestinfo.*` keys for one node, network config inside the metadata (`meta_data` as the file's bytes
    or, from the renderer, as the mapping it was written from)."""
    meta = dict(meta_data) if isinstance(meta_data, dict) else (yaml.load(meta_data, Loader=_Loader) or {})
    meta["network"] = gzip_base64(network_config)
    meta["network.encoding"] = GUESTINFO_ENCODING
    meta_text = yaml.dump(meta, Dumper=_Dumper, sort_keys=True, default_flow_style=False).encode()
    keys = {
        "guestinfo.metadata": gzip_base64(meta_text),
        "guestinfo.metadata.encoding": GUESTINFO_ENCODING,
        "guestinfo.userdata": gzip_base64(user_data),
        "guestinfo.userdata.encoding": GUESTINFO_ENCODING,
    }
    for key, value in keys.items():
        if len(value) > GUESTINFO_VALUE_LIMIT:
            raise ChannelError(f"node {node}: {key} is {len(value)} bytes encoded, over the guestinfo limit of "
                               f"{GUESTINFO_VALUE_LIMIT}; use the seed ISO for this node")
    return keys


def vmx_fragment(keys: dict[str, str]) -> str:
    """Lines for a .vmx file (values are base64 and the fixed encoding name: nothing to escape)."""
    return "".join(f'{key} = "{value}"\n' for key, value in keys.items())


def govc_command(vm: str, keys: dict[str, str]) -> str:
    """One `govc vm.change` line setting every key (values hold no shell syntax: base64 and the encoding)."""
    return "govc vm.change -vm " + vm + "".join(f" -e {key}={value}" for key, value in keys.items()) + "\n"


def nocloud_net_seed(base_url: str) -> str:
    """The `ds=` token for a NoCloud seed over HTTP; `base_url` ends with '/'."""
    if not base_url.endswith("/"):
        raise ValueError(f"seed URL {base_url!r} must end with '/'")
    return f"ds=nocloud-net;s={base_url}"


def kernel_cmdline(node: str, base_url: str, network_config: bytes) -> str:
    """Kernel arguments that seed a node over HTTP with its static network on any cloud-init version."""
    line = f"{nocloud_net_seed(base_url)} network-config={gzip_base64(network_config)}"
    if len(line) > KERNEL_CMDLINE_LIMIT:
        raise ChannelError(f"node {node}: kernel arguments are {len(line)} bytes, over Linux's "
                           f"{KERNEL_CMDLINE_LIMIT}; shorten the seed URL")
    return line


def grub_escape(cmdline: str) -> str:
    """GRUB's `linux` line treats ';' as a command separator: escape it."""
    return cmdline.replace("\\", "\\\\").replace(";", "\\;")


def smbios_serial(base_url: str) -> str:
    """The SMBIOS system serial (libvirt `<sysinfo type='smbios'>`, QEMU `-smbios type=1,serial=...`)."""
    return nocloud_net_seed(base_url)
