"""cluster-test from boot to a Ready cluster, and what every node must look like then."""

from __future__ import annotations

import time
from functools import partial

from harness import guest
from harness.lab import Node
from harness.session import Failed

from scenarios.cluster_context import DEADLINES, KUBE_VERSION, ClusterContext, log


def bootstrap_ok(n: Node) -> tuple[bool, str]:
    marker = n.scanner.markers.get("bootstrap-ok") or n.scanner.markers.get("bootstrap-failed")
    # wait_bootstrap saw one of the two before the checks run.
    return "bootstrap-ok" in n.scanner.markers, marker.line if marker is not None else "no bootstrap marker"


def wait_bootstrap(ctx: ClusterContext) -> None:
    """Every node's first boot ends with a bootstrap marker; every Kubernetes node's with IMAGEGEN-BOOTSTRAP-OK."""
    lab, nodes, kube = ctx.lab, ctx.nodes, ctx.kube
    log("waiting for the first-boot bootstrap on every node ...")
    deadline = DEADLINES["bootstrap"]
    while True:
        for node, marker in lab.poll():
            log(f"  {node.name:<16} {node.since_start():6.1f}s  {marker.kind}: {marker.line[:120]}")
        pending = [n for n in nodes if not {"bootstrap-ok", "bootstrap-failed"} & set(n.scanner.markers)]
        if not pending:
            break
        for n in pending:
            if n.scanner.fatal:
                raise Failed(f"{n.name}: fatal console output: {n.scanner.fatal[0]}")
            if not lab.is_running(n):
                raise Failed(f"{n.name}: domain stopped while bootstrapping")
            if n.since_start() > deadline:
                raise Failed(f"{n.name}: no bootstrap marker within {deadline} s; console: {n.serial_log}")
        time.sleep(1)
    ctx.report.phases["boot-to-all-bootstrap-markers"] = round(time.monotonic() - ctx.t_boot, 1)
    for n in nodes:
        ctx.rec.check(n.name, "first boot ends with IMAGEGEN-BOOTSTRAP-OK", partial(bootstrap_ok, n))
    if any("bootstrap-ok" not in n.scanner.markers for n in kube):
        raise Failed("a Kubernetes node failed its bootstrap: " + "; ".join(
            n.scanner.markers["bootstrap-failed"].line for n in kube if "bootstrap-failed" in n.scanner.markers))


def all_ready(ctx: ClusterContext) -> None:
    """Every Kubernetes node Ready, from the host through the VIP."""
    t = time.monotonic()
    t_boot, vip = ctx.t_boot, ctx.vip
    want = {n.name for n in ctx.kube}
    ready: dict[str, bool] = {}
    while time.monotonic() - t < DEADLINES["ready"]:
        ctx.lab.poll()
        ready = ctx.kubectl.node_ready()
        if want <= {k for k, v in ready.items() if v}:
            break
        time.sleep(5)
    for n in ctx.kube:
        if ready.get(n.name):
            n.note("ready")
    ctx.report.phases["boot-to-all-ready"] = round(time.monotonic() - t_boot, 1)
    ok = want <= {k for k, v in ready.items() if v}
    ctx.rec.check("cluster", f"every Kubernetes node Ready (kubectl via VIP {vip})", lambda: (
        ok, f"{ready} after {time.monotonic() - t_boot:.0f} s from boot"))
    if not ok:
        raise Failed(f"nodes not Ready within {DEADLINES['ready']} s after their bootstraps: {ready}")


def wait_ssh(ctx: ClusterContext) -> None:
    for n in ctx.nodes:
        if not ctx.ssh_of[n.name].wait_ready(time.monotonic() + DEADLINES["ssh"]):
            raise Failed(f"{n.name}: no SSH as {ctx.plan.admin_user}@{n.ip}")
        n.note("ssh")


def bootstrap_done(c: guest.Checker) -> tuple[bool, str]:
    code, out = c.sudo("cat /var/lib/imagegen/bootstrap.done")
    return code == 0, out


def versions(c: guest.Checker) -> tuple[bool, str]:
    _, o = c.sudo("kubeadm version -o short; kubelet --version; kubectl version --client --short")
    got = o.split()
    return o.count(KUBE_VERSION) == 3, " / ".join(ln.strip() for ln in o.splitlines()) or str(got)


def docker_cgroup(c: guest.Checker) -> tuple[bool, str]:
    _, o = c.sudo("grep -E '^cgroupDriver:' /var/lib/kubelet/config.yaml; "
                  "docker info --format 'docker={{.CgroupDriver}}'")
    return "cgroupDriver: systemd" in o and "docker=systemd" in o, " ".join(o.split())


def containerd_cgroup(c: guest.Checker) -> tuple[bool, str]:
    _, o = c.sudo("grep -E '^cgroupDriver:' /var/lib/kubelet/config.yaml")
    info, raw = guest.crictl_info(c)
    systemd = guest.dig(info, "config", "containerd", "runtimes", "runc", "options", "SystemdCgroup")
    return "cgroupDriver: systemd" in o and systemd is True, (
        f"{' '.join(o.split())}; crictl info runc SystemdCgroup={systemd}"
        + ("" if info else f" (crictl info failed: {raw[-200:]})"))


def node_checks(ctx: ClusterContext) -> None:
    """Bootstrap sentinel on every node; Kubernetes binaries, cgroup driver and runtime config on the Kubernetes
    nodes."""
    with ctx.session.phase("node-checks"):
        for n in ctx.nodes:
            c = ctx.checker(n)
            c.check("bootstrap sentinel /var/lib/imagegen/bootstrap.done", partial(bootstrap_done, c))
        for n in ctx.kube:
            c = ctx.checker(n)
            c.check(f"kubeadm, kubelet, kubectl at {KUBE_VERSION}", partial(versions, c))
            if ctx.runtime == "docker":
                c.check("systemd cgroup driver (kubelet config and docker info)", partial(docker_cgroup, c))
            else:
                c.check("systemd cgroup driver (kubelet config and containerd via crictl info)",
                        partial(containerd_cgroup, c))
                guest.check_cri_config(c, ctx.pause_image)
                guest.check_containerd_mirror(c, list(ctx.plan.cluster.registry_mirrors))
