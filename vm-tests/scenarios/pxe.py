"""vm-pxe's steps: one machine with an empty disk installed over the network, then booted from its disk.

The node PXE-boots (QEMU's iPXE ROM; libvirt's dnsmasq hands out its planned address and the boot file
`imagegen serve`'s /ipxe/boot), the installer writes the image and the node's seed, the machine reboots, iPXE is
told `exit` and the firmware boots the disk, where cloud-init reads the seed directory.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import unquote

import yaml
from harness import guest
from harness.lab import Node
from harness.session import Failed, Session, SessionView

from imagegen.plan import Plan
from scenarios.smoke import bootstrap_ok, wait_markers, worker_checks

REPO = Path(__file__).resolve().parents[2]
# Seconds from the domain's start (TCG on 2 cores): the install streams an 8 GiB disk image through gunzip.
DEADLINES = {"install": 1500, "cloud-init-done": 2100, "bootstrap": 2400, "ssh": 180}
INSTALL = re.compile(r"IMAGEGEN-INSTALL-(OK|FAILED)\b[^\r\n]*")
# This suite's own network: smoke uses 10.78, the cluster tests 10.79 and 10.80, so they can run beside it.
NETWORK = ("10.78.0.", "10.81.0.")
MACS = ("52:54:00:78:", "52:54:00:81:")


def pxe_plan(source: Path, run_dir: Path) -> Path:
    """The smoke plan moved to this suite's network and names (pxe-*), as a new file in the run directory."""
    text = source.read_text().replace(*NETWORK).replace(*MACS).replace("smoke", "pxe")
    data = yaml.safe_load(text)
    path = run_dir / "pxe-plan.yaml"
    path.write_text(f"# {source} moved to {NETWORK[1]}0/24 for vm-pxe\n" + yaml.safe_dump(data, sort_keys=False))
    return path


