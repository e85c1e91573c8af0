#!/usr/bin/env python3
"""make vm-smoke: boot imagegen's own seeds on imagegen's own image and check the nodes from inside.

Plan vm-tests/plans/smoke.yaml: two load balancers (nginx stream + keepalived VIP) and one worker whose join has
nowhere to go (its control plane is never booted, no bundle disk): the worker must prepare itself and then print
the expected IMAGEGEN-BOOTSTRAP-FAILED sentinel. Checks: identity, modules, sysctls, swap (also after a reboot
with a swap file in fstab), journald, Docker's effective settings, cloud-init status; nginx on the endpoint port,
exactly one VIP holder, VIP failover and back on stopping keepalived and then nginx.

Always cleans up domains, network, firewall rule and overlays; the run directory (report.json, timeline.svg,
serial consoles, seeds, pulled guest logs on failure) is printed at the end. Exit 0 passed, 1 failed, 2 bad
input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import yaml  # noqa: E402
from harness import guest  # noqa: E402
from harness.daemons import connect  # noqa: E402
from harness.lab import Lab, LabError, Node  # noqa: E402
from harness.memory import MemorySampler  # noqa: E402
from harness.report import RunReport  # noqa: E402
from harness.ssh import Ssh, make_key  # noqa: E402
from harness.xml import HostEntry, NetworkSpec  # noqa: E402

from imagegen.errors import UsageError  # noqa: E402
from imagegen.image.build import build_image, load_spec  # noqa: E402
from imagegen.image.qemu import probe_accel  # noqa: E402

# Seconds, per phase, measured from each domain's start (TCG on 2 busy cores; KVM is far quicker).
DEADLINES = {"cloud-init-done": 720, "bootstrap": 300, "ssh": 180, "failover": 15, "reboot": 420}
# Nodes the smoke run boots (the plan's control plane stays off on purpose) and their size.
BOOT = {"load-balancer": (1024, 1), "worker": (1536, 2)}


class Failed(Exception):
    pass


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def derive_plan(plan_path: Path, run_dir: Path, pubkey: str) -> Path:
    """Copy of the plan with this run's SSH key added; the original plan is never touched."""
    data = yaml.safe_load(plan_path.read_text())
    data["ssh_authorized_keys"] = [*(data.get("ssh_authorized_keys") or []), pubkey]
    derived = run_dir / "plan.yaml"
    derived.write_text(f"# derived from {plan_path} by vm-tests/smoke.py: adds this run's SSH key\n"
                       + yaml.safe_dump(data, sort_keys=False))
    return derived


