#!/usr/bin/env python3
"""make cluster-test: VMs booted from imagegen's own images, seeds and offline bundle form a real kubeadm cluster.

Plan vm-tests/plans/cluster.yaml (containerd; --docker: cluster-docker.yaml, the same cluster on Docker; --ha:
cluster-ha.yaml): two load balancers (nginx stream + keepalived VIP), the
control plane(s), one worker, and a "badjoin" worker booted from a seed rendered against a copy of the state whose
bootstrap token secret was replaced: its join must be rejected. No network beyond this host: the lab network rejects
forwarding out of its bridge and the Kubernetes bits come from the bundle.
Where the bundle is: with containerd (plans/cluster.yaml, also --day2) the control planes and the worker boot the node
image built with the bundle baked in (`image build --bundle`: its images preloaded into containerd at image build) and
no bundle disk; the wrong-token worker boots the plain node image with the bundle disk, so the disk's import is proven
in the same run. --docker and --ha boot the plain image with the bundle disk on every Kubernetes node (Docker's
storage is not preloaded; three control planes stay as measured).

Checks: every Kubernetes node Ready (kubectl on the host through the VIP with the rendered admin.conf), bootstrap
sentinel on every node, a busybox workload from the bundle on the worker answering through a ClusterIP Service from
the control plane, kube-proxy in ipvs mode, systemd cgroup driver (kubelet, and Docker or containerd as `crictl
info` reports it), v1.20.2 binaries everywhere. With containerd also: `crictl info` shows the plan's pause image as
the sandbox image, the workload pod's sandbox runs that image, and the registry mirror's hosts.toml is in effect
(containerd's effective config_path). With the baked image: every image archive of a node's role logged as preloaded
at image build and none imported; the wrong-token worker imported every archive of its list from the bundle disk.
Faults: keepalived and then nginx stopped on the VIP holder (VIP moves, the API keeps answering through it), worker
reboot (Ready again, bootstrap not run again), the wrong-token join, an etcd snapshot accepted by etcdctl.
--day2 (make cluster-test-day2) then runs day 2 on the same cluster (scenarios/cluster_day2.py): a worker added
after the first token expired, removed again, the original worker replaced, certificates renewed, an etcd restore.
--stock (make cluster-test-stock): plans/cluster-stock.yaml on the stock image (profiles/images/stock.yaml: no
runtime, no load balancer, no Kubernetes) with NO bundle disk: the lab's repositories and registry (vm-tests/lab,
LabRepos) run on the bridge's gateway address, the derived plan's cluster.distro_mirror points cloud-init's apt
module at the lab's Debian repository (signed by the lab key), and every package and image comes from the lab. The
same checks run (the workload is pulled through the lab registry, imagePullPolicy IfNotPresent); none needs the
bundle disk itself, and cluster-stock.yaml has no wrong-token node, so its two checks do not run. One more check
closes the run, also when a step failed: "lab: every request was for something the lab holds" (LabRepos.missing(),
any 404 of the apt repositories or the registry).

Exit 0 passed, 1 failed, 2 bad input, 130 interrupted. The run directory is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from harness.host import wait_for_other_vms  # noqa: E402
from harness.render import derive_plan, render  # noqa: E402
from harness.session import Session  # noqa: E402
from harness.ssh import make_key  # noqa: E402
from lab.repo import LabRepos  # noqa: E402
from scenarios import cluster_context as context  # noqa: E402
from scenarios.cluster import DAY2_STEPS, STEPS  # noqa: E402
from scenarios.cluster_boot import bad_join_imported_from_disk  # noqa: E402
from scenarios.cluster_faults import wrong_token_seed  # noqa: E402

from imagegen import kubeadm  # noqa: E402
from imagegen.errors import UsageError  # noqa: E402
from imagegen.image.build import build_image, load_spec  # noqa: E402
from imagegen.image.qemu import probe_accel  # noqa: E402
from imagegen.plan import load_plan  # noqa: E402

BUNDLE = Path.home() / ".cache" / "imagegen" / "bundle" / "current"
# (MiB, vCPUs). The control plane gets 2 vCPUs: the measured reference; with 1 vCPU kubeadm init under TCG risks
# its 4-minute wait for the API server. Workers stay above kubeadm's 1700 MB recommendation.
# --day2: the first bootstrap token expires for real (kubeadm init made it ~4 minutes after boot; day 2 begins
# ~18 minutes after boot, and waits for the expiry), and every certificate the controller-manager signs (kubelet
# client and serving certificates) lives 20 minutes, so the first worker's kubelet must rotate its client
# certificate (at 70-90 % of its life) before day 2 replaces that worker.
DAY2_PLAN = {"token_ttl": "15m", "certificate_signing_duration": "20m"}
SIZES = {"load-balancer": (1024, 1), "control-plane": (2560, 2), "worker": (1792, 1)}
# Where LabRepos listens on the bridge's gateway address (vm-tests/plans/cluster-stock.yaml names these ports).
LAB_HTTP_PORT, LAB_REGISTRY_PORT = 8080, 5000


def lab_repos(plan_path: Path, run_dir: Path) -> LabRepos:
    """The lab's repositories and registry for the plan's gateway address (not started), logging into the run
    directory; a lab not built yet is bad input (exit 2)."""
    gateway = str(load_plan(plan_path).network.gateway)
    try:
        return LabRepos(gateway, http_port=LAB_HTTP_PORT, registry_port=LAB_REGISTRY_PORT,
                        log_dir=run_dir / "lab-logs")
    except RuntimeError as exc:
        raise UsageError(f"{exc} (make cluster-test-stock builds it)") from exc


def with_lab_mirror(derived: Path, repos: LabRepos) -> None:
    """The derived plan with cluster.distro_mirror at the lab's Debian repository: its URL, its suite, and the lab's
    armored key copied beside the plan (key_file is read relative to it)."""
    shutil.copyfile(repos.armored_key, derived.parent / "lab-repo.asc")
    text = derived.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    data = yaml.safe_load(text)
    data["cluster"]["distro_mirror"] = {"url": repos.debian_url, "key_file": "lab-repo.asc",
                                        "suites": [repos.index["debian"]["suite"]]}
    derived.write_text(header + "# cluster_test.py --stock: the lab's Debian repository as cluster.distro_mirror\n"
                       + yaml.safe_dump(data, sort_keys=False))


def lab_holds_everything(repos: LabRepos) -> tuple[bool, str]:
    """No request to the lab's apt repositories or registry went unanswered (404)."""
    missing = repos.missing()
    total = len(repos.requests())
    if not missing:
        return True, f"{total} requests, none for something the lab lacks"
    shown = "; ".join(f"{r.server} {r.method} {r.path}" for r in missing[:20])
    return False, f"{len(missing)} of {total} requests got 404: {shown}"