class Serve:
    """`imagegen serve OUT --boot-dir DIR` as an operator runs it, on the lab bridge's address; its request log
    goes to serve.log in the run directory. Always stopped on exit."""

    def __init__(self, out: Path, listen: str, url: str, boot_dir: Path, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "imagegen", "serve", str(out), "--listen", listen, "--url", url,
                    "--boot-dir", str(boot_dir)]
        self.url = url
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Serve:
        with self.log.open("wb") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"imagegen serve exited with {self.proc.returncode}: {self.log.read_text()[-500:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/ipxe/boot", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise Failed(f"imagegen serve did not answer at {self.url} within 30 s")

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self) -> list[tuple[str, str, str, int]]:
        """(client, method, path, status) of every request so far."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = re.match(r"\S+ (\S+) (GET|HEAD|POST) '([^']*)' (\d+) ", line)
            if m:
                found.append((m.group(1), m.group(2), m.group(3), int(m.group(4))))
        return found


@dataclass
class PxeContext(SessionView):
    session: Session
    plan: Plan
    out: Path
    serve: Serve
    node: Node
    other: str  # a planned node that is not booted: its data must be refused to ours
    smbios: Node  # booted from the image with no ISO: NoCloud over HTTP from its SMBIOS serial
    smbios_serial: str  # what `imagegen pxe` wrote into smbios/<name>


def install_lines(node: Node) -> list[str]:
    text = node.serial_log.read_text(errors="replace") if node.serial_log.exists() else ""
    return [m.group(0).strip() for m in INSTALL.finditer(text)]


def wait_install(ctx: PxeContext) -> None:
    """PXE, iPXE, the installer: until its one sentinel line."""
    n = ctx.node
    with ctx.session.phase("install"):
        print(f"waiting for the network install of {n.name} ...", flush=True)
        while True:
            for node, marker in ctx.lab.poll():
                print(f"  {node.name:<16} {node.since_start():6.1f}s  {marker.kind}: {marker.line[:110]}", flush=True)
            lines = install_lines(n)
            if lines:
                cpu = ctx.lab.cpu_seconds(n)
                if cpu is not None:
                    n.cpu.setdefault("install", cpu)
                n.note("install-ok" if lines[0].startswith("IMAGEGEN-INSTALL-OK") else "install-failed")
                print(f"  {n.name:<16} {n.since_start():6.1f}s  install: {lines[0][:110]}", flush=True)
                if not lines[0].startswith("IMAGEGEN-INSTALL-OK"):
                    raise Failed(f"{n.name}: {lines[0]}; console: {n.serial_log}")
                return
            if not ctx.lab.is_running(n):
                raise Failed(f"{n.name}: domain stopped during the network install")
            if n.since_start() > DEADLINES["install"]:
                raise Failed(f"{n.name}: no IMAGEGEN-INSTALL-OK within {DEADLINES['install']} s; console: "
                             f"{n.serial_log}, server log: {ctx.serve.log}")
            time.sleep(2)


def wait_first_boot(ctx: PxeContext) -> None:
    """After the installer's reboot: cloud-init from the seed directory, then the node's bootstrap."""
    with ctx.session.phase("cloud-init"):
        wait_markers(ctx.lab, [ctx.node], {ctx.node.name: ("cloud-init-done",)}, DEADLINES["cloud-init-done"],
                     "cloud-init after the install")
    with ctx.session.phase("bootstrap"):
        wait_markers(ctx.lab, [ctx.node], {ctx.node.name: ("bootstrap-ok", "bootstrap-failed")},
                     DEADLINES["bootstrap"], "bootstrap")


def wait_ssh(ctx: PxeContext) -> None:
    n = ctx.node
    with ctx.session.phase("ssh"):
        if not ctx.ssh_of[n.name].wait_ready(time.monotonic() + DEADLINES["ssh"]):
            raise Failed(f"{n.name}: no SSH as {ctx.plan.admin_user}@{n.ip} within {DEADLINES['ssh']} s")
        n.note("ssh")


def one_install_line(n: Node) -> tuple[bool, str]:
    lines = install_lines(n)
    ok = len(lines) == 1 and lines[0].startswith(f"IMAGEGEN-INSTALL-OK node={n.name} ")
    return ok, "; ".join(lines) or "no IMAGEGEN-INSTALL line"


def served_to_the_node(ctx: PxeContext) -> tuple[bool, str]:
    """The server's log: the node's own address fetched the disk image and its three files, reported the install
    done, and got its iPXE script twice (install, then `exit` to the disk)."""
    n = ctx.node
    # The log keeps the path as sent: iPXE's ${mac} arrives URL-encoded (52%3A54%3A...), which serve decodes once.
    mine = [(method, unquote(path), status) for client, method, path, status in ctx.serve.requests()
            if client == n.ip]
    want = [("GET", "/ipxe/boot", 200), ("GET", f"/ipxe/{n.mac}", 200), ("GET", "/boot/vmlinuz", 200),
            ("GET", "/boot/initrd.img", 200), ("GET", "/boot/installer.cpio.gz", 200),
            ("GET", "/boot/node.raw.gz", 200), ("GET", f"/mac/{n.mac}/meta-data", 200),
            ("GET", f"/mac/{n.mac}/network-config", 200), ("GET", f"/mac/{n.mac}/user-data", 200),
            ("POST", f"/mac/{n.mac}/installed", 200)]
    missing = [w for w in want if w not in mine]
    scripts = sum(1 for w in mine if w == ("GET", f"/ipxe/{n.mac}", 200))
    ok = not missing and scripts >= 2
    return ok, (f"{len(mine)} requests from {n.ip}; iPXE script fetched {scripts} times"
                + (f"; missing {missing}" if missing else ""))


def others_data_refused(ctx: PxeContext, c: guest.Checker) -> tuple[bool, str]:
    other = next(node for node in ctx.plan.nodes if node.name == ctx.other)
    codes = {}
    for path in (f"/nodes/{other.name}/user-data", f"/mac/{other.mac}/user-data"):
        rc, out = c.sudo(f"curl -s -o /dev/null -w '%{{http_code}}' {ctx.serve.url}{path}", timeout=30)
        codes[path] = out.strip()
    own_rc, own = c.sudo(f"curl -s -o /dev/null -w '%{{http_code}}' {ctx.serve.url}/nodes/{ctx.node.name}/meta-data",
                         timeout=30)
    logged = [r for r in ctx.serve.requests() if r[0] == ctx.node.ip and r[2].endswith("/user-data")
              and ctx.other in r[2] and r[3] == 403]
    ok = all(code == "403" for code in codes.values()) and own.strip() == "200" and bool(logged)
    return ok, f"{codes}; own meta-data {own.strip()}; 403 in the server log: {len(logged)}"


def seed_on_disk(c: guest.Checker) -> tuple[bool, str]:
    rc, out = c.sudo("stat -c '%n %a' /var/lib/cloud/seed/nocloud/* && "
                     "grep -o 'seed=[^],]*' /run/cloud-init/status.json | head -1")
    ok = rc == 0 and "/var/lib/cloud/seed/nocloud/user-data 600" in out \
        and "seed=/var/lib/cloud/seed/nocloud" in out
    return ok, " ".join(out.split())[:300]


def checks(ctx: PxeContext) -> None:
    """The network-installed node passes what its role's ISO-seeded twin in vm-smoke passes (a worker: prepared,
    the expected join failure with no control plane, modules, sysctls, swap, journald, runtime, held packages,
    cloud-init), plus the install's own checks."""
    n = ctx.node
    prefix = ctx.plan.network.cidr.prefixlen
    with ctx.session.phase("checks"):
        c = guest.Checker(n.name, ctx.ssh_of[n.name], ctx.report.checks)
        c.check("installer: exactly one IMAGEGEN-INSTALL-OK for this node on the console", partial(one_install_line, n))
        if n.role == "worker":
            exp = guest.expectations_from_user_data((ctx.out / "nodes" / n.name / "user-data").read_text())
            worker_checks(c, n, exp, prefix)
        else:
            c.check("first boot from the disk: IMAGEGEN-BOOTSTRAP-OK", partial(bootstrap_ok, n))
            guest.check_identity(c, n.name, n.ip, prefix)
            guest.check_cloud_init(c)
        c.check("seed written by the installer (user-data 0600) and read by cloud-init from the seed directory",
                partial(seed_on_disk, c))
        c.check("server log: the node's own address fetched the image and its files, reported the install, "
                "and was sent to its disk", partial(served_to_the_node, ctx))
        c.check(f"another node's ({ctx.other}) user-data refused to this node (403)",
                partial(others_data_refused, ctx, c))
        n.note("checks")


