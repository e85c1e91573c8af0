"""Render + seed ISO for generated plans of 10 to 10,000 nodes, streamed to disk as `imagegen render` does
(render.iter_render -> writer.write_tree), against cloud-localds building the same seeds. Each size runs in its
own process so its peak RSS is its own. Prints per-node milliseconds, a worker's user-data size (it must not
grow with the cluster), peak RSS and the cloud-localds ratios. Targets (this 2-core machine): 10,000 nodes in
under 30 s and 500 MB peak RSS; per seed at least 20x faster than cloud-localds.

Columns added with the render's worker processes (render.iter_render): `procs`, how many processes rendered
(1: all in the benchmark's own process, as for plans under render.PARALLEL_FROM nodes); `proc RSS`, the largest
peak RSS of one of them (MiB; they share most pages with the parent, whose peak `RSS MiB` is). `cpu s`, `user s`
and `sys s` count their CPU too.

Every size's output stays on disk until the last size is done. On an ext4 without a journal (this VM's root file
system) creating a file skips every free inode deleted in the last minutes (ext4's recently_deleted check): 17 us
a file on a quiet file system, 0.3-0.7 ms within a minute or two of deleting tens of thousands of files, so
deleting one size's output made the next size's sys s several times larger. Run with --dir on another file
system to tell imagegen's time from the file system's."""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagegen import seediso  # noqa: E402
from imagegen.plan import parse_plan_text  # noqa: E402
from imagegen.render import iter_render, render_processes  # noqa: E402
from imagegen.seediso import build_seed_iso  # noqa: E402
from imagegen.state import ensure_state  # noqa: E402
from imagegen.writer import write_tree  # noqa: E402


