#!/usr/bin/env python3
"""make cluster-test: VMs booted from imagegen's own image, seeds and offline bundle disk form a real kubeadm cluster.

Plan vm-tests/plans/cluster.yaml (containerd; --docker: cluster-docker.yaml, the same cluster on Docker; --ha:
cluster-ha.yaml): two load balancers (nginx stream + keepalived VIP), the
control plane(s), one worker, and a "badjoin" worker booted from a seed rendered against a copy of the state whose
bootstrap token secret was replaced: its join must be rejected. No network beyond this host: the lab network rejects
forwarding out of its bridge and the Kubernetes bits come from the bundle disk.

Checks: every Kubernetes node Ready (kubectl on the host through the VIP with the rendered admin.conf), bootstrap
sentinel on every node, a busybox workload from the bundle on the worker answering through a ClusterIP Service from
the control plane, kube-proxy in ipvs mode, systemd cgroup driver (kubelet, and Docker or containerd as `crictl
info` reports it), v1.20.2 binaries everywhere. With containerd also: `crictl info` shows the plan's pause image as
the sandbox image, the workload pod's sandbox runs that image, and the registry mirror's hosts.toml is in effect
(containerd's effective config_path).
Faults: keepalived and then nginx stopped on the VIP holder (VIP moves, the API keeps answering through it), worker
reboot (Ready again, bootstrap not run again), the wrong-token join, an etcd snapshot accepted by etcdctl.

Exit 0 passed, 1 failed, 2 bad input, 130 interrupted. The run directory is printed at the end.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import yaml  # noqa: E402
from harness import guest  # noqa: E402
from harness.daemons import connect  # noqa: E402
from harness.lab import Lab, LabError, Node  # noqa: E402
from harness.memory import MemorySampler  # noqa: E402
from harness.report import Check, RunReport  # noqa: E402
from harness.ssh import Ssh, make_key  # noqa: E402
from harness.xml import HostEntry, NetworkSpec  # noqa: E402
from smoke import Failed, derive_plan, render  # noqa: E402

from imagegen import kubeadm, pki  # noqa: E402
from imagegen.errors import UsageError  # noqa: E402
from imagegen.image.build import build_image, load_spec  # noqa: E402
from imagegen.image.qemu import probe_accel  # noqa: E402
from imagegen.plan import load_plan  # noqa: E402

BUNDLE = Path.home() / ".cache" / "imagegen" / "bundle" / "current"
# Seconds, measured from each domain's start (TCG on 2 shared cores). The reference 1+1 cluster took ~6 min.
DEADLINES = {"cloud-init-done": 900, "bootstrap": 1500, "ready": 600, "ssh": 180, "failover": 30,
             "api-after-failover": 120, "reboot": 600, "badjoin": 1200, "workload": 300, "service": 180,
             "kubectl": 120}
# (MiB, vCPUs). The control plane gets 2 vCPUs: the measured reference; with 1 vCPU kubeadm init under TCG risks
# its 4-minute wait for the API server. Workers stay above kubeadm's 1700 MB recommendation.
SIZES = {"load-balancer": (1024, 1), "control-plane": (2560, 2), "worker": (1792, 1)}
KUBE_VERSION = "v1.20.2"
BUSYBOX = "imagegen.local/busybox:1"


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def log(text: str) -> None:
    print(text, flush=True)


def other_vms() -> list[str]:
    """qemu processes already running on this host (zombies left by earlier runs do not count)."""
    done = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=False)
    return [ln.strip()[:100] for ln in done.stdout.splitlines()
            if "qemu-system" in ln and not ln.split()[1].startswith("Z")]


def wait_for_other_vms(limit_s: float) -> float:
    """2 host cores: another VM run (vm-smoke) starves ours and theirs, so wait for it to end first."""
    t0 = time.monotonic()
    while (running := other_vms()) and time.monotonic() - t0 < limit_s:
        log(f"  {len(running)} other qemu process(es) running ({running[0][:60]} ...): waiting 30 s")
        time.sleep(30)
    return round(time.monotonic() - t0, 1)


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


class Kubectl:
    """The bundle's own kubectl (v1.20.2) on the host, through the VIP, with the rendered admin.conf."""

    def __init__(self, binary: Path, kubeconfig: Path, cache_dir: Path) -> None:
        # The run's own discovery cache: not the operator's ~/.kube/cache, and warm from the first call on.
        self.base = [str(binary), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir),
                     "--request-timeout=15s"]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> tuple[int, str]:
        try:
            done = subprocess.run([*self.base, *args], input=stdin, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return 124, f"timed out: kubectl {' '.join(args)}"
        return done.returncode, (done.stdout + done.stderr).strip()

    def retry(self, *args: str, accept: Callable[[str], bool] = lambda _out: True,
              deadline_s: float = DEADLINES["kubectl"]) -> tuple[int, str]:
        """Run until the call succeeds and `accept`s its output, or the deadline passes: under TCG the API
        server behind the VIP is often too busy for one request ("context deadline exceeded")."""
        t0 = time.monotonic()
        while True:
            code, out = self.run(*args)
            if code == 0 and accept(out):
                return code, out
            if time.monotonic() - t0 > deadline_s:
                return code or 1, out
            time.sleep(3)

    def node_ready(self) -> dict[str, bool]:
        code, out = self.run("get", "nodes", "-o", "json")
        if code != 0:
            return {}
        ready = {}
        for item in json.loads(out).get("items", []):
            conds = {c["type"]: c["status"] for c in item["status"].get("conditions", [])}
            ready[item["metadata"]["name"]] = conds.get("Ready") == "True"
        return ready


class Recorder:
    """Named, timed checks into the report (host-side ones; in-guest ones use guest.Checker)."""

    def __init__(self, report: RunReport) -> None:
        self.report = report

    def check(self, node: str, name: str, fn: Callable[[], tuple[bool, str]], *,
              expected_failure: bool = False) -> bool:
        t0 = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as exc:  # a broken check is a failed check with its reason
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.report.checks.append(Check(node, name, ok, detail[-2000:], round(time.monotonic() - t0, 1),
                                        expected_failure))
        log(f"  [{'ok  ' if ok else 'FAIL'}] {node}: {name} ({time.monotonic() - t0:.1f} s): "
            f"{detail.splitlines()[0][:160] if detail else ''}")
        return ok


def pull_guest_logs(node: Node, ssh: Ssh, run_dir: Path) -> None:
    guest.pull_logs(ssh, run_dir / "guest-logs" / node.name, {
        **guest.BASE_LOGS,
        "bootstrap.journal": "sudo journalctl --no-pager -u imagegen-bootstrap.service",  # every boot
        "bootstrap.log": "sudo cat /var/log/imagegen/bootstrap.log",
        "join-attempt.log": "sudo cat /var/log/imagegen/join-attempt.log",
        "kubelet.journal": "sudo journalctl --no-pager -u kubelet",
        "docker-ps.txt": "sudo docker ps -a",
        "containerd.journal": "sudo journalctl --no-pager -u containerd",
        "crictl-pods-ps.txt": "sudo crictl pods; sudo crictl ps -a",
    }, timeout=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ha", action="store_true", help="three control planes (plans/cluster-ha.yaml)")
    p.add_argument("--docker", action="store_true", help="Docker instead of containerd (plans/cluster-docker.yaml)")
    p.add_argument("--plan", type=Path, help="default: plans/cluster.yaml (containerd), plans/cluster-docker.yaml "
                                             "with --docker, plans/cluster-ha.yaml with --ha")
    p.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "imagegen" / "vm-runs")
    p.add_argument("--spec", default="node", help="image spec to boot (built or taken from the cache)")
    p.add_argument("--bundle", type=Path, default=BUNDLE, help="bundle directory (bundle.img, bundle/bin/kubectl)")
    p.add_argument("--cp-vcpus", type=int, default=SIZES["control-plane"][1])
    p.add_argument("--badjoin-with-cluster", action="store_true",
                   help="boot the wrong-token node with the others (default: after the other faults, so its "
                        "install does not starve the API server during the checks)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for other qemu processes to end first")
    p.add_argument("--keep", action="store_true", help="leave the VMs running at the end (debugging)")
    args = p.parse_args(argv)
    plan_path = args.plan or HERE / "plans" / (
        "cluster-ha.yaml" if args.ha else "cluster-docker.yaml" if args.docker else "cluster.yaml")
    disk = args.bundle / "bundle.img"
    kubectl_bin = args.bundle / "bundle" / "bin" / "kubectl"
    for f, fix in ((disk, "make bundle"), (kubectl_bin, "make bundle"), (plan_path, "give --plan")):
        if not f.exists():
            print(f"cluster-test: {f} missing: {fix}", file=sys.stderr)
            return 2

    wall0 = time.monotonic()
    run_id = time.strftime("%m%d%H%M%S") + secrets.token_hex(2)
    run_dir = args.runs / f"cluster{'-ha' if args.ha else ''}{'-docker' if args.docker else ''}-{run_id}"
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o700)  # the run's SSH key, seeds and admin.conf
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)
    report = RunReport(run_id=run_id, plan=str(plan_path), image="", accel="",
                       started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    lab: Lab | None = None
    ssh_of: dict[str, Ssh] = {}
    code = 1
    report_path = svg = run_dir
    try:
        t = time.monotonic()
        log(f"cluster-test run {run_id}: {run_dir}")
        image = build_image(load_spec(args.spec))
        report.image = str(image.qcow2)
        report.phases["image"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        key, pubkey = make_key(run_dir / "ssh")
        plan_data = yaml.safe_load(plan_path.read_text())
        derived = derive_plan(plan_path, run_dir, pubkey)
        out = render(derived, run_dir)
        badjoin = [n["name"] for n in plan_data["nodes"] if "badjoin" in n["name"]]
        bad_seed = wrong_token_seed(derived, run_dir, badjoin[0]) if badjoin else None
        report.phases["render"] = round(time.monotonic() - t, 1)

        if not args.no_wait:
            report.phases["waited-for-other-vms"] = wait_for_other_vms(3600)
        accel = probe_accel()
        report.accel = accel
        conn = connect(report.setup_log)
        net = plan_data["network"]
        cidr = ipaddress.ip_network(net["cidr"])
        lab = Lab(conn, run_dir, run_id, accel, report.setup_log)
        with MemorySampler(lab.qemu_pids) as memory:
            t = time.monotonic()
            lab.create_network(NetworkSpec(
                name=f"imagegen-{run_id}", bridge=f"igct{run_id[-6:]}", cidr=str(cidr), gateway=net["gateway"],
                hosts=tuple(HostEntry(n["mac"], n["ip"], n["name"]) for n in plan_data["nodes"])))
            for n in plan_data["nodes"]:
                mem, cpus = SIZES[n["role"]]
                if n["role"] == "control-plane":
                    cpus = args.cp_vcpus
                seed = bad_seed if n["name"] in badjoin else out / "seeds" / f"{n['name']}.iso"
                extra = (disk,) if n["role"] in ("control-plane", "worker") else ()
                lab.add_node(name=n["name"], role=n["role"], ip=n["ip"], mac=n["mac"], image=image.qcow2,
                             seed=seed, memory_mib=mem, vcpus=cpus, extra_disks=extra)
            report.setup_log.append("sizes (MiB, vCPUs): " + ", ".join(
                f"{r}={m}/{args.cp_vcpus if r == 'control-plane' else c}" for r, (m, c) in SIZES.items()))
            for node in lab.nodes.values():
                if node.name in badjoin and not args.badjoin_with_cluster:
                    continue
                lab.start(node)
            t_boot = time.monotonic()
            report.phases["define-and-start"] = round(t_boot - t, 1)
            admin = plan_data.get("admin_user", "ops")
            try:
                run_checks(lab, report, plan_data, out, key, admin, ssh_of, run_dir, t_boot,
                           Kubectl(kubectl_bin, out / "admin.conf", run_dir / "kube-cache"), badjoin,
                           args.badjoin_with_cluster, kubeadm.pause_image(load_plan(derived)))
            finally:
                report.memory = memory.summary()
        code = report.conclude()
    except (KeyboardInterrupt, Exception) as exc:  # a crashed harness must still clean up and report
        code = report.record_exception(exc, usage=(UsageError,), expected=(Failed, LabError))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        try:
            if lab is not None:
                for node in lab.nodes.values():
                    ssh = ssh_of.get(node.name)
                    # The wrong-token node's logs are the evidence of its expected failure: always kept.
                    if ssh is not None and lab.is_running(node) and (
                            report.result != "passed" or node.name in badjoin_names(lab)):
                        log(f"pulling guest logs of {node.name} ...")
                        pull_guest_logs(node, ssh, run_dir)
                lab.poll()
                report.add_nodes(lab.nodes.values())
                if args.keep:
                    log("--keep: VMs left running; remove them with virsh destroy/undefine")
                else:
                    report.cleanup_problems = lab.close()
            # The test cluster's CA keys are not worth keeping.
            shutil.rmtree(run_dir / "state", ignore_errors=True)
            shutil.rmtree(run_dir / "state-wrong-token", ignore_errors=True)
            report.wall_seconds = round(time.monotonic() - wall0, 1)
            report_path, svg = report.write(run_dir)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    log(report.summary("cluster-test", report_path, svg, run_dir))
    return code


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


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


def badjoin_names(lab: Lab) -> list[str]:
    return [n for n in lab.nodes if "badjoin" in n]


def run_checks(lab: Lab, report: RunReport, plan: dict, out: Path, key: Path, admin: str,
               ssh_of: dict[str, Ssh], run_dir: Path, t_boot: float, kubectl: Kubectl,
               badjoin: list[str], badjoin_with_cluster: bool, pause_image: str) -> None:
    rec = Recorder(report)
    runtime = plan["cluster"].get("container_runtime", "containerd")
    nodes = [n for n in lab.nodes.values() if n.name not in badjoin]
    lbs = [n for n in nodes if n.role == "load-balancer"]
    cps = [n for n in nodes if n.role == "control-plane"]
    workers = [n for n in nodes if n.role == "worker"]
    kube = cps + workers
    bad = [lab.nodes[b] for b in badjoin]
    for n in lab.nodes.values():
        ssh_of[n.name] = Ssh(n.ip, admin, key)
    vip = str(plan["endpoint"]["vip"])

    t = time.monotonic()
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
    report.phases["boot-to-all-bootstrap-markers"] = round(time.monotonic() - t_boot, 1)
    for n in nodes:
        rec.check(n.name, "first boot ends with IMAGEGEN-BOOTSTRAP-OK", lambda n=n: (
            "bootstrap-ok" in n.scanner.markers,
            (n.scanner.markers.get("bootstrap-ok") or n.scanner.markers["bootstrap-failed"]).line))
    if any("bootstrap-ok" not in n.scanner.markers for n in kube):
        raise Failed("a Kubernetes node failed its bootstrap: " + "; ".join(
            n.scanner.markers["bootstrap-failed"].line for n in kube if "bootstrap-failed" in n.scanner.markers))

    # --- all Ready, from the host through the VIP ------------------------------------------------------------
    t = time.monotonic()
    want = {n.name for n in kube}
    ready: dict[str, bool] = {}
    while time.monotonic() - t < DEADLINES["ready"]:
        lab.poll()
        ready = kubectl.node_ready()
        if want <= {k for k, v in ready.items() if v}:
            break
        time.sleep(5)
    for n in kube:
        n.note("ready") if ready.get(n.name) else None
    report.phases["boot-to-all-ready"] = round(time.monotonic() - t_boot, 1)
    ok = want <= {k for k, v in ready.items() if v}
    rec.check("cluster", f"every Kubernetes node Ready (kubectl via VIP {vip})", lambda: (
        ok, f"{ready} after {time.monotonic() - t_boot:.0f} s from boot"))
    if not ok:
        raise Failed(f"nodes not Ready within {DEADLINES['ready']} s after their bootstraps: {ready}")

    for n in nodes:
        if not ssh_of[n.name].wait_ready(time.monotonic() + DEADLINES["ssh"]):
            raise Failed(f"{n.name}: no SSH as {admin}@{n.ip}")
        n.note("ssh")

    # --- per-node checks ------------------------------------------------------------------------------------
    t = time.monotonic()
    for n in nodes:
        c = guest.Checker(n.name, ssh_of[n.name], report.checks)
        c.check("bootstrap sentinel /var/lib/imagegen/bootstrap.done", lambda c=c: (
            lambda r: (r[0] == 0, r[1]))(c.sudo("cat /var/lib/imagegen/bootstrap.done")))
    for n in kube:
        c = guest.Checker(n.name, ssh_of[n.name], report.checks)

        def versions(c: guest.Checker = c) -> tuple[bool, str]:
            _, o = c.sudo("kubeadm version -o short; kubelet --version; kubectl version --client --short")
            got = o.split()
            return o.count(KUBE_VERSION) == 3, " / ".join(ln.strip() for ln in o.splitlines()) or str(got)
        c.check(f"kubeadm, kubelet, kubectl at {KUBE_VERSION}", versions)

        if runtime == "docker":
            def cgroup(c: guest.Checker = c) -> tuple[bool, str]:
                _, o = c.sudo("grep -E '^cgroupDriver:' /var/lib/kubelet/config.yaml; "
                              "docker info --format 'docker={{.CgroupDriver}}'")
                return "cgroupDriver: systemd" in o and "docker=systemd" in o, " ".join(o.split())
            c.check("systemd cgroup driver (kubelet config and docker info)", cgroup)
        else:
            def cgroup(c: guest.Checker = c) -> tuple[bool, str]:
                _, o = c.sudo("grep -E '^cgroupDriver:' /var/lib/kubelet/config.yaml")
                info, raw = guest.crictl_info(c)
                systemd = guest.dig(info, "config", "containerd", "runtimes", "runc", "options", "SystemdCgroup")
                return "cgroupDriver: systemd" in o and systemd is True, (
                    f"{' '.join(o.split())}; crictl info runc SystemdCgroup={systemd}"
                    + ("" if info else f" (crictl info failed: {raw[-200:]})"))
            c.check("systemd cgroup driver (kubelet config and containerd via crictl info)", cgroup)
            guest.check_cri_config(c, pause_image)
            guest.check_containerd_mirror(c, list(plan["cluster"].get("registry_mirrors") or []))
    report.phases["node-checks"] = round(time.monotonic() - t, 1)

    # --- workload on the worker, ClusterIP from the control plane, ipvs -----------------------------------------
    t = time.monotonic()
    worker, cp = workers[0], cps[0]
    manifest = workload_manifest(worker.name)
    (run_dir / "workload.yaml").write_text(manifest)
    code, applied = kubectl.run("apply", "-f", "-", stdin=manifest)
    cluster_ip = ""
    pod_info = applied
    if code == 0:
        while time.monotonic() - t < DEADLINES["workload"]:
            c2, o = kubectl.run("get", "pods", "-l", "app=ct-web", "-o",
                                "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} "
                                "{.status.containerStatuses[0].ready}{end}")
            pod_info = o
            if c2 == 0 and o.strip() == f"{worker.name} Running true":
                break
            time.sleep(5)
        rc, got = kubectl.retry("get", "svc", "ct-web", "-o", "jsonpath={.spec.clusterIP}", accept=is_ip)
        cluster_ip = got.strip() if rc == 0 else ""
        if not cluster_ip:
            pod_info += f"; no ClusterIP from kubectl: {got[:200]}"
    rec.check(worker.name, f"busybox workload ({BUSYBOX}, imagePullPolicy Never) Running on the worker", lambda: (
        pod_info.strip() == f"{worker.name} Running true", f"apply: {applied[:200]}; pod: {pod_info}"))
    cpc = guest.Checker(cp.name, ssh_of[cp.name], report.checks)

    def svc() -> tuple[bool, str]:
        if not cluster_ip:
            return False, f"no ClusterIP to probe ({pod_info[-200:]})"
        deadline = time.monotonic() + DEADLINES["service"]
        while True:
            rc, o = cpc.sudo(f"curl -s --max-time 5 http://{cluster_ip}/")
            if "imagegen-cluster-test" in o or time.monotonic() > deadline:
                return "imagegen-cluster-test" in o, f"ClusterIP {cluster_ip} from {cp.name}: exit {rc}: {o[:200]}"
            time.sleep(3)
    cpc.check("ClusterIP Service answers from the control plane", svc)
    for n in (cp, worker):
        c = guest.Checker(n.name, ssh_of[n.name], report.checks)

        def ipvs(c: guest.Checker = c) -> tuple[bool, str]:
            if not cluster_ip:
                return False, "no ClusterIP to look for"
            deadline = time.monotonic() + 60
            while True:
                _, o = c.sudo("ipvsadm -Ln")
                lines = o.splitlines()
                at = [i for i, ln in enumerate(lines) if f"{cluster_ip}:80" in ln]
                # The virtual service and, under it, a real server (the pod's IP on port 8080).
                ok = bool(at) and any(":8080" in ln for ln in lines[at[0] + 1:at[0] + 3])
                if ok or time.monotonic() > deadline:
                    return ok, " | ".join(lines[at[0]:at[0] + 2]) if at else o[-300:]
                time.sleep(5)
        c.check("kube-proxy in ipvs mode (ipvsadm -Ln shows the ClusterIP and the pod behind it)", ipvs)
    if runtime == "containerd":
        guest.check_pod_sandbox_image(guest.Checker(worker.name, ssh_of[worker.name], report.checks),
                                      "app=ct-web", pause_image)
    report.phases["workload"] = round(time.monotonic() - t, 1)

    # --- faults ---------------------------------------------------------------------------------------------
    if len(lbs) >= 2:
        for daemon in ("keepalived", "nginx"):
            t = time.monotonic()
            lb_failover(rec, lbs, ssh_of, vip, daemon, kubectl)
            report.phases[f"fault-{daemon}"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    worker_reboot(rec, lab, worker, ssh_of[worker.name], kubectl)
    report.phases["fault-worker-reboot"] = round(time.monotonic() - t, 1)

    if len(cps) >= 3:
        t = time.monotonic()
        control_plane_loss(rec, lab, cps, ssh_of, kubectl)
        report.phases["fault-control-plane-loss"] = round(time.monotonic() - t, 1)

    # The wrong-token node boots now (unless it booted with the cluster); the etcd snapshot runs while it installs.
    t_bad = time.monotonic()
    for b in bad:
        if b.tail is None:
            log(f"starting {b.name} (seeded with a wrong bootstrap token secret) ...")
            lab.start(b)

    t = time.monotonic()
    c = guest.Checker(cp.name, ssh_of[cp.name], report.checks)

    def snapshot() -> tuple[bool, str]:
        rc, o = c.sudo("systemctl start imagegen-etcd-snapshot.service && "
                       "f=$(ls -t /var/backups/etcd/snapshot-*.db | head -1) && echo \"file=$f\" && "
                       "ETCDCTL_API=3 etcdctl snapshot status \"$f\" -w json", timeout=180)
        ok = rc == 0 and '"hash"' in o and '"totalKey"' in o
        return ok, " ".join(o.split())[-400:]
    c.check("etcd snapshot service leaves a snapshot etcdctl snapshot status accepts", snapshot)
    report.phases["fault-etcd-snapshot"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    rec.check("cluster", "day 2: `imagegen token rotate` + `token apply` put the new token into the cluster",
              lambda: token_apply_check(run_dir, out, kubectl))
    report.phases["day2-token-apply"] = round(time.monotonic() - t, 1)

    for b in bad:
        while not {"bootstrap-ok", "bootstrap-failed"} & set(b.scanner.markers):
            for node, marker in lab.poll():
                log(f"  {node.name:<16} {node.since_start():6.1f}s  {marker.kind}: {marker.line[:120]}")
            if b.since_start() > DEADLINES["badjoin"] or not lab.is_running(b) or b.scanner.fatal:
                break
            time.sleep(2)
        m = b.scanner.markers.get("bootstrap-failed")
        rec.check(b.name, "wrong bootstrap token: IMAGEGEN-BOOTSTRAP-FAILED reason=bootstrap-token-or-ca-hash-rejected",
                  lambda b=b, m=m: (
                      m is not None and m.fields.get("reason", "").strip() == "bootstrap-token-or-ca-hash-rejected"
                      and "bootstrap-ok" not in b.scanner.markers,
                      (m.line + f" (at {m.at:.0f} s after its start)") if m else
                      f"no failure marker within {DEADLINES['badjoin']} s; markers {sorted(b.scanner.markers)}"),
                  expected_failure=True)
        rec.check(b.name, "wrong-token node did not become a cluster node", lambda b=b: (
            lambda r: (r[0] == 0 and f"node/{b.name}" not in r[1].split(), f"kubectl nodes: {' '.join(r[1].split())}"))(
            kubectl.retry("get", "nodes", "-o", "name")))
    report.phases["fault-wrong-token"] = round(time.monotonic() - t_bad, 1)


def workload_manifest(worker: str) -> str:
    """busybox httpd from the bundle's image, pinned to the worker, behind a ClusterIP Service on port 80."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: ct-web, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: ct-web}}}}
  template:
    metadata: {{labels: {{app: ct-web}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {worker}}}
      containers:
        - name: web
          image: {BUSYBOX}
          imagePullPolicy: Never
          command: [sh, -c, "mkdir -p /www && echo imagegen-cluster-test > /www/index.html &&
            exec httpd -f -p 8080 -h /www"]
          ports: [{{containerPort: 8080}}]
          readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 3}}
---
apiVersion: v1
kind: Service
metadata: {{name: ct-web, namespace: default}}
spec:
  type: ClusterIP
  selector: {{app: ct-web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


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


ETCDCTL = ("ETCDCTL_API=3 etcdctl --cacert=/etc/kubernetes/pki/etcd/ca.crt "
           "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
           "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key")


def control_plane_loss(rec: Recorder, lab: Lab, cps: list[Node], ssh_of: dict[str, Ssh], kubectl: Kubectl) -> None:
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


def worker_reboot(rec: Recorder, lab: Lab, worker: Node, ssh: Ssh, kubectl: Kubectl) -> None:
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


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
