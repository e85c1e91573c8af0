#!/usr/bin/env python3
"""make vm-smoke: boot imagegen's own seeds on imagegen's own image and check the nodes from inside.

Plan vm-tests/plans/smoke.yaml: two load balancers (nginx stream + keepalived VIP; the second seeded by its OpenStack
config drive, seeds/<name>-configdrive.iso, the others by the NoCloud seed ISO) and one worker whose join has
nowhere to go (its control plane is never booted, no bundle disk): the worker must prepare itself and then print
the expected IMAGEGEN-BOOTSTRAP-FAILED sentinel. Checks: identity, modules, sysctls, swap (also after a reboot
with a swap file in fstab), journald, Docker's effective settings, cloud-init status and the datasource that read
the node's seed; nginx on the endpoint port, exactly one VIP holder, VIP failover and back on stopping keepalived
and then nginx.

Always cleans up domains, network, firewall rule and overlays (harness.session); the run directory (report.json,
timeline.svg, serial consoles, seeds, pulled guest logs on failure) is printed at the end. Exit 0 passed, 1 failed,
2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from harness.render import derive_plan, render  # noqa: E402
from harness.session import Session  # noqa: E402
from harness.ssh import make_key  # noqa: E402
from scenarios import smoke as scenario  # noqa: E402

from imagegen.image.build import build_image, load_spec  # noqa: E402
from imagegen.image.qemu import probe_accel  # noqa: E402
from imagegen.plan import load_plan  # noqa: E402

# Nodes the smoke run boots (the plan's control plane stays off on purpose) and their size.
BOOT = {"load-balancer": (1024, 1), "worker": (1536, 2)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", type=Path, default=HERE / "plans" / "smoke.yaml")
    p.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "imagegen" / "vm-runs",
                   help="where run directories go")
    p.add_argument("--spec", default="node", help="image spec to boot (built or taken from the cache)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with Session(suite="vm-smoke", run_name="smoke", runs=args.runs, plan=args.plan,
                 collect=scenario.collect) as session:
        report, run_dir = session.report, session.run_dir
        with session.phase("image"):
            image = build_image(load_spec(args.spec))
            report.image = str(image.qcow2)

        with session.phase("render"):
            key, pubkey = make_key(run_dir / "ssh")
            derived = derive_plan(args.plan, run_dir, pubkey)
            out = render(derived, run_dir)
            plan = load_plan(derived)  # the rendered plan, typed (render has validated it)

        lab = session.open_lab(probe_accel())
        with session.phase("define-and-start"):
            session.create_network(plan, "igvm")
            lbs = [n.name for n in plan.nodes if n.role == "load-balancer"]
            for n in plan.nodes:
                if n.role not in BOOT:
                    continue
                mem, cpus = BOOT[n.role]
                # The last load balancer boots from its OpenStack config drive instead of the NoCloud seed: the
                # same checks must pass whichever seed a node had.
                seed = f"{n.name}-configdrive.iso" if len(lbs) > 1 and n.name == lbs[-1] else f"{n.name}.iso"
                lab.add_node(name=n.name, role=n.role, ip=str(n.ip), mac=n.mac, image=image.qcow2,
                             seed=out / "seeds" / seed, memory_mib=mem, vcpus=cpus)
            for node in lab.nodes.values():
                lab.start(node)

        ctx = scenario.smoke_context(session, plan, out, key)
        for step in scenario.STEPS:
            step(ctx)
    return session.code


if __name__ == "__main__":
    sys.exit(main())