def generated_plan(nodes: int) -> str:
    """A plan with 3 control planes, 2 load balancers and workers up to `nodes` in 10.0.0.0/16."""
    net = ipaddress.ip_network("10.0.0.0/16")
    hosts = net.hosts()
    gateway = next(hosts)
    vip = next(hosts)
    roles = ["load-balancer"] * 2 + ["control-plane"] * 3
    roles += ["worker"] * (nodes - len(roles))
    items = []
    for i, role in enumerate(roles[:nodes]):
        items.append({"name": f"n{i:04d}-{role.split('-')[0]}", "role": role, "ip": str(next(hosts)),
                      "mac": f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"})
    plan = {
        "cluster": {"name": f"bench{nodes}", "kubernetes_version": "1.34.2", "pod_cidr": "10.128.0.0/12"},
        "endpoint": {"mode": "load-balancer", "vip": str(vip), "port": 6443},
        "network": {"cidr": str(net), "gateway": str(gateway)},
        "nodes": items,
    }
    return yaml.safe_dump(plan, sort_keys=False)


def _cpu() -> tuple[float, float]:
    """User and system seconds of this process and of its children that ended (the render's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime


def bench(nodes: int, localds_sample: int, where: str, processes: int) -> dict:
    text = generated_plan(nodes)
    tmp = tempfile.mkdtemp(dir=where)  # removed by main() after the last size (see the module's docstring)
    t0 = time.perf_counter()
    plan = parse_plan_text(text)
    state = ensure_state(Path(tmp) / "state", plan)
    t1 = time.perf_counter()
    u1, s1 = _cpu()
    write_tree(Path(tmp) / "out", iter_render(plan, state, processes=processes))
    t2 = time.perf_counter()  # rendering, seeds and writing are one stream
    # CPU seconds of this process and of the render's workers: what the machine's load changes less than wall time.
    # sys is the kernel's share, nearly all of it creating the 9 files per node.
    u2, s2 = _cpu()
    user_s, sys_s = u2 - u1, s2 - s1
    cpu_s = user_s + sys_s
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = Path(tmp) / "out" / "nodes"
    worker = next(n.name for n in plan.nodes if n.role == "worker")
    user_data_bytes = (out / worker / "user-data").stat().st_size
    # The seed ISOs alone, rebuilt from the written files (a sample): the same work cloud-localds does.
    sample_nodes = plan.nodes[:min(nodes, 200)]
    seeds = [{n: (out / node.name / n).read_bytes() for n in ("user-data", "meta-data", "network-config")}
             for node in sample_nodes]
    # From scratch (no layout kept from the render: what cloud-localds does every time), then again with
    # the layouts the render keeps for seeds of the same file names and sizes.
    i0 = time.perf_counter()
    for files in seeds:
        seediso._LAYOUTS.clear()
        build_seed_iso(files)
    iso_ms = (time.perf_counter() - i0) * 1000 / len(sample_nodes)
    i0 = time.perf_counter()
    for files in seeds:
        build_seed_iso(files)
    iso_reused_ms = (time.perf_counter() - i0) * 1000 / len(sample_nodes)
    localds = shutil.which("cloud-localds")
    localds_ms = None
    sample = plan.nodes[:localds_sample]
    if localds and sample:
        s0 = time.perf_counter()
        for node in sample:
            d = Path(tmp) / "out" / "nodes" / node.name
            subprocess.run([localds, "-N", str(d / "network-config"), str(Path(tmp) / f"{node.name}.iso"),
                            str(d / "user-data"), str(d / "meta-data")], check=True, capture_output=True)
        localds_ms = (time.perf_counter() - s0) * 1000 / len(sample)
    total = t2 - t0
    per_node_ms = (t2 - t1) * 1000 / nodes
    return {"nodes": nodes, "processes": processes if worker_rss_mib else 1,  # no worker ended: none ran
            "total_s": round(total, 3), "pki_and_parse_s": round(t1 - t0, 3),
            "peak_rss_mib": round(rss_mib, 1), "worker_peak_rss_mib": round(worker_rss_mib, 1),
            "worker_user_data_bytes": user_data_bytes,
            "render_cpu_s": round(cpu_s, 2), "render_user_s": round(user_s, 2), "render_sys_s": round(sys_s, 2),
            "render_iso_s": round(t2 - t1, 3),
            "per_node_ms": round(per_node_ms, 3), "iso_per_seed_ms": round(iso_ms, 3),
            "iso_reused_layout_ms": round(iso_reused_ms, 3),
            "cloud_localds_per_seed_ms": round(localds_ms, 3) if localds_ms else None,
            "seed_speedup_vs_cloud_localds": round(localds_ms / iso_ms, 1) if localds_ms else None,
            "render_and_seed_speedup_vs_cloud_localds": round(localds_ms / per_node_ms, 1) if localds_ms else None}


def _bench_child(conn: Connection, nodes: int, localds_sample: int, where: str, processes: int) -> None:
    conn.send(bench(nodes, localds_sample, where, processes))
    conn.close()


def _bench_alone(nodes: int, localds_sample: int, where: str, processes: int) -> dict:
    """bench() in a process of its own: ru_maxrss only grows, so each size's peak must be measured on its own. Not a
    multiprocessing.Pool worker: those are daemons, which may not start the render's worker processes."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_bench_child, args=(send, nodes, localds_sample, where, processes))
    child.start()
    send.close()
    try:
        result: dict = receive.recv()
    except EOFError:
        result = {}
    child.join()
    if child.exitcode != 0 or not result:
        raise SystemExit(f"the benchmark of {nodes} nodes failed (exit status {child.exitcode})")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000,5000,10000")
    ap.add_argument("--localds-sample", type=int, default=20, help="seeds cloud-localds builds per size")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--dir", help="write the outputs under this directory (default: the temporary directory, as "
                                  "TMPDIR says); e.g. a tmpfs, to tell imagegen's time from the file system's")
    ap.add_argument("--processes", type=int, default=render_processes(),
                    help="processes that render (default: one per CPU, as imagegen render does; 1: no workers)")
    args = ap.parse_args()
    where = tempfile.mkdtemp(prefix="bench-render-", dir=args.dir)
    try:
        results = [_bench_alone(int(n), args.localds_sample, where, args.processes) for n in args.sizes.split(",")]
    finally:
        shutil.rmtree(where, ignore_errors=True)
    print(f"{'nodes':>6} {'procs':>5} {'total s':>8} {'pki s':>7} {'render+iso+write s':>19} {'cpu s':>7} "
          f"{'user s':>7} {'sys s':>7} {'ms/node':>8} "
          f"{'RSS MiB':>8} {'proc RSS':>8} "
          f"{'worker UD':>10} {'iso ms':>7} {'reused':>7} {'localds ms':>11} {'seed x':>7} {'node x':>7}")
    for r in results:
        print(f"{r['nodes']:>6} {r['processes']:>5} {r['total_s']:>8} {r['pki_and_parse_s']:>7} "
              f"{r['render_iso_s']:>19} "
              f"{r['render_cpu_s']:>7} {r['render_user_s']:>7} {r['render_sys_s']:>7} "
              f"{r['per_node_ms']:>8} {r['peak_rss_mib']:>8} {r['worker_peak_rss_mib'] or '-':>8} "
              f"{r['worker_user_data_bytes']:>10} "
              f"{r['iso_per_seed_ms']:>7} {r['iso_reused_layout_ms']:>7} "
              f"{r['cloud_localds_per_seed_ms'] or '-':>11} {r['seed_speedup_vs_cloud_localds'] or '-':>7} "
              f"{r['render_and_seed_speedup_vs_cloud_localds'] or '-':>7}")
    print("render+iso+write s: wall; cpu s = user s + sys s of the render and write, workers included; ms/node: "
          "wall per node, PKI excluded; proc RSS: the largest render worker's peak; iso ms: one seed ISO from "
          "scratch; reused: the same with the layout a render keeps for seeds of the same names and sizes; seed x: "
          "cloud-localds ms / our from-scratch ISO ms for the same files; node x: cloud-localds ms / our whole "
          "per-node ms (rendering included)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
