#!/usr/bin/env python3
"""make vm-pxe: one machine with an empty disk installed over the network by imagegen, then booted from its disk;
then a second machine from the node image with no ISO, seeded over HTTP through its SMBIOS serial.

The node (the worker of vm-tests/plans/smoke.yaml, moved to 10.81.0.0/24) boots from its NIC first: libvirt's
dnsmasq gives it its planned address by MAC and the boot file http://GATEWAY:PORT/ipxe/boot; `imagegen serve` on
the lab bridge's address chains iPXE to the node's script, which boots the image's kernel with the installer
initrd of `imagegen image netboot`. The installer writes the image and the node's NoCloud files to the disk and
reboots; the server then answers `exit`, the firmware boots the disk and cloud-init reads the seed directory.

Pass: IMAGEGEN-INSTALL-OK on the console (exactly once), then from the installed disk the checks vm-smoke's
ISO-seeded worker passes (prepared, then the expected join failure with no control plane; planned static address,
modules, sysctls, swap, journald, runtime, held packages, cloud-init), the seed (user-data 0600) read from the seed
directory,
serve's log showing the node's own address fetching its files, and 403 for another node's user-data asked for
from the VM. The SMBIOS-seeded node (the plan's first load balancer; serial from `imagegen pxe`'s
smbios/<name>): BOOTSTRAP-OK, its planned address (DHCP reservation: the serial carries no network on 22.4), the
NoCloudNet datasource with that seed URL, no CD-ROM, its files fetched by its own address. Nothing leaves the
machine (the harness's firewall rule). Always cleans up domains, network, rule and
the server; report.json with phase timings and guest CPU seconds in the run directory.
Exit 0 passed, 1 failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from harness.render import derive_plan, render  # noqa: E402
from harness.session import Failed, Session  # noqa: E402
from harness.ssh import Ssh, make_key  # noqa: E402
from harness.xml import HostEntry, NetworkSpec  # noqa: E402
from scenarios import pxe as scenario  # noqa: E402

from imagegen.image.build import build_image, load_spec  # noqa: E402
from imagegen.image.netboot import build_netboot  # noqa: E402
from imagegen.image.qemu import probe_accel  # noqa: E402
from imagegen.plan import load_plan  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", type=Path, default=HERE / "plans" / "smoke.yaml",
                   help="plan to take the node from (moved to 10.81.0.0/24; default vm-tests/plans/smoke.yaml)")
    p.add_argument("--node", help="node to install (default: the plan's first worker)")
    p.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "imagegen" / "vm-runs",
                   help="where run directories go")
    p.add_argument("--spec", default="node", help="image spec to install (built or taken from the cache)")
    p.add_argument("--memory", type=int, default=1536, help="guest MiB (default 1536)")
    p.add_argument("--vcpus", type=int, default=2, help="guest vCPUs (default 2)")
    p.add_argument("--keep", action="store_true", help="leave the VM and network in place (debugging)")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with Session(suite="vm-pxe", run_name="pxe", runs=args.runs, plan=args.plan, keep=args.keep,
                 collect=scenario.collect) as session:
        report, run_dir = session.report, session.run_dir
        with session.phase("image"):
            image = build_image(load_spec(args.spec))
            report.image = str(image.qcow2)
        with session.phase("netboot"):
            netboot = build_netboot(image)

        with session.phase("render"):
            key, pubkey = make_key(run_dir / "ssh")
            derived = derive_plan(scenario.pxe_plan(args.plan, run_dir), run_dir, pubkey)
            out = render(derived, run_dir)
            plan = load_plan(derived)
        workers = [n for n in plan.nodes if n.role == "worker"]
        wanted = args.node.replace("smoke", "pxe") if args.node else (workers[0].name if workers else "")
        node = next((n for n in plan.nodes if n.name == wanted), None)
        if node is None:
            raise Failed(f"--node {wanted!r}: not in the plan ({', '.join(n.name for n in plan.nodes)})")
        smbios = next((n for n in plan.nodes if n.role == "load-balancer" and n.name != node.name), None)
        if smbios is None:
            raise Failed("the plan needs a load balancer (other than --node) for the SMBIOS-seeded node")
        other = next(n.name for n in plan.nodes if n.name not in (node.name, smbios.name))

        lab = session.open_lab(probe_accel())
        gateway = str(plan.network.gateway)
        url = f"http://{gateway}:{free_port()}"
        with session.phase("network-and-server"):
            lab.create_network(NetworkSpec(
                name=f"imagegen-{session.run_id}", bridge=f"igpx{session.run_id[-6:]}",
                cidr=str(plan.network.cidr), gateway=gateway,
                hosts=tuple(HostEntry(n.mac, str(n.ip), n.name) for n in plan.nodes),
                bootp_file=f"{url}/ipxe/boot", dnsmasq_reservations=True))
            serve = scenario.Serve(out, url.removeprefix("http://"), url, netboot.directory, run_dir / "serve.log")
            serial = scenario.smbios_serial_of(out, url, smbios.name, run_dir / "pxe-config")
        with serve:
            with session.phase("define-and-start"):
                vm = lab.add_node(name=node.name, role=node.role, ip=str(node.ip), mac=node.mac, image=None,
                                  seed=None, memory_mib=args.memory, vcpus=args.vcpus, boot_network=True)
                lab.start(vm)
                # Defined now, started once the network-installed node passed: one guest at a time on 2 cores.
                sm = lab.add_node(name=smbios.name, role=smbios.role, ip=str(smbios.ip), mac=smbios.mac,
                                  image=image.qcow2, seed=None, memory_mib=args.memory, vcpus=args.vcpus,
                                  smbios_serial=serial)
            for n in (vm, sm):
                session.ssh_of[n.name] = Ssh(n.ip, plan.admin_user, key)
            ctx = scenario.PxeContext(session, plan, out, serve, vm, other, sm, serial)
            for step in scenario.STEPS:
                step(ctx)
    return session.code


if __name__ == "__main__":
    sys.exit(main())