# --- the SMBIOS-seeded node: the node image, no ISO, `ds=nocloud-net;s=URL` as its system serial ------------

def smbios_serial_of(out: Path, url: str, node: str, dest: Path) -> str:
    """`imagegen pxe OUT --url URL --dest DEST`, as an operator runs it; the node's smbios/<name> line."""
    done = subprocess.run([sys.executable, "-m", "imagegen", "pxe", str(out), "--url", url, "--dest", str(dest)],
                          capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise Failed(f"imagegen pxe: {(done.stdout + done.stderr).strip()[-400:]}")
    return (dest / "smbios" / node).read_text().strip()


def boot_smbios(ctx: PxeContext) -> None:
    """After the network-installed node: the second one, from the image, seeded only through its SMBIOS serial
    (on 22.4 it takes its address by DHCP, the planned one by reservation; the serial carries no network)."""
    n = ctx.smbios
    with ctx.session.phase("smbios-boot"):
        print(f"starting {n.name}: the node image, no seed ISO, SMBIOS serial {ctx.smbios_serial!r} ...", flush=True)
        ctx.lab.start(n)
        wait_markers(ctx.lab, [n], {n.name: ("cloud-init-done",)}, DEADLINES["cloud-init-done"],
                     "cloud-init from the SMBIOS seed")
        wait_markers(ctx.lab, [n], {n.name: ("bootstrap-ok", "bootstrap-failed")}, DEADLINES["bootstrap"],
                     "bootstrap from the SMBIOS seed")
        if not ctx.ssh_of[n.name].wait_ready(time.monotonic() + DEADLINES["ssh"]):
            raise Failed(f"{n.name}: no SSH as {ctx.plan.admin_user}@{n.ip} within {DEADLINES['ssh']} s")
        n.note("ssh")


def seeded_over_http(ctx: PxeContext, c: guest.Checker) -> tuple[bool, str]:
    """The serial the firmware reports is imagegen's, cloud-init's datasource is NoCloudNet with that seed URL,
    there is no CD-ROM, and the server's log shows the node's own address fetching its files (200)."""
    n = ctx.smbios
    rc, out = c.sudo("cat /sys/class/dmi/id/product_serial; grep -o 'DataSourceNoCloud[^\"]*' "
                     "/run/cloud-init/status.json | head -1; ls /dev/sr0 2>/dev/null || echo no-cdrom")
    lines = [ln.strip() for ln in out.splitlines()]
    url = ctx.smbios_serial.partition(";s=")[2]
    fetched = {path for client, method, path, status in ctx.serve.requests()
               if client == n.ip and method == "GET" and status == 200}
    files = {f"/nodes/{n.name}/meta-data", f"/nodes/{n.name}/user-data"}
    ok = (rc == 0 and len(lines) >= 3 and lines[0] == ctx.smbios_serial and "DataSourceNoCloudNet" in lines[1]
          and url in lines[1] and lines[2] == "no-cdrom" and files <= fetched)
    return ok, f"{'; '.join(lines)[:300]}; fetched from {n.ip}: {sorted(fetched)}"


def smbios_checks(ctx: PxeContext) -> None:
    n = ctx.smbios
    with ctx.session.phase("smbios-checks"):
        c = guest.Checker(n.name, ctx.ssh_of[n.name], ctx.report.checks)
        c.check("SMBIOS-seeded: IMAGEGEN-BOOTSTRAP-OK", partial(bootstrap_ok, n))
        guest.check_identity(c, n.name, n.ip, ctx.plan.network.cidr.prefixlen)
        c.check("SMBIOS-seeded: NoCloudNet from the serial imagegen pxe wrote, no CD-ROM, files fetched from the "
                "node's own address", partial(seeded_over_http, ctx, c))
        guest.check_cloud_init(c)
        n.note("checks")


STEPS: tuple[Callable[[PxeContext], None], ...] = (wait_install, wait_first_boot, wait_ssh, checks, boot_smbios,
                                                    smbios_checks)


def collect(session: Session) -> None:
    """A failed run keeps the guest's logs if it answers SSH (the installer itself has no SSH: its console and
    serve.log are in the run directory)."""
    lab = session.lab
    if lab is None or session.report.result != "failed":
        return
    for node in lab.nodes.values():
        ssh = session.ssh_of.get(node.name)
        if ssh is not None and lab.is_running(node) and ssh.run("true", timeout=10, connect_timeout=3).ok:
            guest.pull_logs(ssh, session.run_dir / "guest-logs" / node.name,
                            {**guest.BASE_LOGS, "cloud-init-status.txt": "sudo cloud-init status --long"},
                            timeout=60)
    lab.poll()
