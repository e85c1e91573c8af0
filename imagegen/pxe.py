"""`imagegen pxe OUT --url URL --dest DIR`: what a boot server needs for a rendered cluster.

- `dnsmasq.conf`: DHCP reservations by MAC with the plan's addresses (the address `imagegen serve` hands a node's
  data to), and iPXE chain-loading: legacy BIOS PXE ROMs get `undionly.kpxe`, UEFI ones `ipxe.efi` (from Debian's
  `ipxe` package, served by dnsmasq's TFTP), and iPXE itself (DHCP user class "iPXE") gets the per-MAC script
  URL of `imagegen serve`.
- `dnsmasq-proxy.conf`: the same for a network whose own DHCP server hands out addresses (proxy DHCP: dnsmasq
  only adds the boot options). The planned addresses must then be reserved on that DHCP server.
- `ipxe/<mac>.ipxe`: the script `imagegen serve` answers at /ipxe/<mac>, for servers that serve static files
  (with `--boot-dir` holding `imagegen image netboot`'s installer: the installer's script; a static file cannot
  turn into "boot from the disk" after the install as `imagegen serve`'s does, so use that, or disk-first boot order).
- `grub/<name>.cfg`: a GRUB netboot entry (`;` escaped as GRUB needs).
- `cmdline/<name>`: the kernel arguments alone, and `smbios/<name>`: the SMBIOS serial string.

Pure: `pxe_files` returns {relative path: text}; the CLI writes them.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from urllib.parse import urlsplit

from imagegen import channels
from imagegen.errors import UsageError
from imagegen.serve import INSTALLER, ServedOutput, ipxe_script, load_output


def _dnsmasq(output: ServedOutput, url: str, network: str, proxy: bool) -> str:
    net = ipaddress.ip_network(network)
    lines = ["# imagegen: boot server for the nodes of this render (dnsmasq; include with conf-file=)",
             "enable-tftp", "tftp-root=/usr/lib/ipxe",
             "dhcp-match=set:ipxe,175",  # iPXE sends option 175
             "dhcp-vendorclass=set:bios,PXEClient:Arch:00000",
             "dhcp-vendorclass=set:efi64,PXEClient:Arch:00007",
             "dhcp-vendorclass=set:efi64,PXEClient:Arch:00009"]
    if proxy:
        lines += [f"dhcp-range={net.network_address},proxy", "pxe-service=tag:!ipxe,x86PC,\"imagegen\",undionly.kpxe",
                  "pxe-service=tag:!ipxe,X86-64_EFI,\"imagegen\",ipxe.efi"]
    else:
        lines += [f"dhcp-range={net.network_address},static,{net.netmask}",
                  "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe", "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi"]
    # iPXE asks again; it gets the script of its own MAC (${mac} is expanded by iPXE, with colons).
    lines.append(f"dhcp-boot=tag:ipxe,{url}/ipxe/${{mac}}")
    for node in output.nodes.values():
        lines.append(f"dhcp-host={node.mac},{node.ip},{node.name}")
    return "\n".join(lines) + "\n"


def pxe_files(output: ServedOutput, url: str, network: str, boot_url: str | None = None, *,
              installer: bool = False) -> dict[str, str]:
    url = url.rstrip("/")
    boot_url = (boot_url or f"{url}/boot").rstrip("/")
    parts = urlsplit(boot_url)
    grub_boot = f"(http,{parts.netloc}){parts.path}"  # GRUB's http device: (http,HOST[:PORT])/path
    files = {"dnsmasq.conf": _dnsmasq(output, url, network, proxy=False),
             "dnsmasq-proxy.conf": _dnsmasq(output, url, network, proxy=True)}
    for node in output.nodes.values():
        seed = f"{url}/nodes/{node.name}/"
        cmdline = channels.kernel_cmdline(node.name, seed, node.files["network-config"])
        files[f"ipxe/{node.mac}.ipxe"] = ipxe_script(node, url, boot_url, installer=installer)
        files[f"cmdline/{node.name}"] = cmdline + "\n"
        files[f"smbios/{node.name}"] = channels.smbios_serial(seed) + "\n"
        files[f"grub/{node.name}.cfg"] = (
            f"menuentry 'imagegen {node.name}' {{\n"
            f"  linux {grub_boot}/vmlinuz {channels.grub_escape(cmdline)} console=ttyS0\n"
            f"  initrd {grub_boot}/initrd.img\n}}\n")
    return files


def _network_of(output: ServedOutput, out: Path) -> str:
    import yaml

    # The network is in every node's network-config (address/prefix): the first node's is enough.
    node = next(iter(output.nodes.values()))
    config = yaml.safe_load(node.files["network-config"]) or {}
    for eth in (config.get("ethernets") or {}).values():
        for addr in eth.get("addresses", []):
            return str(ipaddress.ip_interface(addr).network)
    raise UsageError(f"{out}: no static address in {node.name}'s network-config")


def cmd_pxe(args: argparse.Namespace) -> int:
    out, dest = Path(args.out), Path(args.dest)
    output = load_output(out)
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"--dest {dest}: exists and is not empty; choose a new directory")
    boot_dir = Path(args.boot_dir) if args.boot_dir else None
    if boot_dir is not None and not boot_dir.is_dir():
        raise UsageError(f"--boot-dir {boot_dir}: not a directory")
    installer = boot_dir is not None and (boot_dir / INSTALLER).is_file()
    files = pxe_files(output, args.url, _network_of(output, out), installer=installer)
    for rel, text in sorted(files.items()):
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_text(text)
    print(f"wrote {len(files)} files for {len(output.nodes)} nodes to {dest} (serve the node data with "
          f"`imagegen serve {out} --url {args.url}`)", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("pxe", help="write a boot server's configuration: dnsmasq, iPXE, GRUB, kernel arguments",
                       description="Writes dnsmasq.conf (DHCP reservations + iPXE chain-loading), "
                                   "dnsmasq-proxy.conf (proxy DHCP), ipxe/MAC.ipxe, grub/NAME.cfg, cmdline/NAME and "
                                   "smbios/NAME for the nodes of a render. No secrets: node data stays with "
                                   "`imagegen serve`.")
    p.add_argument("out", metavar="OUT", help="the directory `imagegen render --out` wrote")
    p.add_argument("--url", required=True, metavar="URL", help="where `imagegen serve` answers, "
                                                              "e.g. http://192.168.10.5:8080")
    p.add_argument("--dest", required=True, metavar="DIR", help="new directory to write into")
    p.add_argument("--boot-dir", metavar="DIR", help="the boot files `imagegen serve --boot-dir` will serve; when "
                                                     "they hold `imagegen image netboot`'s installer.cpio.gz the "
                                                     "iPXE scripts install the node image")
    p.set_defaults(func=cmd_pxe)
