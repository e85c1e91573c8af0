"""cluster-test's faults and day-2 operations: load balancer daemons stopped, a worker rebooted, a control plane
powered off (HA), an etcd snapshot, a rotated token applied, and a node joining with a wrong bootstrap token."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from harness import guest
from harness.console import Marker
from harness.lab import Lab, Node
from harness.session import Failed
from harness.ssh import Ssh

from imagegen import pki
from scenarios.cluster_context import DEADLINES, ClusterContext, Kubectl, Recorder, log

REPO = Path(__file__).resolve().parents[2]
ETCDCTL = ("ETCDCTL_API=3 etcdctl --cacert=/etc/kubernetes/pki/etcd/ca.crt "
           "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
           "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key")


def wrong_token_seed(plan: Path, run_dir: Path, badjoin: str) -> Path:
    """Seed for `badjoin` rendered from a copy of the state with another bootstrap token secret.

    The token id stays, only the secret changes: kubeadm then fails the cluster-info JWS check at once ("failed to
    verify JWS signature"); a different id would make kubeadm's discovery wait its full 5-minute timeout for a
    signature that never appears before failing with the same class of error."""
    bad_state = run_dir / "state-wrong-token"
    shutil.copytree(run_dir / "state", bad_state)
    token_file = bad_state / "bootstrap-token"
    good = token_file.read_text().strip()
    token_id = good.split(".", 1)[0]
    while True:
        other = pki.new_bootstrap_token().split(".", 1)[1]
        if other != good.split(".", 1)[1]:
            break
    token_file.write_text(f"{token_id}.{other}\n")
    token_file.chmod(0o600)
    out = run_dir / "render-wrong-token"
    cmd = [sys.executable, "-m", "imagegen", "render", str(plan), "--out", str(out), "--state", str(bad_state)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    (run_dir / "render-wrong-token.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise Failed(f"render with the wrong token failed ({done.returncode}): {(done.stdout + done.stderr)[-800:]}")
    return out / "seeds" / f"{badjoin}.iso"


# --- load balancers ------------------------------------------------------------------------------------------

def lb_failover(rec: Recorder, lbs: list[Node], ssh_of: dict[str, Ssh], vip: str, daemon: str,
                kubectl: Kubectl) -> None:
    """Stop `daemon` on the VIP holder: the VIP must move and `kubectl get nodes` through it keep answering."""
    settle = time.monotonic() + 30
    while True:
        holders = [n for n in lbs if guest.holds_vip(ssh_of[n.name], vip)]
        if len(holders) == 1 or time.monotonic() > settle:
            break
        time.sleep(1)
    name = f"{daemon} stopped on the VIP holder: VIP moves, API answers through it"
    if len(holders) != 1:
        rec.check("load-balancers", name, lambda: (False, f"{len(holders)} VIP holders before the fault"))
        return
    holder = holders[0]
    others = [n for n in lbs if n is not holder]
    hs = ssh_of[holder.name]

    def fn() -> tuple[bool, str]:
        hs.run(f"sudo systemctl stop {daemon}")
        t0 = time.monotonic()
        moved_to, moved = None, None
        while time.monotonic() - t0 < DEADLINES["failover"]:
            got = [o for o in others if guest.holds_vip(ssh_of[o.name], vip)]
            if got and not guest.holds_vip(hs, vip):
                moved_to, moved = got[0].name, round(time.monotonic() - t0, 1)
                break
            time.sleep(0.2)
        api = None
        api_out = ""
        while time.monotonic() - t0 < DEADLINES["api-after-failover"]:
            rc, api_out = kubectl.run("get", "nodes", "-o", "name")
            if rc == 0:
                api = round(time.monotonic() - t0, 1)
                break
            time.sleep(1)
        hs.run(f"sudo systemctl start {daemon}")
        time.sleep(8)  # keepalived start plus its health check's rise before the next fault
        ok = moved is not None and api is not None
        return ok, (f"holder {holder.name}; VIP on {moved_to or 'nobody else'} after {moved} s; "
                    f"kubectl get nodes via VIP ok after {api} s ({' '.join(api_out.split())[:120]}); "
                    f"{daemon} restarted on {holder.name}")
    rec.check("load-balancers", name, fn)


def lb_faults(ctx: ClusterContext) -> None:
    """keepalived, then nginx, stopped on the VIP holder (with two load balancers or more)."""
    if len(ctx.lbs) >= 2:
        for daemon in ("keepalived", "nginx"):
            with ctx.session.phase(f"fault-{daemon}"):
                lb_failover(ctx.rec, ctx.lbs, ctx.ssh_of, ctx.vip, daemon, ctx.kubectl)


# --- worker reboot -------------------------------------------------------------------------------------------

def reboot_worker(rec: Recorder, lab: Lab, worker: Node, ssh: Ssh, kubectl: Kubectl) -> None:
    c = guest.Checker(worker.name, ssh, rec.report.checks)
    runs_before = c.sudo("grep -c '] bootstrap of ' /var/log/imagegen/bootstrap.log")[1].strip()

    def fn() -> tuple[bool, str]:
        t0 = time.monotonic()
        worker.note("reboot")
        ssh.run("sudo systemctl reboot", timeout=15)
        ssh.wait_down(time.monotonic() + 90)
        # Ready must be seen false first where possible, so "Ready again" means after the reboot.
        if not ssh.wait_ready(time.monotonic() + DEADLINES["reboot"]):
            return False, f"no SSH within {DEADLINES['reboot']} s after the reboot"
        worker.note("ssh")
        back = None
        while time.monotonic() - t0 < DEADLINES["reboot"]:
            lab.poll()
            _, o = c.sudo("systemctl is-active kubelet")
            if o.strip() == "active" and kubectl.node_ready().get(worker.name):
                back = round(time.monotonic() - t0, 1)
                break
            time.sleep(5)
        if back is not None:
            worker.note("ready")
        _, runs = c.sudo("grep -c '] bootstrap of ' /var/log/imagegen/bootstrap.log")
        _, unit = c.sudo("systemctl show imagegen-bootstrap.service -p ActiveState -p ConditionResult "
                         "-p ExecMainStartTimestamp; journalctl -b --no-pager -u imagegen-bootstrap.service "
                         "| tail -3")
        once = runs.strip() == runs_before == "1"
        return back is not None and once, (f"Ready again {back} s after the reboot command; bootstrap runs in "
                                           f"bootstrap.log before/after: {runs_before}/{runs.strip()}; unit this "
                                           f"boot: {' '.join(unit.split())[:300]}")
    rec.check(worker.name, "reboot: Ready again, first-boot bootstrap not run again", fn)


def worker_reboot(ctx: ClusterContext) -> None:
    worker = ctx.workers[0]
    with ctx.session.phase("fault-worker-reboot"):
        reboot_worker(ctx.rec, ctx.lab, worker, ctx.ssh_of[worker.name], ctx.kubectl)


# --- control plane loss (HA) ---------------------------------------------------------------------------------

def lose_control_plane(rec: Recorder, lab: Lab, cps: list[Node], ssh_of: dict[str, Ssh], kubectl: Kubectl) -> None:
    """HA only: power off the last control plane. The API through the VIP keeps serving and the two remaining
    etcd members stay healthy and keep quorum (a write succeeds)."""
    gone, alive = cps[-1], cps[:-1]
    c = guest.Checker(alive[0].name, ssh_of[alive[0].name], rec.report.checks)

    def fn() -> tuple[bool, str]:
        lab.power_off(gone)
        t0 = time.monotonic()
        rc, out = kubectl.retry("get", "nodes", "-o", "name", deadline_s=DEADLINES["api-after-failover"])
        api = round(time.monotonic() - t0, 1) if rc == 0 else None
        endpoints = ",".join(f"https://{n.ip}:2379" for n in alive)
        etcd_ok, etcd_out = False, ""
        while time.monotonic() - t0 < DEADLINES["api-after-failover"] * 2:
            rc2, etcd_out = c.sudo(f"{ETCDCTL} --endpoints={endpoints} endpoint health && "
                                   f"{ETCDCTL} --endpoints={endpoints} put imagegen-cluster-test/probe {int(t0)}",
                                   timeout=90)
            etcd_ok = rc2 == 0 and etcd_out.count("is healthy") == len(alive) and "OK" in etcd_out
            if etcd_ok:
                break
            time.sleep(5)
        return api is not None and etcd_ok, (
            f"{gone.name} powered off; kubectl get nodes via VIP ok after {api} s "
            f"({' '.join(out.split())[:120]}); etcd on {', '.join(n.name for n in alive)}: "
            f"{' '.join(etcd_out.split())[-300:]}")
    rec.check("control-planes", f"one control plane ({gone.name}) powered off: API via VIP serves, etcd keeps quorum",
              fn)


def control_plane_loss(ctx: ClusterContext) -> None:
    if len(ctx.cps) >= 3:
        with ctx.session.phase("fault-control-plane-loss"):
            lose_control_plane(ctx.rec, ctx.lab, ctx.cps, ctx.ssh_of, ctx.kubectl)


# --- wrong-token join, with the etcd snapshot and day 2 while it installs -------------------------------------

def start_wrong_token(ctx: ClusterContext) -> None:
    """The wrong-token node boots now (unless it booted with the cluster); the next steps run while it installs."""
    ctx.t_bad = time.monotonic()
    for b in ctx.bad:
        if b.tail is None:
            log(f"starting {b.name} (seeded with a wrong bootstrap token secret) ...")
            ctx.lab.start(b)


def snapshot(c: guest.Checker) -> tuple[bool, str]:
    rc, o = c.sudo("systemctl start imagegen-etcd-snapshot.service && "
                   "f=$(ls -t /var/backups/etcd/snapshot-*.db | head -1) && echo \"file=$f\" && "
                   "ETCDCTL_API=3 etcdctl snapshot status \"$f\" -w json", timeout=180)
    ok = rc == 0 and '"hash"' in o and '"totalKey"' in o
    return ok, " ".join(o.split())[-400:]


def etcd_snapshot(ctx: ClusterContext) -> None:
    with ctx.session.phase("fault-etcd-snapshot"):
        c = ctx.checker(ctx.cps[0])
        c.check("etcd snapshot service leaves a snapshot etcdctl snapshot status accepts", partial(snapshot, c))


def token_apply_check(run_dir: Path, out: Path, kube: Kubectl) -> tuple[bool, str]:
    """A rotated token in a copy of the run's state, put into the running cluster with the rendered admin.conf:
    the Secret kubeadm's discovery looks up must exist with both usages and an expiration."""
    state = run_dir / "state-day2"
    shutil.rmtree(state, ignore_errors=True)
    shutil.copytree(run_dir / "state", state)
    plan = run_dir / "plan.yaml"
    imagegen = [sys.executable, "-m", "imagegen"]
    done = subprocess.run([*imagegen, "token", "rotate", str(plan), "--state", str(state)], capture_output=True,
                          text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        return False, f"token rotate: {(done.stdout + done.stderr).strip()[-300:]}"
    token_id = (state / "bootstrap-token").read_text().split(".", 1)[0]
    done = subprocess.run([*imagegen, "token", "apply", str(plan), "--state", str(state), "--kubeconfig",
                           str(out / "admin.conf"), "--kubectl", kube.base[0], "--ttl", "1h"],
                          capture_output=True, text=True, cwd=REPO, check=False, timeout=300)
    if done.returncode != 0:
        return False, f"token apply: {(done.stdout + done.stderr).strip()[-300:]}"
    code, o = kube.retry("-n", "kube-system", "get", "secret", f"bootstrap-token-{token_id}", "-o", "json",
                         accept=lambda text: '"bootstrap.kubernetes.io/token"' in text)
    if code != 0:
        return False, o[-300:]
    data = json.loads(o)["data"]
    usages = {k for k in data if k.startswith("usage-bootstrap-")}
    ok = usages == {"usage-bootstrap-authentication", "usage-bootstrap-signing"} and "expiration" in data
    return ok, f"secret bootstrap-token-{token_id}: usages {sorted(usages)}, expiration {'expiration' in data}"


def day2_token_apply(ctx: ClusterContext) -> None:
    with ctx.session.phase("day2-token-apply"):
        ctx.rec.check("cluster", "day 2: `imagegen token rotate` + `token apply` put the new token into the cluster",
                      partial(token_apply_check, ctx.run_dir, ctx.out, ctx.kubectl))


def rejected(b: Node, m: Marker | None) -> tuple[bool, str]:
    return (m is not None and m.fields.get("reason", "").strip() == "bootstrap-token-or-ca-hash-rejected"
            and "bootstrap-ok" not in b.scanner.markers,
            (m.line + f" (at {m.at:.0f} s after its start)") if m else
            f"no failure marker within {DEADLINES['badjoin']} s; markers {sorted(b.scanner.markers)}")


def not_a_cluster_node(b: Node, kubectl: Kubectl) -> tuple[bool, str]:
    rc, out = kubectl.retry("get", "nodes", "-o", "name")
    return rc == 0 and f"node/{b.name}" not in out.split(), f"kubectl nodes: {' '.join(out.split())}"


def wrong_token_result(ctx: ClusterContext) -> None:
    """The wrong-token node fails its join with the reason kubeadm gives, and never becomes a cluster node."""
    lab, rec = ctx.lab, ctx.rec
    for b in ctx.bad:
        while not {"bootstrap-ok", "bootstrap-failed"} & set(b.scanner.markers):
            for node, marker in lab.poll():
                log(f"  {node.name:<16} {node.since_start():6.1f}s  {marker.kind}: {marker.line[:120]}")
            if b.since_start() > DEADLINES["badjoin"] or not lab.is_running(b) or b.scanner.fatal:
                break
            time.sleep(2)
        m = b.scanner.markers.get("bootstrap-failed")
        rec.check(b.name, "wrong bootstrap token: IMAGEGEN-BOOTSTRAP-FAILED reason=bootstrap-token-or-ca-hash-rejected",
                  partial(rejected, b, m), expected_failure=True)
        rec.check(b.name, "wrong-token node did not become a cluster node", partial(not_a_cluster_node, b, ctx.kubectl))
    ctx.report.phases["fault-wrong-token"] = round(time.monotonic() - ctx.t_bad, 1)
