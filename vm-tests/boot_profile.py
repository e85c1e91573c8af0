#!/usr/bin/env python3
"""make vm-profile: where a node's first-boot CPU goes. Boots ONE node of a plan alone (default: the smoke plan's
first load balancer) from imagegen's image and seed, waits for its bootstrap sentinel, then reads from inside:
systemd's CPU accounting per unit (CPUUsageNSec), `systemd-analyze blame`, cloud-init's per-module times
(`cloud-init analyze blame`) and the bootstrap's step log; with the domain's guest CPU seconds per console marker
from libvirt. Writes profile.json and profile.txt into the run directory and prints the text.

One node alone on the host, so wall time is close to CPU time; compare runs by CPU seconds anyway. A worker of the
smoke plan ends in the expected IMAGEGEN-BOOTSTRAP-FAILED (it has no control plane to join). Exit 0 when the node
reached a sentinel and the figures were read, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from harness.guest import shell_quote  # noqa: E402
from harness.lab import Lab, Node  # noqa: E402
from harness.render import derive_plan, render  # noqa: E402
from harness.session import Failed, Session  # noqa: E402
from harness.ssh import Ssh, make_key  # noqa: E402
from scenarios.smoke import wait_markers  # noqa: E402

from imagegen.image.build import build_image, load_spec  # noqa: E402
from imagegen.image.qemu import probe_accel  # noqa: E402
from imagegen.plan import load_plan  # noqa: E402

SIZES = {"load-balancer": (1024, 1), "worker": (1536, 1), "control-plane": (2560, 2), "registry": (2048, 1)}

# What is read from inside, each into the profile under its key.
UNIT_CPU = ("systemctl show --all -p Id -p CPUUsageNSec -p ExecMainStartTimestampMonotonic "
            "-p ActiveEnterTimestampMonotonic '*.service' '*.scope' '*.mount' '*.socket' '*.timer' 2>/dev/null")
COMMANDS = {
    "analyze-time": "systemd-analyze time 2>&1 | head -3",
    "blame": "systemd-analyze blame 2>&1 | head -40",
    "cloud-init-blame": "cloud-init analyze blame -i /var/log/cloud-init.log 2>&1 | head -60",
    "bootstrap-log": "grep -E '\\] (begin|done after)' /var/log/imagegen/bootstrap.log 2>&1",
    "kernel-user": "head -1 /proc/stat; cat /proc/uptime",
    "timers": "systemctl list-timers --all --no-pager 2>&1 | head -20",
    "enabled": "systemctl list-unit-files --state=enabled --no-pager --no-legend 2>&1",
    "reloads": "journalctl -b -o short-monotonic _PID=1 | grep -cE 'Reloading|reloading' ; "
               "journalctl -b -o short-monotonic _PID=1 | grep -E 'Reload|generator' | head -20",
    "top-processes": "ps -eo cputimes,etimes,comm --sort=-cputimes | head -15",
}


def parse_unit_cpu(text: str) -> list[tuple[str, float]]:
    """systemctl show's blank-line separated records -> (unit, CPU seconds), biggest first; units without
    accounting (CPUUsageNSec=[not set]) left out."""
    rows: list[tuple[str, float]] = []
    for record in text.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in record.splitlines() if "=" in line)
        nsec = fields.get("CPUUsageNSec", "")
        if nsec.isdigit() and int(nsec) > 0:
            rows.append((fields.get("Id", "?"), int(nsec) / 1e9))
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def profile_node(lab: Lab, node: Node, ssh: Ssh, run_dir: Path) -> str:
    """Read the figures from inside `node`; profile-<name>.json and .txt in the run directory; the text back."""
    if not ssh.wait_ready(time.monotonic() + 180):
        raise Failed(f"{node.name}: no SSH")
    profile: dict[str, object] = {"node": node.name, "role": node.role, "guest_cpu_at_marker": node.cpu}
    units = parse_unit_cpu(ssh.run(f"sudo sh -c {shell_quote(UNIT_CPU)}", timeout=120).out)
    profile["unit_cpu_seconds"] = units
    for name, cmd in COMMANDS.items():
        profile[name] = ssh.run(f"sudo sh -c {shell_quote(cmd)}", timeout=120).out
    total = lab.cpu_seconds(node)
    profile["guest_cpu_now"] = total
    (run_dir / f"profile-{node.name}.json").write_text(json.dumps(profile, indent=1) + "\n")
    lines = [f"{node.name} ({node.role}) guest CPU seconds at each marker: {node.cpu}",
             f"guest CPU now: {total}", "", "CPU seconds per systemd unit (top 30):"]
    lines += [f"  {secs:8.2f}  {unit}" for unit, secs in units[:30]]
    for name in COMMANDS:
        lines += ["", f"--- {name} ---", str(profile[name]).rstrip()]
    text = "\n".join(lines) + "\n"
    (run_dir / f"profile-{node.name}.txt").write_text(text)
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", type=Path, default=HERE / "plans" / "smoke.yaml")
    p.add_argument("--node", action="append", default=[],
                   help="node of the plan to boot, repeatable (default: its first load balancer); every node named "
                        "boots at once and is profiled")
    p.add_argument("--bundle", type=Path, help="bundle.img to attach to control planes and workers")
    p.add_argument("--keep", action="store_true", help="leave the VMs running at the end (look around)")
    p.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "imagegen" / "vm-runs")
    p.add_argument("--spec", default="node", help="image spec to boot (built or taken from the cache)")
    p.add_argument("--deadline", type=float, default=900, help="seconds to wait for the bootstrap sentinel")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with Session(suite="vm-profile", run_name="profile", runs=args.runs, plan=args.plan, keep=args.keep) as session:
        run_dir = session.run_dir
        with session.phase("image"):
            image = build_image(load_spec(args.spec))
            session.report.image = str(image.qcow2)
        with session.phase("render"):
            key, pubkey = make_key(run_dir / "ssh")
            derived = derive_plan(args.plan, run_dir, pubkey)
            out = render(derived, run_dir)
            plan = load_plan(derived)
        chosen = [n for n in plan.nodes if n.name in args.node] if args.node else \
            [n for n in plan.nodes if n.role == "load-balancer"][:1]
        unknown = sorted(set(args.node) - {n.name for n in plan.nodes})
        if unknown:
            raise Failed(f"--node {', '.join(unknown)}: not a node of {args.plan}")
        lab = session.open_lab(probe_accel())
        with session.phase("define-and-start"):
            session.create_network(plan, "igpf")
            for n in chosen:
                mem, cpus = SIZES[n.role]
                extra = (args.bundle,) if args.bundle and n.role in ("control-plane", "worker") else ()
                lab.add_node(name=n.name, role=n.role, ip=str(n.ip), mac=n.mac, image=image.qcow2,
                             seed=out / "seeds" / f"{n.name}.iso", memory_mib=mem, vcpus=cpus, extra_disks=extra)
            for node in lab.nodes.values():
                lab.start(node)
        nodes = list(lab.nodes.values())
        with session.phase("boot-to-sentinel"):
            wait_markers(lab, nodes, {n.name: ("bootstrap-ok", "bootstrap-failed") for n in nodes}, args.deadline,
                         "bootstrap")
        texts = []
        for node in nodes:
            texts.append(profile_node(lab, node, Ssh(node.ip, plan.admin_user, key), run_dir))
        print("\n\n".join(texts), flush=True)
    return session.code


if __name__ == "__main__":
    sys.exit(main())
