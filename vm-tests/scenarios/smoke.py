"""vm-smoke's steps: load balancers and a worker that cannot join, booted from imagegen's image and seeds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from harness import guest
from harness.lab import Lab, Node
from harness.session import Failed, Session, SessionView
from harness.ssh import Ssh

from imagegen.plan import Plan

# Seconds, per phase, measured from each domain's start (TCG on 2 busy cores; KVM is far quicker).
DEADLINES = {"cloud-init-done": 720, "bootstrap": 300, "ssh": 180, "failover": 15, "reboot": 420}
# Steps that must succeed even though the join cannot: a failure there is a real failure, not the expected one.
MUST_PASS_STEPS = ("prepare", "install_runtime")


@dataclass
class SmokeContext(SessionView):
    session: Session
    plan: Plan
    out: Path  # imagegen render's output directory
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = list(self.lab.nodes.values())

    @property
    def lbs(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "load-balancer"]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "worker"]

    def expectations(self, node: Node) -> guest.Expectations:
        return guest.expectations_from_user_data((self.out / "nodes" / node.name / "user-data").read_text())


def smoke_context(session: Session, plan: Plan, out: Path, key: Path) -> SmokeContext:
    """The steps' context; every node gets its SSH helper (as the plan's admin user, with the run's key)."""
    ctx = SmokeContext(session, plan, out)
    for n in ctx.nodes:
        ctx.ssh_of[n.name] = Ssh(n.ip, plan.admin_user, key)
    return ctx


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


def wait_cloud_init(ctx: SmokeContext) -> None:
    with ctx.session.phase("cloud-init"):
        print("waiting for cloud-init on every node ...", flush=True)
        wait_markers(ctx.lab, ctx.nodes, {n.name: ("cloud-init-done",) for n in ctx.nodes},
                     DEADLINES["cloud-init-done"], "cloud-init")


def wait_bootstrap(ctx: SmokeContext) -> None:
    with ctx.session.phase("bootstrap"):
        print("waiting for the first-boot bootstrap result ...", flush=True)
        wait_markers(ctx.lab, ctx.nodes, {n.name: ("bootstrap-ok", "bootstrap-failed") for n in ctx.nodes},
                     DEADLINES["cloud-init-done"] + DEADLINES["bootstrap"], "bootstrap")


def wait_ssh(ctx: SmokeContext) -> None:
    with ctx.session.phase("ssh"):
        for n in ctx.nodes:
            if not ctx.ssh_of[n.name].wait_ready(time.monotonic() + DEADLINES["ssh"]):
                raise Failed(f"{n.name}: no SSH as {ctx.plan.admin_user}@{n.ip} within {DEADLINES['ssh']} s")
            n.note("ssh")


def prep_marker(n: Node) -> tuple[bool, str]:
    marker = n.scanner.markers.get("prep-ok")
    return marker is not None, marker.line if marker is not None else "no IMAGEGEN-PREP-OK on the console"


def expected_sentinel(node: Node) -> tuple[bool, str]:
    failed = node.scanner.markers.get("bootstrap-failed")
    if "bootstrap-ok" in node.scanner.markers:
        return False, "IMAGEGEN-BOOTSTRAP-OK although no control plane runs"
    if failed is None:
        return False, "no IMAGEGEN-BOOTSTRAP-FAILED (a join cannot succeed without a control plane)"
    step = failed.fields.get("step", "")
    ok = step not in MUST_PASS_STEPS
    return ok, (f"{failed.line}" if ok else f"failed too early, at {step}: {failed.line}")


def bootstrap_ok(n: Node) -> tuple[bool, str]:
    marker = n.scanner.markers.get("bootstrap-ok") or n.scanner.markers.get("bootstrap-failed")
    # wait_bootstrap saw one of the two before the checks run.
    return "bootstrap-ok" in n.scanner.markers, marker.line if marker is not None else "no bootstrap marker"


def seed_source(c: guest.Checker, n: Node) -> tuple[bool, str]:
    """cloud-init's datasource is the one the node's seed speaks: ConfigDrive for a config drive, else NoCloud."""
    want = "DataSourceConfigDrive" if n.seed is not None and n.seed.name.endswith("-configdrive.iso") else \
        "DataSourceNoCloud"
    code, out = c.sudo("grep -o 'DataSource[A-Za-z]*' /run/cloud-init/status.json | head -1")
    seed = n.seed.name if n.seed is not None else "-"
    return code == 0 and out.strip() == want, f"{out.strip() or 'no datasource'} (seed {seed})"


