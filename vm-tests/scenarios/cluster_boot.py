"""cluster-test from boot to a Ready cluster, and what every node must look like then."""

from __future__ import annotations

import hashlib
import re
import time
from functools import partial
from pathlib import Path

from harness import guest
from harness.lab import Node
from harness.session import Failed

from imagegen.image.content import BUNDLE_DIR
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
    noted: set[str] = set()
    while time.monotonic() - t < DEADLINES["ready"]:
        ctx.lab.poll()
        ready = ctx.kubectl.node_ready()
        for n in ctx.kube:  # each node's own time and guest CPU seconds to Ready, as it gets there
            if ready.get(n.name) and n.name not in noted:
                noted.add(n.name)
                n.note("ready")
                cpu = ctx.lab.cpu_seconds(n)
                if cpu is not None:
                    n.cpu["ready"] = cpu
        if want <= {k for k, v in ready.items() if v}:
            break
        time.sleep(5)
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


# Conffiles of the packages a stock image installs at first boot: imagegen's version must survive the install.
PACKAGE_CONFFILES = ("/etc/nginx/nginx.conf", "/etc/keepalived/keepalived.conf", "/etc/containerd/config.toml")


def files_as_rendered(c: guest.Checker, user_data: str) -> tuple[bool, str]:
    """imagegen's versions of the packages' configuration files are the ones on disk after the package install
    (sha256 against the node's own user-data), and nginx's loaded configuration has the stream block."""
    want = {p: hashlib.sha256(t.encode()).hexdigest() for p, t in guest.written_files(user_data).items()
            if p in PACKAGE_CONFFILES}
    if not want:
        return False, "none of the package configuration files in this node's user-data"
    code, out = c.sudo("sha256sum " + " ".join(sorted(want)) + "; command -v nginx >/dev/null && "
                       "nginx -T 2>/dev/null | grep -c '^stream' || true")
    got = {parts[1]: parts[0] for parts in (ln.split() for ln in out.splitlines()) if len(parts) == 2}
    differ = [p for p, digest in want.items() if got.get(p) != digest]
    stream = "/etc/nginx/nginx.conf" not in want or out.strip().splitlines()[-1:] != ["0"]
    return not differ and stream, (f"as rendered: {sorted(set(want) - set(differ))}; differ: {differ}"
                                   + ("" if stream else "; nginx -T shows no stream block"))


def apt_pinned(c: guest.Checker, version: str) -> tuple[bool, str]:
    """apt-cache policy: kubeadm, kubelet and kubectl installed at the plan's version, from a 1001 pin."""
    code, out = c.sudo("apt-cache policy kubeadm kubelet kubectl")
    installed = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.strip().startswith("Installed:")]
    pinned = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.strip().startswith("Candidate:")]
    ok = code == 0 and len(installed) == 3 and all(v.startswith(f"{version}-") for v in installed) \
        and "1001" in out and installed == pinned
    return ok, f"installed {installed}, candidates {pinned}, priority 1001 {'present' if '1001' in out else 'MISSING'}"


def node_checks(ctx: ClusterContext) -> None:
    """Bootstrap sentinel on every node; Kubernetes binaries, cgroup driver and runtime config on the Kubernetes
    nodes; on nodes from the image with the bundle baked in, images preloaded at image build."""
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
            if n.name in ctx.preloaded and ctx.bundle_dir is not None:
                c.check("every image archive of its role preloaded at image build, none imported (bootstrap.log)",
                        partial(images_preloaded, c, role_images(ctx.bundle_dir, n.role)))
        if ctx.plan.bundle.source == "online":  # a stock image: everything came from the package repositories
            version = str(ctx.plan.cluster.kubernetes_version)
            for n in ctx.nodes:
                c = ctx.checker(n)
                user_data = (ctx.out / "nodes" / n.name / "user-data").read_text()
                c.check("packages installed at first boot kept imagegen's configuration files (nginx.conf, "
                        "keepalived.conf, containerd config.toml as rendered)",
                        partial(files_as_rendered, c, user_data))
                if n in ctx.kube:
                    c.check("apt: Kubernetes packages at the plan's version from the 1001 pin",
                            partial(apt_pinned, c, version))
                    guest.check_kube_packages_held(c)


# --- where a node's images came from: preloaded into the image's containerd at image build, or the bundle disk ----

# cloud-init/node/bundle.sh.j2's BUNDLE_MOUNT: where a node mounts the bundle disk.
BUNDLE_DISK_MOUNT = "/mnt/imagegen-bundle"
# install_kubernetes logs where the bundle is, then one line per image archive of the node's role.
_BUNDLE_AT = re.compile(r"\] installing Kubernetes from the bundle at (\S+)$")
_IMAGE = re.compile(r"\] image (\S+): (preloaded at image build, not imported|importing)$")


def bundle_image_lines(c: guest.Checker) -> tuple[str, set[str], set[str], str]:
    """(bundle directory, archives logged as preloaded, archives logged as imported, raw lines) from the node's
    bootstrap.log."""
    _, out = c.sudo("grep -h -e '] installing Kubernetes from the bundle at ' -e '] image ' "
                    "/var/log/imagegen/bootstrap.log")
    where, preloaded, imported = "", set[str](), set[str]()
    for line in out.splitlines():
        if m := _BUNDLE_AT.search(line):
            where = m.group(1)
        elif m := _IMAGE.search(line):
            (preloaded if m.group(2).startswith("preloaded") else imported).add(m.group(1))
    return where, preloaded, imported, out


def role_images(bundle_dir: Path, role: str) -> set[str]:
    """The image archives the bundle's node list names for the role (what install_kubernetes goes through)."""
    name = "images-worker.list" if role == "worker" else "images-control-plane.list"
    return {ln.strip() for ln in (bundle_dir / "node" / name).read_text().splitlines() if ln.strip()}


def images_preloaded(c: guest.Checker, want: set[str]) -> tuple[bool, str]:
    where, preloaded, imported, out = bundle_image_lines(c)
    ok = where == BUNDLE_DIR and preloaded == want and not imported
    return ok, (f"bundle at {where or '?'}; preloaded {sorted(preloaded)}; imported {sorted(imported)}; "
                f"the role's list {sorted(want)}" + ("" if ok else f"; log lines: {out[-600:]}"))


def images_imported_from_disk(c: guest.Checker, want: set[str]) -> tuple[bool, str]:
    where, preloaded, imported, out = bundle_image_lines(c)
    ok = where == BUNDLE_DISK_MOUNT and imported == want and not preloaded
    return ok, (f"bundle at {where or '?'}; imported {sorted(imported)}; preloaded {sorted(preloaded)}; "
                f"the role's list {sorted(want)}" + ("" if ok else f"; log lines: {out[-600:]}"))


def bad_join_imported_from_disk(ctx: ClusterContext) -> None:
    """The wrong-token node (plain image + bundle disk) ran install_kubernetes before its join failed: it imported
    every archive of its role's list from the disk, so the disk-delivered import stays proven beside the preload.
    Runs only when the others booted the baked image (with the disk everywhere, every node proves it anyway)."""
    if ctx.bundle_dir is None or not ctx.preloaded:
        return
    with ctx.session.phase("bad-join-imports"):
        for b in ctx.bad:
            if b.name in ctx.preloaded:
                continue
            c = ctx.checker(b)
            c.check("every image archive of its role imported from the bundle disk, none preloaded (bootstrap.log)",
                    partial(images_imported_from_disk, c, role_images(ctx.bundle_dir, b.role)))