def render(plan: Path, run_dir: Path) -> Path:
    out = run_dir / "render"
    cmd = [sys.executable, "-m", "imagegen", "render", str(plan), "--out", str(out), "--state",
           str(run_dir / "state")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    (run_dir / "render.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise Failed(f"imagegen render failed ({done.returncode}): {(done.stdout + done.stderr).strip()[-800:]}")
    return out


def wait_markers(lab: Lab, nodes: list[Node], want: dict[str, tuple[str, ...]], deadline_s: float,
                 what: str) -> None:
    """Poll consoles until every node shows one of its wanted marker kinds, or fail on deadline/fatal output."""
    while True:
        for node, marker in lab.poll():
            print(f"  {node.name:<16} {node.since_start():6.1f}s  {marker.kind}: {marker.line[:110]}", flush=True)
        pending = [n for n in nodes if not any(k in n.scanner.markers for k in want[n.name])]
        if not pending:
            return
        for n in pending:
            if n.scanner.fatal:
                raise Failed(f"{n.name}: fatal console output while waiting for {what}: {n.scanner.fatal[0]}")
            if not lab.is_running(n):
                raise Failed(f"{n.name}: domain stopped while waiting for {what}")
            if n.since_start() > deadline_s:
                raise Failed(f"{n.name}: no {'/'.join(want[n.name])} marker within {deadline_s:.0f} s "
                             f"({what}); console: {n.serial_log}")
        time.sleep(1)


def failover(lbs: list[tuple[Node, Ssh]], vip: str, stop: str, checks: list[guest.Check]) -> None:
    """Stop `stop` on the VIP holder: the other must take the VIP within the deadline; start it: and back."""
    holders = [(n, s) for n, s in lbs if guest.holds_vip(s, vip)]
    name = f"VIP moves when {stop} stops on the holder, and back"
    t0 = time.monotonic()
    if len(holders) != 1:
        checks.append(guest.Check("load-balancers", name, False, f"{len(holders)} holders before the test", 0.0))
        return
    (holder, hs), = holders
    (other, os_), = [(n, s) for n, s in lbs if n is not holder]
    hs.run(f"sudo systemctl stop {stop}")
    stopped_at = time.monotonic()
    moved = None
    while time.monotonic() - stopped_at < DEADLINES["failover"]:
        if guest.holds_vip(os_, vip) and not guest.holds_vip(hs, vip):
            moved = round(time.monotonic() - stopped_at, 1)
            break
        time.sleep(0.2)
    hs.run(f"sudo systemctl start {stop}")
    started_at = time.monotonic()
    back = None
    # Preemption by the higher priority; allow for keepalived's start and the health check's rise (2 x 2 s).
    while time.monotonic() - started_at < DEADLINES["failover"] + 10:
        if guest.holds_vip(hs, vip) and not guest.holds_vip(os_, vip):
            back = round(time.monotonic() - started_at, 1)
            break
        time.sleep(0.2)
    if back is None:
        # No preemption configured: moving back means failing over the other way.
        os_.run(f"sudo systemctl stop {stop}")
        t1 = time.monotonic()
        while time.monotonic() - t1 < DEADLINES["failover"]:
            if guest.holds_vip(hs, vip):
                back = round(time.monotonic() - t1, 1)
                break
            time.sleep(0.2)
        os_.run(f"sudo systemctl start {stop}")
    ok = moved is not None and back is not None
    detail = (f"holder {holder.name}; {stop} stopped -> VIP on {other.name} after "
              f"{moved if moved is not None else 'never (>' + str(DEADLINES['failover']) + ' s)'} s; "
              f"{stop} started -> VIP back on {holder.name} after {back if back is not None else 'never'} s")
    checks.append(guest.Check("load-balancers", name, ok, detail, round(time.monotonic() - t0, 1)))
    print(f"  [{'ok  ' if ok else 'FAIL'}] load-balancers: {name}: {detail}", flush=True)
    # Let VRRP settle before the next test.
    time.sleep(3)


# Steps that must succeed even though the join cannot: a failure there is a real failure, not the expected one.
MUST_PASS_STEPS = ("prepare", "install_runtime")


def expected_sentinel(node: Node) -> tuple[bool, str]:
    failed = node.scanner.markers.get("bootstrap-failed")
    if "bootstrap-ok" in node.scanner.markers:
        return False, "IMAGEGEN-BOOTSTRAP-OK although no control plane runs"
    if failed is None:
        return False, "no IMAGEGEN-BOOTSTRAP-FAILED (a join cannot succeed without a control plane)"
    step = failed.fields.get("step", "")
    ok = step not in MUST_PASS_STEPS
    return ok, (f"{failed.line}" if ok else f"failed too early, at {step}: {failed.line}")


def pull_guest_logs(node: Node, ssh: Ssh, run_dir: Path) -> None:
    guest.pull_logs(ssh, run_dir / "guest-logs" / node.name,
                    {**guest.BASE_LOGS, "cloud-init-status.txt": "sudo cloud-init status --long"}, timeout=60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", type=Path, default=HERE / "plans" / "smoke.yaml")
    p.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "imagegen" / "vm-runs",
                   help="where run directories go")
    p.add_argument("--spec", default="node", help="image spec to boot (built or taken from the cache)")
    args = p.parse_args(argv)

    wall0 = time.monotonic()
    run_id = time.strftime("%m%d%H%M%S") + secrets.token_hex(2)
    run_dir = args.runs / f"smoke-{run_id}"
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o700)  # holds the run's SSH key and the rendered seeds' secrets
    # Ctrl-C must always interrupt, even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)
    report = RunReport(run_id=run_id, plan=str(args.plan), image="", accel="", started_at=time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    lab: Lab | None = None
    ssh_of: dict[str, Ssh] = {}
    code = 1
    try:
        t = time.monotonic()
        print(f"vm-smoke run {run_id}: {run_dir}", flush=True)
        image = build_image(load_spec(args.spec))
        report.image = str(image.qcow2)
        report.phases["image"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        key, pubkey = make_key(run_dir / "ssh")
        plan_data = yaml.safe_load(args.plan.read_text())
        out = render(derive_plan(args.plan, run_dir, pubkey), run_dir)
        report.phases["render"] = round(time.monotonic() - t, 1)

        accel = probe_accel()
        report.accel = accel
        conn = connect(report.setup_log)
        net = plan_data["network"]
        cidr = ipaddress.ip_network(net["cidr"])
        nodes_cfg = [n for n in plan_data["nodes"] if n["role"] in BOOT]
        lab = Lab(conn, run_dir, run_id, accel, report.setup_log)
        with MemorySampler(lab.qemu_pids) as memory:
            t = time.monotonic()
            lab.create_network(NetworkSpec(
                name=f"imagegen-{run_id}", bridge=f"igvm{run_id[-6:]}", cidr=str(cidr), gateway=net["gateway"],
                hosts=tuple(HostEntry(n["mac"], n["ip"], n["name"]) for n in plan_data["nodes"])))
            for n in nodes_cfg:
                mem, cpus = BOOT[n["role"]]
                lab.add_node(name=n["name"], role=n["role"], ip=n["ip"], mac=n["mac"], image=image.qcow2,
                             seed=out / "seeds" / f"{n['name']}.iso", memory_mib=mem, vcpus=cpus)
            for node in lab.nodes.values():
                lab.start(node)
            report.phases["define-and-start"] = round(time.monotonic() - t, 1)

            admin = plan_data.get("admin_user", "ops")
            try:
                run_checks(lab, report, plan_data, out, key, admin, cidr.prefixlen, ssh_of, run_dir)
            finally:
                report.memory = memory.summary()
        code = report.conclude()
    except (KeyboardInterrupt, Exception) as exc:  # a crashed harness must still clean up and report
        code = report.record_exception(exc, usage=(UsageError,), expected=(Failed, LabError))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        try:
            if lab is not None:
                if report.result == "failed":  # an interrupted run wants to stop, not to collect
                    for node in lab.nodes.values():
                        ssh = ssh_of.get(node.name)
                        if ssh is not None and lab.is_running(node) and ssh.run("true", timeout=10,
                                                                                connect_timeout=3).ok:
                            pull_guest_logs(node, ssh, run_dir)
                    lab.poll()
                report.add_nodes(lab.nodes.values())
                report.cleanup_problems = lab.close()
            shutil.rmtree(run_dir / "state", ignore_errors=True)  # the test cluster's CA keys: not worth keeping
            report.wall_seconds = round(time.monotonic() - wall0, 1)
            report_path, svg = report.write(run_dir)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    print(report.summary("vm-smoke", report_path, svg, run_dir), flush=True)
    return code


def run_checks(lab: Lab, report: RunReport, plan: dict, out: Path, key: Path, admin: str, prefix: int,
               ssh_of: dict[str, Ssh], run_dir: Path) -> None:
    nodes = list(lab.nodes.values())
    lbs = [n for n in nodes if n.role == "load-balancer"]
    workers = [n for n in nodes if n.role == "worker"]
    for n in nodes:
        ssh_of[n.name] = Ssh(n.ip, admin, key)

    t = time.monotonic()
    print("waiting for cloud-init on every node ...", flush=True)
    wait_markers(lab, nodes, {n.name: ("cloud-init-done",) for n in nodes}, DEADLINES["cloud-init-done"],
                 "cloud-init")
    report.phases["cloud-init"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    print("waiting for the first-boot bootstrap result ...", flush=True)
    wait_markers(lab, nodes, {n.name: ("bootstrap-ok", "bootstrap-failed") for n in nodes},
                 DEADLINES["cloud-init-done"] + DEADLINES["bootstrap"], "bootstrap")
    report.phases["bootstrap"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    for n in nodes:
        if not ssh_of[n.name].wait_ready(time.monotonic() + DEADLINES["ssh"]):
            raise Failed(f"{n.name}: no SSH as {admin}@{n.ip} within {DEADLINES['ssh']} s")
        n.note("ssh")
    report.phases["ssh"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    vip = str(plan["endpoint"]["vip"])
    port = int(plan["endpoint"].get("port", 6443))
    for n in workers:
        c = guest.Checker(n.name, ssh_of[n.name], report.checks)
        exp = guest.expectations_from_user_data((out / "nodes" / n.name / "user-data").read_text())
        c.check("node preparation marker (IMAGEGEN-PREP-OK)", lambda n=n: (
            "prep-ok" in n.scanner.markers, n.scanner.markers["prep-ok"].line if "prep-ok" in n.scanner.markers
            else "no IMAGEGEN-PREP-OK on the console"))
        c.check("expected failure sentinel (join has no control plane)", lambda n=n: expected_sentinel(n),
                expected_failure=True)
        guest.check_identity(c, n.name, n.ip, prefix)
        guest.check_modules(c, exp.modules)
        guest.check_sysctls(c, exp.sysctls)
        guest.check_swap_off(c, "first boot")
        guest.check_journald(c, exp.journald_dropins)
        if exp.docker_daemon is not None:
            guest.check_docker(c, exp.docker_daemon)
        if exp.containerd_config:
            guest.check_containerd(c)
        guest.check_kube_packages_held(c)
        guest.check_cloud_init(c)
    for n in lbs:
        c = guest.Checker(n.name, ssh_of[n.name], report.checks)
        c.check("bootstrap finished (IMAGEGEN-BOOTSTRAP-OK)", lambda n=n: (
            "bootstrap-ok" in n.scanner.markers,
            (n.scanner.markers.get("bootstrap-ok") or n.scanner.markers.get("bootstrap-failed")).line))
        guest.check_identity(c, n.name, n.ip, prefix)
        c.check(f"nginx listening on the endpoint port {port}", lambda c=c: guest.listening(c, port))
        guest.check_cloud_init(c)
    report.phases["checks"] = round(time.monotonic() - t, 1)

    if len(lbs) == 2:
        t = time.monotonic()
        pairs = [(n, ssh_of[n.name]) for n in lbs]
        # VRRP needs a few adverts after keepalived starts before one node settles as master.
        settle = time.monotonic() + 20
        while True:
            holders = [n.name for n, s in pairs if guest.holds_vip(s, vip)]
            if len(holders) == 1 or time.monotonic() > settle:
                break
            time.sleep(1)
        ok = len(holders) == 1
        report.checks.append(guest.Check("load-balancers", f"exactly one node holds the VIP {vip}", ok,
                                         f"holders: {holders or 'none'}", round(time.monotonic() - t, 1)))
        print(f"  [{'ok  ' if ok else 'FAIL'}] load-balancers: exactly one VIP holder: {holders}", flush=True)
        if ok:
            failover(pairs, vip, "keepalived", report.checks)
            failover(pairs, vip, "nginx", report.checks)
        for n in lbs:
            n.note("checks")
        report.phases["failover"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    for n in workers:
        c = guest.Checker(n.name, ssh_of[n.name], report.checks)
        exp = guest.expectations_from_user_data((out / "nodes" / n.name / "user-data").read_text())
        c.check("swap file added to /etc/fstab before reboot", lambda c=c: guest.add_swapfile(c))
        n.note("reboot")
        ssh_of[n.name].run("sudo systemctl reboot", timeout=15)
        ssh_of[n.name].wait_down(time.monotonic() + 60)
        if not ssh_of[n.name].wait_ready(time.monotonic() + DEADLINES["reboot"]):
            raise Failed(f"{n.name}: no SSH within {DEADLINES['reboot']} s after the reboot")
        n.note("ssh")
        guest.check_swap_off(c, "after reboot, with a swap file in fstab")
        guest.check_modules(c, exp.modules)
        guest.check_sysctls(c, exp.sysctls)
    report.phases["reboot"] = round(time.monotonic() - t, 1)


if __name__ == "__main__":
    sys.exit(main())