def worker_checks(c: guest.Checker, n: Node, exp: guest.Expectations, prefix: int) -> None:
    """A worker with no control plane to join (vm-smoke's, vm-pxe's network-installed one): prepared, then the
    expected join failure, and everything its user-data set up in effect."""
    c.check("node preparation marker (IMAGEGEN-PREP-OK)", partial(prep_marker, n))
    c.check("expected failure sentinel (join has no control plane)", partial(expected_sentinel, n),
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


def node_checks(ctx: SmokeContext) -> None:
    """The worker prepared itself and failed its join as expected; the load balancers serve the endpoint port."""
    prefix = ctx.plan.network.cidr.prefixlen
    port = ctx.plan.endpoint.port
    with ctx.session.phase("checks"):
        for n in ctx.workers:
            worker_checks(guest.Checker(n.name, ctx.ssh_of[n.name], ctx.report.checks), n, ctx.expectations(n),
                          prefix)
        for n in ctx.lbs:
            c = guest.Checker(n.name, ctx.ssh_of[n.name], ctx.report.checks)
            c.check("bootstrap finished (IMAGEGEN-BOOTSTRAP-OK)", partial(bootstrap_ok, n))
            guest.check_identity(c, n.name, n.ip, prefix)
            c.check(f"nginx listening on the endpoint port {port}", partial(guest.listening, c, port))
            c.check("cloud-init read the node's own seed", partial(seed_source, c, n))
            guest.check_cloud_init(c)


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


def vip_failover(ctx: SmokeContext) -> None:
    """Exactly one load balancer holds the VIP; it moves when keepalived, then nginx, stops on the holder."""
    lbs = ctx.lbs
    if len(lbs) != 2:
        return
    vip = str(ctx.plan.endpoint.vip)
    with ctx.session.phase("failover"):
        t = time.monotonic()
        pairs = [(n, ctx.ssh_of[n.name]) for n in lbs]
        # VRRP needs a few adverts after keepalived starts before one node settles as master.
        settle = time.monotonic() + 20
        while True:
            holders = [n.name for n, s in pairs if guest.holds_vip(s, vip)]
            if len(holders) == 1 or time.monotonic() > settle:
                break
            time.sleep(1)
        ok = len(holders) == 1
        ctx.report.checks.append(guest.Check("load-balancers", f"exactly one node holds the VIP {vip}", ok,
                                             f"holders: {holders or 'none'}", round(time.monotonic() - t, 1)))
        print(f"  [{'ok  ' if ok else 'FAIL'}] load-balancers: exactly one VIP holder: {holders}", flush=True)
        if ok:
            failover(pairs, vip, "keepalived", ctx.report.checks)
            failover(pairs, vip, "nginx", ctx.report.checks)
        for n in lbs:
            n.note("checks")


def worker_reboot(ctx: SmokeContext) -> None:
    """With a swap file in fstab, swap stays off after a reboot; modules and sysctls come back."""
    with ctx.session.phase("reboot"):
        for n in ctx.workers:
            ssh = ctx.ssh_of[n.name]
            c = guest.Checker(n.name, ssh, ctx.report.checks)
            exp = ctx.expectations(n)
            c.check("swap file added to /etc/fstab before reboot", partial(guest.add_swapfile, c))
            n.note("reboot")
            ssh.run("sudo systemctl reboot", timeout=15)
            ssh.wait_down(time.monotonic() + 60)
            if not ssh.wait_ready(time.monotonic() + DEADLINES["reboot"]):
                raise Failed(f"{n.name}: no SSH within {DEADLINES['reboot']} s after the reboot")
            n.note("ssh")
            guest.check_swap_off(c, "after reboot, with a swap file in fstab")
            guest.check_modules(c, exp.modules)
            guest.check_sysctls(c, exp.sysctls)


STEPS: tuple[Callable[[SmokeContext], None], ...] = (
    wait_cloud_init, wait_bootstrap, wait_ssh, node_checks, vip_failover, worker_reboot)


def pull_guest_logs(node: Node, ssh: Ssh, run_dir: Path) -> None:
    guest.pull_logs(ssh, run_dir / "guest-logs" / node.name,
                    {**guest.BASE_LOGS, "cloud-init-status.txt": "sudo cloud-init status --long"}, timeout=60)


def collect(session: Session) -> None:
    """Teardown hook: a failed run keeps the guest logs of every node still answering (an interrupted run wants to
    stop, not to collect)."""
    lab = session.lab
    if lab is None or session.report.result != "failed":
        return
    for node in lab.nodes.values():
        ssh = session.ssh_of.get(node.name)
        if ssh is not None and lab.is_running(node) and ssh.run("true", timeout=10, connect_timeout=3).ok:
            pull_guest_logs(node, ssh, session.run_dir)
    lab.poll()