def bakes_bundle(args: argparse.Namespace, plan_path: Path) -> bool:
    """Boot the Kubernetes nodes from the image with the bundle baked in (images preloaded into containerd)? Only
    containerd's storage is preloaded; --ha keeps its measured setup, --stock has no bundle at all."""
    return not (args.stock or args.ha) and load_plan(plan_path).cluster.container_runtime == "containerd"


def boot_media(role: str, name: str, *, badjoin: tuple[str, ...], plain: Path, baked: Path | None, disk: Path,
               stock: bool) -> tuple[Path, tuple[Path, ...]]:
    """(image, extra disks) a node boots with: a Kubernetes node from the baked image without the bundle disk when
    there is one, except the wrong-token worker, which keeps the plain image and the disk (the disk's import stays
    proven); otherwise the plain image, with the bundle disk on Kubernetes nodes unless --stock."""
    kube = role in ("control-plane", "worker")
    if kube and baked is not None and name not in badjoin:
        return baked, ()
    return plain, (disk,) if kube and not stock else ()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ha", action="store_true", help="three control planes (plans/cluster-ha.yaml)")
    p.add_argument("--docker", action="store_true", help="Docker instead of containerd (plans/cluster-docker.yaml)")
    p.add_argument("--stock", action="store_true", help="the stock image, no bundle disk, everything from the lab's "
                                                        "mirrors (plans/cluster-stock.yaml)")
    p.add_argument("--plan", type=Path, help="default: plans/cluster.yaml (containerd), plans/cluster-docker.yaml "
                                             "with --docker, plans/cluster-ha.yaml with --ha, "
                                             "plans/cluster-stock.yaml with --stock")
    p.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "imagegen" / "vm-runs")
    p.add_argument("--spec", help="image spec to boot (built or taken from the cache); default: node, stock with "
                                  "--stock")
    p.add_argument("--bundle", type=Path, default=BUNDLE,
                   help="bundle directory (bundle.img, bundle/: baked into the containerd image, bin/kubectl)")
    p.add_argument("--cp-vcpus", type=int, default=SIZES["control-plane"][1])
    p.add_argument("--badjoin-with-cluster", action="store_true",
                   help="boot the wrong-token node with the others (default: after the other faults, so its "
                        "install does not starve the API server during the checks)")
    p.add_argument("--day2", action="store_true",
                   help="after the checks, day 2: add, remove and replace a worker, renew certificates, restore etcd")
    p.add_argument("--no-wait", action="store_true", help="do not wait for other qemu processes to end first")
    p.add_argument("--keep", action="store_true", help="leave the VMs running at the end (debugging)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan_path = args.plan or HERE / "plans" / (
        "cluster-stock.yaml" if args.stock else "cluster-ha.yaml" if args.ha else
        "cluster-docker.yaml" if args.docker else "cluster.yaml")
    spec = args.spec or ("stock" if args.stock else "node")
    disk = args.bundle / "bundle.img"
    kubectl_bin = args.bundle / "bundle" / "bin" / "kubectl"
    needed = [(kubectl_bin, "make bundle"), (plan_path, "give --plan")]
    if not args.stock:  # --stock: no bundle disk, only the bundle's kubectl on this host
        needed.insert(0, (disk, "make bundle"))
    for f, fix in needed:
        if not f.exists():
            print(f"cluster-test: {f} missing: {fix}", file=sys.stderr)
            return 2

    run_name = (f"cluster{'-stock' if args.stock else ''}{'-ha' if args.ha else ''}"
                f"{'-docker' if args.docker else ''}{'-day2' if args.day2 else ''}")
    # Every copy of the state holds the cluster's CA keys: state-day2 is the day-2 token check's (and --day2's).
    with Session(suite="cluster-test", run_name=run_name, runs=args.runs, plan=plan_path, keep=args.keep,
                 discard=("state", "state-wrong-token", "state-day2"), collect=context.collect) as session:
        report, run_dir = session.report, session.run_dir
        baked = bakes_bundle(args, plan_path)
        with session.phase("image"):
            image = build_image(load_spec(spec))
            report.image = str(image.qcow2)
            baked_image = build_image(load_spec(spec, bundle=args.bundle / "bundle")) if baked else None
            if baked_image is not None:
                report.setup_log.append(f"bundle baked in, images preloaded: {baked_image.qcow2} "
                                        f"(the wrong-token worker boots {image.qcow2.name} with the bundle disk)")

        with session.phase("render"):
            key, pubkey = make_key(run_dir / "ssh")
            derived = derive_plan(plan_path, run_dir, pubkey, DAY2_PLAN if args.day2 else None)
            repos = lab_repos(plan_path, run_dir) if args.stock else None
            if repos is not None:
                with_lab_mirror(derived, repos)
            out = render(derived, run_dir)
            plan = load_plan(derived)  # the rendered plan, typed (render has validated it)
            badjoin = tuple(n.name for n in plan.nodes if "badjoin" in n.name)
            bad_seed = wrong_token_seed(derived, run_dir, badjoin[0]) if badjoin else None

        if not args.no_wait:
            report.phases["waited-for-other-vms"] = wait_for_other_vms(3600)
        lab = session.open_lab(probe_accel())
        t = time.monotonic()
        session.create_network(plan, "igct")
        if repos is not None:  # on the bridge's gateway address, which exists once the network does
            repos.start()
            session.on_teardown(repos.stop)
            report.setup_log.append(f"lab repositories: {repos.describe()}")
        preloaded: list[str] = []
        for n in plan.nodes:
            mem, cpus = SIZES[n.role]
            if n.role == "control-plane":
                cpus = args.cp_vcpus
            seed = bad_seed if n.name in badjoin else out / "seeds" / f"{n.name}.iso"
            node_image, extra = boot_media(n.role, n.name, badjoin=badjoin, plain=image.qcow2, disk=disk,
                                           baked=baked_image.qcow2 if baked_image else None, stock=args.stock)
            if baked_image is not None and node_image == baked_image.qcow2:
                preloaded.append(n.name)
            lab.add_node(name=n.name, role=n.role, ip=str(n.ip), mac=n.mac, image=node_image,
                         seed=seed, memory_mib=mem, vcpus=cpus, extra_disks=extra)
        report.setup_log.append("sizes (MiB, vCPUs): " + ", ".join(
            f"{r}={m}/{args.cp_vcpus if r == 'control-plane' else c}" for r, (m, c) in SIZES.items()))
        for node in lab.nodes.values():
            if node.name in badjoin and not args.badjoin_with_cluster:
                continue
            lab.start(node)
        t_boot = time.monotonic()
        report.phases["define-and-start"] = round(t_boot - t, 1)

        kubectl = context.Kubectl(kubectl_bin, out / "admin.conf", run_dir / "kube-cache")
        ctx = context.cluster_context(session, plan, out, key, kubectl, kubeadm.pause_image(plan), badjoin, t_boot,
                                      preloaded=tuple(preloaded),
                                      bundle_dir=None if args.stock else args.bundle / "bundle")
        # After the wrong-token result (its node has run install_kubernetes by then), before day 2.
        steps = (*STEPS, bad_join_imported_from_disk)
        try:
            for step in (*steps, *DAY2_STEPS) if args.day2 else steps:
                step(ctx)
        finally:  # also after a failed step: a 404 is often why it failed
            if repos is not None:
                ctx.rec.check("lab", "lab: every request was for something the lab holds",
                              partial(lab_holds_everything, repos))
    return session.code


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
