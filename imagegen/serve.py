"""`imagegen serve OUT`: each node's NoCloud files and an iPXE script over HTTP, for network boot and NoCloud over
HTTP (`ds=nocloud-net;s=URL/`, see imagegen.channels).

What is protected, and how: a node's files (user-data holds its secrets: a control plane's CA keys) and its iPXE
script are served **only to a client whose source address is that node's planned address** (the address a DHCP
reservation by MAC gives it; `imagegen.channels` and the README say how). Anyone else gets 403 and a log line.
Nothing else is served: no state, no admin.conf, no manifest, no path outside the table loaded at start (requests
are looked up by name, never mapped onto the file system). What is not protected: a machine that can send
packets from a node's address on that network (ARP/IP spoofing on the same L2), and plain HTTP on the wire; keep
the boot network to the machines being provisioned, or use the seed ISO.

Installing (a --boot-dir made by `imagegen image netboot`): a node's iPXE script boots the image's kernel with the
installer initrd; the installer streams /boot/node.raw.gz to the disk, writes the node's files into the installed
system's seed directory and POSTs /mac/MAC/installed (again only from the node's own address); from then on that
node's script is `exit`, so its firmware boots the installed disk. That record lives in memory: a restarted server
installs a node again at its next network boot.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from imagegen import channels
from imagegen.errors import UsageError

NODE_FILES = ("user-data", "meta-data", "network-config", "vendor-data")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAC = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}")


@dataclass(frozen=True)
class ServedNode:
    name: str
    ip: str
    mac: str
    files: dict[str, bytes]


@dataclass(frozen=True)
class ServedOutput:
    nodes: dict[str, ServedNode]
    by_mac: dict[str, str]


def load_output(out: Path) -> ServedOutput:
    """Read an imagegen render output once; refuse anything that is not one."""
    import json

    from imagegen.writer import MANIFEST, MARKER_NOTE, OUTPUT_MARKER

    out = Path(out)
    marker_path = out / OUTPUT_MARKER
    try:
        marker = json.loads(marker_path.read_bytes()) if marker_path.is_file() else None
        is_output = isinstance(marker, dict) and marker.get("generator") == "imagegen" \
            and marker.get("note") == MARKER_NOTE
        manifest = json.loads((out / MANIFEST).read_text()) if is_output else None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{out}: cannot read the render output ({exc}); run `imagegen render` first") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("nodes"), list):
        raise UsageError(f"{out}: is not an imagegen render output (no {OUTPUT_MARKER}); give the directory "
                         "`imagegen render --out` wrote")
    nodes: dict[str, ServedNode] = {}
    for entry in manifest["nodes"]:
        name, ip, mac = str(entry.get("name", "")), str(entry.get("ip", "")), str(entry.get("mac", ""))
        if not _NAME.fullmatch(name) or not _MAC.fullmatch(mac):
            raise UsageError(f"{out}/{MANIFEST}: node entry {name[:40]!r} is malformed; render again")
        files = {}
        for f in NODE_FILES:
            path = out / "nodes" / name / f
            files[f] = path.read_bytes() if path.is_file() else b""
        nodes[name] = ServedNode(name, ip, mac, files)
    return ServedOutput(nodes, {n.mac: n.name for n in nodes.values()})


INSTALLER = "installer.cpio.gz"  # in a boot dir: `imagegen image netboot` made it; the scripts install the image
BOOT_CHUNK = 1 << 20


def ipxe_script(node: ServedNode, url: str, boot_url: str, kernel_args: str = "console=ttyS0", *,
                installer: bool = False, installed: bool = False) -> str:
    """An iPXE script for this node. Without an installer: the netboot kernel with the node's NoCloud seed and
    network on its command line. With one (`imagegen image netboot`): the image's kernel, its initrd and the
    installer initrd, which writes the image and the node's seed to the disk. Once the installer reported the
    install done (`installed`): `exit`, so the firmware boots the next device, the installed disk."""
    head = f"#!ipxe\n# imagegen: {node.name} ({node.mac})\n"
    if installed:
        return head + "# installed: boot from the disk (the firmware's next boot device)\nexit\n"
    if installer:
        return (head + f"kernel {boot_url}/vmlinuz initrd=initrd.img initrd={INSTALLER} imagegen.url={url} "
                f"imagegen.mac={node.mac} {kernel_args}\n"
                f"initrd {boot_url}/initrd.img\ninitrd {boot_url}/{INSTALLER}\nboot\n")
    cmdline = channels.kernel_cmdline(node.name, f"{url}/nodes/{node.name}/", node.files["network-config"])
    return (head + f"kernel {boot_url}/vmlinuz initrd=initrd.img {cmdline} {kernel_args}\n"
            f"initrd {boot_url}/initrd.img\nboot\n")


def chain_script(url: str) -> str:
    """For a DHCP server that hands every machine one boot file name (libvirt's `<bootp file=.../>`): iPXE asks
    again with its own MAC. Holds no node data, so it goes to anyone."""
    return f"#!ipxe\n# imagegen: chain to this machine's own script\nchain {url}/ipxe/${{mac}}\n"


@dataclass
class Route:
    status: int
    body: bytes = b""
    node: ServedNode | None = None  # when set, only this node's address may have it
    file: Path | None = None  # a boot file, streamed instead of `body`
    installed: str | None = None  # a node's installer reported its install done (applied once allowed)


def route(output: ServedOutput, path: str, *, url: str, boot_dir: Path | None,
          installed: frozenset[str] | set[str] = frozenset(), method: str = "GET") -> Route:
    # Decoded once (iPXE sends ${mac}'s colons as %3A); a name, never a file path: looked up in the tables below.
    parts = unquote(path.split("?", 1)[0]).split("/")
    if method == "POST":
        if len(parts) == 4 and parts[0] == "" and parts[1] == "mac" and parts[3] == "installed":
            name = output.by_mac.get(parts[2].lower().replace("-", ":"))
            if name is not None:
                return Route(HTTPStatus.OK, b"ok\n", output.nodes[name], installed=name)
        return Route(HTTPStatus.NOT_FOUND, b"not found\n")
    if len(parts) == 4 and parts[0] == "" and parts[1] in ("nodes", "mac") and parts[3] in NODE_FILES:
        key = parts[2].lower().replace("-", ":") if parts[1] == "mac" else parts[2]
        name = output.by_mac.get(key) if parts[1] == "mac" else key
        node = output.nodes.get(name or "")
        if node is not None:
            return Route(HTTPStatus.OK, node.files[parts[3]], node)
    if len(parts) == 3 and parts[0] == "" and parts[1] == "ipxe":
        if parts[2] == "boot":
            return Route(HTTPStatus.OK, chain_script(url).encode())
        name = output.by_mac.get(parts[2].lower().replace("-", ":"))
        if name is not None:
            node = output.nodes[name]
            installer = boot_dir is not None and (boot_dir / INSTALLER).is_file()
            script = ipxe_script(node, url, f"{url}/boot", installer=installer, installed=name in installed)
            return Route(HTTPStatus.OK, script.encode(), node)
    if len(parts) == 3 and parts[0] == "" and parts[1] == "boot" and boot_dir is not None \
            and parts[2] in {p.name for p in boot_dir.iterdir() if p.is_file()}:
        return Route(HTTPStatus.OK, file=boot_dir / parts[2])
    return Route(HTTPStatus.NOT_FOUND, b"not found\n")


def make_server(output: ServedOutput, listen: tuple[str, int], *, url: str, boot_dir: Path | None = None,
                log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
                ) -> ThreadingHTTPServer:
    installed: set[str] = set()  # nodes whose installer reported done: their next iPXE script boots the disk

    class Handler(BaseHTTPRequestHandler):
        server_version = "imagegen"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(send_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(send_body=False)

        def do_POST(self) -> None:  # noqa: N802
            length = self.headers.get("Content-Length", "0")
            self.rfile.read(min(int(length), 4096) if length.isdigit() else 0)  # a short form, never kept
            self._answer(send_body=True)

        def _answer(self, send_body: bool) -> None:
            r = route(output, self.path, url=url, boot_dir=boot_dir, installed=installed, method=self.command)
            client = self.client_address[0]
            if r.node is not None and client != r.node.ip:
                r = Route(HTTPStatus.FORBIDDEN, b"forbidden: only the node's own address may fetch its data\n")
            if r.installed is not None:
                installed.add(r.installed)
            size = r.file.stat().st_size if r.file is not None else len(r.body)
            self.send_response(r.status)
            self.send_header("Content-Type", "application/octet-stream" if r.file is not None
                             else "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            sent = 0
            if send_body:
                sent = self._send_file(r.file) if r.file is not None else self._send(r.body)
            # Paths and statuses only: never a body (user-data holds secrets).
            log(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {client} {self.command} "
                f"{self.path[:200]!r} {int(r.status)} {sent}")

        def _send(self, body: bytes) -> int:
            self.wfile.write(body)
            return len(body)

        def _send_file(self, path: Path) -> int:
            """A boot file in chunks (a disk image is GBs: never read whole); a client that goes away ends it."""
            sent = 0
            try:
                with path.open("rb") as f:
                    while chunk := f.read(BOOT_CHUNK):
                        self.wfile.write(chunk)
                        sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return sent

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass  # our own request log above

    server = ThreadingHTTPServer(listen, Handler)
    server.daemon_threads = True
    return server


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r}: write ADDRESS:PORT, e.g. 0.0.0.0:8080")
    return host, int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    output = load_output(Path(args.out))
    host, port = _listen(args.listen)
    url = (args.url or f"http://{host}:{port}").rstrip("/")
    if host in ("0.0.0.0", "::") and not args.url:
        raise UsageError("--url: the address nodes reach this server at is needed with a wildcard --listen, "
                         "e.g. --url http://192.168.10.5:8080")
    boot_dir = Path(args.boot_dir) if args.boot_dir else None
    if boot_dir is not None and not boot_dir.is_dir():
        raise UsageError(f"--boot-dir {boot_dir}: not a directory")
    server = make_server(output, (host, port), url=url, boot_dir=boot_dir)
    print(f"serving {len(output.nodes)} nodes of {args.out} at {url} (each node's data only to its own address); "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("imagegen: serve stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("serve", help="serve node data over HTTP for PXE/iPXE and NoCloud over HTTP",
                       description="Serves /nodes/NAME/{user-data,meta-data,network-config,vendor-data}, the same "
                                   "under /mac/MAC/, an iPXE script at /ipxe/MAC (and /ipxe/boot, which chains to it), "
                                   "--boot-dir's files at /boot/. "
                                   "A node's data goes only to the node's own planned address; anything else is "
                                   "403 or 404.")
    s.add_argument("out", metavar="OUT", help="the directory `imagegen render --out` wrote")
    s.add_argument("--listen", default="0.0.0.0:8080", metavar="ADDR:PORT", help="default 0.0.0.0:8080")
    s.add_argument("--url", metavar="URL", help="how nodes reach this server, e.g. http://192.168.10.5:8080 "
                                                "(goes into the iPXE scripts' seed URLs)")
    s.add_argument("--boot-dir", metavar="DIR", help="kernel (vmlinuz) and initrd.img for the iPXE scripts; with "
                                                     "`imagegen image netboot`'s installer.cpio.gz and node.raw.gz "
                                                     "there, the scripts install the node image to the disk")
    s.set_defaults(func=cmd_serve)
