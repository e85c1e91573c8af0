"""cluster-test --day2: what an operator does to a running cluster, after its normal checks passed.

(a) The bootstrap token kubeadm init made expires (the suite's cluster.token_ttl is 15m; the tokencleaner deletes
it, the API server answers it 401); a rotated one is applied
(`token_apply_check`, the normal run's day-2 check), the cluster re-rendered with it and with one more worker, and
imagegen's own diff and manifest show that no running node would be re-provisioned; the new worker boots from its
seed and joins. (b) `imagegen node remove` takes it out again, its machine is destroyed. (c) The original worker's
machine and disk are destroyed, `imagegen node replace` clears its Node, its `generation` is bumped and a fresh
machine with the same name, address and MAC boots from the new seed and joins. (d) cert-renew.sh restarts the
control plane on renewed certificates; `imagegen kubeconfig renew` writes an admin.conf that works. (e) etcd
restore drill: a snapshot by the node's own snapshot service, a namespace created after it is gone after
`etcd-restore.sh`, one created before it is there. With several control planes (e) checks the refusal instead.

The day-2 copy of the plan (plan-day2.yaml), of the state (state-day2, discarded at the end: CA keys) and its
render (render-day2) live in the run directory; every imagegen call and its output go to day2-imagegen.log.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from harness import guest
from harness.lab import Node
from harness.ssh import Ssh
from harness.xml import HostEntry

from imagegen.tokens import ttl_seconds
from scenarios.cluster_context import DEADLINES, ClusterContext, Kubectl, log, pull_guest_logs
from scenarios.cluster_faults import token_apply_check

REPO = Path(__file__).resolve().parents[2]
TOKEN_ENTRY = "/etc/imagegen/kubeadm.yaml"  # the only node file that carries the bootstrap token
RESTORE = "/usr/local/lib/imagegen/etcd-restore.sh"
DAY2_DEADLINES = {"cert-renew": 1800, "etcd-restore": 1200, "gone": 300, "token-expiry": 1200, "rotation": 1800}


@dataclass(frozen=True)
class Day2Paths:
    plan: Path  # the operator's edited copy of the run's plan
    state: Path  # the run's state copy with the rotated token (made by token_apply_check)
    out: Path  # its render

    @classmethod
    def of(cls, run_dir: Path) -> Day2Paths:
        return cls(run_dir / "plan-day2.yaml", run_dir / "state-day2", run_dir / "render-day2")


def imagegen_run(run_dir: Path, *args: str, timeout: float = 600) -> tuple[int, str, str]:
    """`python -m imagegen ARGS` from the repository, as an operator runs it: (exit status, stdout, stderr), all
    appended to day2-imagegen.log."""
    try:
        done = subprocess.run([sys.executable, "-m", "imagegen", *args], capture_output=True, text=True, cwd=REPO,
                              check=False, timeout=timeout)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        code, out, err = 124, "", f"timed out after {timeout:.0f} s"
    with (run_dir / "day2-imagegen.log").open("a") as f:
        f.write(f"$ imagegen {' '.join(args)}\n{out}{err}\n[exit {code}]\n\n")
    return code, out, err


def imagegen(run_dir: Path, *args: str, timeout: float = 600) -> tuple[int, str]:
    code, out, err = imagegen_run(run_dir, *args, timeout=timeout)
    return code, (out + err).strip()


def imagegen_diff(run_dir: Path, plan: Path, out: Path, state: Path) -> tuple[dict[str, Any] | None, str]:
    """`imagegen diff PLAN --out OUT --state STATE -o json`: its report, or None and why not."""
    code, stdout, stderr = imagegen_run(run_dir, "diff", str(plan), "--out", str(out), "--state", str(state), "-o",
                                        "json")
    if code != 0:
        return None, f"imagegen diff exit {code}: {(stdout + stderr).strip()[-300:]}"
    try:
        return json.loads(stdout), ""
    except ValueError:
        return None, f"imagegen diff -o json: not JSON: {stdout.strip()[:200]!r}"


# --- the plan, as an operator edits it (pure) -----------------------------------------------------------------

def next_worker(data: dict[str, Any]) -> dict[str, str]:
    """A worker like the plan's first (not a wrong-token one): the next free name number, the first free address
    after it below the network's DHCP tail (the last 10 addresses, harness.xml), and a MAC in its prefix."""
    nodes = data["nodes"]
    template = next(n for n in nodes if n["role"] == "worker" and "badjoin" not in n["name"])
    names = {n["name"] for n in nodes}
    stem = re.sub(r"\d+$", "", template["name"])
    number = 1 + max((int(m.group(1)) for n in names if (m := re.fullmatch(re.escape(stem) + r"(\d+)", n))),
                     default=0)
    net = ipaddress.IPv4Network(data["network"]["cidr"])  # the lab networks are IPv4 (harness.xml)
    used = {ipaddress.IPv4Address(n["ip"]) for n in nodes} | {ipaddress.IPv4Address(data["network"]["gateway"])}
    if (data.get("endpoint") or {}).get("vip"):
        used.add(ipaddress.IPv4Address(data["endpoint"]["vip"]))
    start = ipaddress.IPv4Address(template["ip"]) + 1
    ip = next(a for a in net.hosts() if start <= a < net.broadcast_address - 10 and a not in used)
    macs = {n["mac"].lower() for n in nodes}
    prefix = template["mac"].lower().rsplit(":", 1)[0]
    octet = int(str(ip).rsplit(".", 1)[1])
    # The plans write the address's last number as the MAC's last byte (10.79.0.21 -> ...:21) where it fits.
    candidates = ([f"{octet:02d}"] if octet < 100 else []) + [f"{b:02x}" for b in range(256)]
    mac = next(f"{prefix}:{c}" for c in candidates if f"{prefix}:{c}" not in macs)
    return {"name": f"{stem}{number}", "role": "worker", "ip": str(ip), "mac": mac}


def with_node(data: dict[str, Any], node: dict[str, str]) -> dict[str, Any]:
    return {**data, "nodes": [*data["nodes"], node]}


def without_node(data: dict[str, Any], name: str) -> dict[str, Any]:
    return {**data, "nodes": [n for n in data["nodes"] if n["name"] != name]}


def with_next_generation(data: dict[str, Any], name: str) -> dict[str, Any]:
    return {**data, "nodes": [{**n, "generation": int(n.get("generation", 1)) + 1} if n["name"] == name else n
                              for n in data["nodes"]]}


def write_plan(path: Path, data: dict[str, Any], why: str) -> None:
    path.write_text(f"# day-2 copy of the run's plan.yaml (vm-tests/scenarios/cluster_day2.py): {why}\n"
                    + yaml.safe_dump(data, sort_keys=False))


def diff_problems(report: dict[str, Any], existing: set[str], allowed: frozenset[str],
                  new: str | None = None) -> list[str]:
    """What in `imagegen diff -o json` would touch a running node: a changed instance-id (cloud-init would run
    again), a changed file entry other than `allowed`, a cluster-level change; and `new` not being new."""
    problems: list[str] = []
    seen = {str(n.get("name")): n for n in report.get("nodes", [])}
    for name in sorted(existing):
        n = seen.get(name)
        if n is None:
            problems.append(f"{name}: not in the diff")
            continue
        ids = n.get("instance_id") or {}
        if ids.get("old") != ids.get("new"):
            problems.append(f"{name}: instance-id {ids.get('old')} -> {ids.get('new')}")
        entries = {str(e.get("path")) for e in n.get("entries", [])} - allowed
        if entries:
            problems.append(f"{name}: {', '.join(sorted(entries))} would change")
        if not allowed and n.get("status") != "unchanged":
            problems.append(f"{name}: {n.get('status')}")
    if new is not None and (seen.get(new) or {}).get("status") != "new":
        problems.append(f"{new}: {(seen.get(new) or {}).get('status', 'missing')} instead of new")
    if report.get("cluster"):
        problems.append(f"cluster-level changes: {report['cluster']}")
    return problems


def node_hashes(out: Path) -> dict[str, dict[str, str]]:
    """Per node, the files and their digests in OUT/manifest.json."""
    return {str(n["name"]): dict(n["files"]) for n in json.loads((out / "manifest.json").read_text())["nodes"]}


# --- shared waits ---------------------------------------------------------------------------------------------

def ready_names(kubectl: Kubectl) -> set[str]:
    return {name for name, ready in kubectl.node_ready().items() if ready}


def wait_ready(ctx: ClusterContext, names: set[str], deadline_s: float = DEADLINES["ready"]) -> tuple[bool, set[str]]:
    t0 = time.monotonic()
    ready: set[str] = set()
    while time.monotonic() - t0 < deadline_s:
        ctx.lab.poll()
        ready = ready_names(ctx.kubectl)
        if names <= ready:
            return True, ready
        time.sleep(5)
    return False, ready


def wait_gone(kubectl: Kubectl, *what: str) -> bool:
    """True once `kubectl get WHAT... NAME` succeeds without naming NAME (not a failed call)."""
    def absent(out: str) -> bool:
        return not any(ln.strip().endswith(f"/{what[-1]}") for ln in out.splitlines())

    code, out = kubectl.retry("get", *what, "-o", "name", "--ignore-not-found", accept=absent,
                              deadline_s=DAY2_DEADLINES["gone"])
    return code == 0 and absent(out)


def boot_and_join(ctx: ClusterContext, node: Node) -> tuple[bool, str]:
    """Start a new domain and wait for IMAGEGEN-BOOTSTRAP-OK on its console, then Ready, then SSH."""
    ctx.lab.start(node)
    while not {"bootstrap-ok", "bootstrap-failed"} & set(node.scanner.markers):
        for n, marker in ctx.lab.poll():
            log(f"  {n.name:<16} {n.since_start():6.1f}s  {marker.kind}: {marker.line[:120]}")
        if node.scanner.fatal:
            return False, f"fatal console output: {node.scanner.fatal[0]}"
        if not ctx.lab.is_running(node):
            return False, "domain stopped while bootstrapping"
        if node.since_start() > DEADLINES["bootstrap"]:
            return False, f"no bootstrap marker within {DEADLINES['bootstrap']} s; console: {node.serial_log}"
        time.sleep(2)
    if "bootstrap-ok" not in node.scanner.markers:
        return False, node.scanner.markers["bootstrap-failed"].line
    ok_at = node.since_start()
    ready, _ = wait_ready(ctx, {node.name})
    if not ready:
        return False, f"IMAGEGEN-BOOTSTRAP-OK after {ok_at:.0f} s, not Ready within {DEADLINES['ready']} s"
    node.note("ready")
    ready_at = node.since_start()
    ssh = ctx.ssh_of[node.name].wait_ready(time.monotonic() + DEADLINES["ssh"])
    if ssh:
        node.note("ssh")
    return ssh, (f"IMAGEGEN-BOOTSTRAP-OK {ok_at:.0f} s and Ready {ready_at:.0f} s after its start"
                 + ("" if ssh else f"; no SSH within {DEADLINES['ssh']} s"))


def new_domain(ctx: ClusterContext, like: str, spec: dict[str, str], seed: Path) -> Node:
    """A domain for a planned node that was not in the lab yet, sized like node `like`, with its SSH helper."""
    ctx.lab.add_dhcp_host(HostEntry(spec["mac"], spec["ip"], spec["name"]))
    node = ctx.lab.add_node_like(like, name=spec["name"], ip=spec["ip"], mac=spec["mac"], seed=seed)
    key = next(iter(ctx.ssh_of.values())).key
    ctx.ssh_of[node.name] = Ssh(node.ip, ctx.plan.admin_user, key)
    return node


def added_workers(ctx: ClusterContext) -> list[Node]:
    planned = {n.name for n in ctx.plan.nodes}
    return [n for n in ctx.workers if n.name not in planned]


def kubectl_bin(ctx: ClusterContext) -> str:
    return ctx.kubectl.base[0]


# --- (a) a worker added after the token expired ---------------------------------------------------------------

def free_wrong_token_nodes(ctx: ClusterContext) -> None:
    """The wrong-token nodes did their part: keep their logs (the evidence) and give their cores to day 2."""
    for b in ctx.bad:
        if ctx.lab.is_running(b):
            log(f"pulling guest logs of {b.name}, then powering it off for day 2 ...")
            pull_guest_logs(b, ctx.ssh_of[b.name], ctx.run_dir)
            ctx.lab.power_off(b)


def bearer_status(ctx: ClusterContext, token: str) -> str:
    """The HTTP status the API server (through the VIP, verified with admin.conf's CA) gives `token` for /api."""
    conf = yaml.safe_load((ctx.out / "admin.conf").read_text())
    cluster = conf["clusters"][0]["cluster"]
    tls = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    request = urllib.request.Request(f"{cluster['server']}/api", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30, context=tls) as reply:
            return str(reply.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except OSError as e:
        return f"no answer ({e})"


def first_token_expired(ctx: ClusterContext) -> tuple[bool, str]:
    """The token kubeadm init created expires for real (this suite's cluster.token_ttl is 15m): wait past its
    `expiration`; the controller-manager's tokencleaner then deletes its Secret and the API server answers it 401."""
    token = (ctx.run_dir / "state" / "bootstrap-token").read_text().strip()
    token_id = token.split(".", 1)[0]
    secret = f"bootstrap-token-{token_id}"
    code, out = ctx.kubectl.retry("-n", "kube-system", "get", "secret", secret, "-o", "json", "--ignore-not-found")
    if code != 0:
        return False, f"cannot read {secret}: {out[-200:]}"
    waited = 0.0
    if out.strip():
        expiration = base64.b64decode(json.loads(out)["data"]["expiration"]).decode()
        left = (datetime.fromisoformat(expiration.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
        if left > DAY2_DEADLINES["token-expiry"]:
            return False, f"{secret} expires at {expiration}, {left:.0f} s from now: is cluster.token_ttl short?"
        if left > 0:
            log(f"waiting {left:.0f} s for the first bootstrap token to expire ({expiration}) ...")
            time.sleep(left)
            waited = left
    gone = wait_gone(ctx.kubectl, "-n", "kube-system", "secret", secret)
    status = bearer_status(ctx, token)
    return gone and status == "401", (f"first token {token_id} expired (waited {waited:.0f} s): Secret "
                                      f"{'deleted by the tokencleaner' if gone else 'STILL THERE'}, the API server "
                                      f"answers it {status}")


def prepare_worker(ctx: ClusterContext, spec: dict[str, str]) -> tuple[bool, str]:
    p = Day2Paths.of(ctx.run_dir)
    notes: list[str] = []
    ok, detail = first_token_expired(ctx)
    notes.append(detail)
    if not ok:
        return False, "; ".join(notes)
    ok, detail = token_apply_check(ctx.run_dir, ctx.out, ctx.kubectl)  # rotate into state-day2, apply
    notes.append(detail)
    if not ok:
        return False, "; ".join(notes)
    plan = ctx.run_dir / "plan.yaml"
    existing = {n.name for n in ctx.plan.nodes}
    # The rotated token: every running node keeps its instance-id; only the token's file would differ.
    report, why = imagegen_diff(ctx.run_dir, plan, ctx.out, p.state)
    if report is None:
        return False, f"rotated token: {why}"
    problems = diff_problems(report, existing, frozenset({TOKEN_ENTRY}))
    if problems:
        return False, "rotated token would re-provision running nodes: " + "; ".join(problems)
    notes.append(f"rotated token: no instance-id changes, only {TOKEN_ENTRY} differs")
    code, out = imagegen(ctx.run_dir, "render", str(plan), "--out", str(p.out), "--state", str(p.state), "--quiet")
    if code != 0:
        return False, f"imagegen render (rotated token): {out[-300:]}"
    before = node_hashes(p.out)
    # One more worker in the plan: imagegen's diff and manifest say no running node's files change.
    data = yaml.safe_load(plan.read_text())
    write_plan(p.plan, with_node(data, spec), f"one more worker, {spec['name']}")
    report, why = imagegen_diff(ctx.run_dir, p.plan, p.out, p.state)
    if report is None:
        return False, f"one more worker: {why}"
    problems = diff_problems(report, existing, frozenset(), new=spec["name"])
    code, out = imagegen(ctx.run_dir, "render", str(p.plan), "--out", str(p.out), "--state", str(p.state), "--quiet")
    if code != 0:
        return False, f"imagegen render (one more worker): {out[-300:]}"
    after = node_hashes(p.out)
    problems += [f"{name}: manifest.json digests changed" for name in sorted(existing) if before[name] != after[name]]
    if problems:
        return False, "adding a worker would touch running nodes: " + "; ".join(problems)
    notes.append(f"{spec['name']} added to the plan: diff says new, every other node unchanged, manifest.json "
                 "digests of the others identical")
    return True, "; ".join(notes)


def day2_add_worker(ctx: ClusterContext) -> None:
    with ctx.session.phase("day2-add-worker"):
        free_wrong_token_nodes(ctx)
        spec = next_worker(yaml.safe_load((ctx.run_dir / "plan.yaml").read_text()))
        if not ctx.rec.check("cluster", "day 2: first token expired, a rotated one applied; one more worker in the "
                             "plan changes no running node (imagegen diff, manifest.json)",
                             partial(prepare_worker, ctx, spec)):
            return
        seed = Day2Paths.of(ctx.run_dir).out / "seeds" / f"{spec['name']}.iso"
        node = new_domain(ctx, ctx.workers[0].name, spec, seed)
        log(f"starting {node.name} ({node.ip}, {node.mac}), seeded with the rotated token ...")
        ctx.rec.check(node.name, "day 2: worker added after the token expired joins and is Ready",
                      partial(boot_and_join, ctx, node))


# --- (b) node remove ------------------------------------------------------------------------------------------

def remove_worker(ctx: ClusterContext, node: Node) -> tuple[bool, str]:
    p = Day2Paths.of(ctx.run_dir)
    others = ready_names(ctx.kubectl) - {node.name}
    code, out = imagegen(ctx.run_dir, "node", "remove", str(p.plan), node.name, "--kubeconfig",
                         str(ctx.out / "admin.conf"), "--kubectl", kubectl_bin(ctx), timeout=900)
    if code != 0:
        return False, f"imagegen node remove ({code}): {out[-300:]}"
    ctx.lab.remove_node(node)  # "power the machine off, or its kubelet registers it again"
    ctx.ssh_of.pop(node.name, None)
    gone = wait_gone(ctx.kubectl, "node", node.name)
    ready, now = wait_ready(ctx, others)
    write_plan(p.plan, without_node(yaml.safe_load(p.plan.read_text()), node.name), f"{node.name} removed")
    missing = "" if ready else f", not: {sorted(others - now)}"
    return gone and ready, (f"{' '.join(out.split())[:200]}; Node {'gone' if gone else 'still there'}; "
                            f"still Ready: {sorted(others & now)}{missing}")


def day2_remove_worker(ctx: ClusterContext) -> None:
    with ctx.session.phase("day2-remove-worker"):
        added = added_workers(ctx)
        name = "day 2: `imagegen node remove` deletes the Node, the others stay Ready; its machine destroyed"
        if not added:
            ctx.rec.check("cluster", name, lambda: (False, "no worker was added by the step before"))
            return
        ctx.rec.check(added[0].name, name, partial(remove_worker, ctx, added[0]))


# --- (b2) kubelet client certificate rotation -------------------------------------------------------------------

KUBELET_CERTS = (  # per kubelet client certificate the kubelet kept: file, serial, notBefore and notAfter (epoch s)
    'for f in /var/lib/kubelet/pki/kubelet-client-2*.pem; do '
    'printf "%s %s %s %s\\n" "$f" "$(openssl x509 -noout -serial -in "$f" | cut -d= -f2)" '
    '"$(date -u -d "$(openssl x509 -noout -startdate -in "$f" | cut -d= -f2)" +%s)" '
    '"$(date -u -d "$(openssl x509 -noout -enddate -in "$f" | cut -d= -f2)" +%s)"; done; '
    'echo "current $(readlink -f /var/lib/kubelet/pki/kubelet-client-current.pem)"; echo "now $(date -u +%s)"')


def kubelet_certs(c: guest.Checker) -> tuple[list[tuple[str, str, int, int]], str, int, str]:
    """(certificates oldest first, the file kubelet-client-current.pem points to, the guest's clock, raw output)."""
    code, out = c.sudo(KUBELET_CERTS)
    certs: list[tuple[str, str, int, int]] = []
    current, now = "", 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
            certs.append((parts[0], parts[1], int(parts[2]), int(parts[3])))
        elif len(parts) == 2 and parts[0] == "current":
            current = parts[1]
        elif len(parts) == 2 and parts[0] == "now" and parts[1].isdigit():
            now = int(parts[1])
    return sorted(certs, key=lambda cert: cert[2]), current, now, out if code else ""


def kubelet_rotated(ctx: ClusterContext, node: Node, duration_s: int) -> tuple[bool, str]:
    """The worker's kubelet rotated its client certificate on its own (the controller-manager signs for
    cluster.certificate_signing_duration; the kubelet asks again at 70-90 % of a certificate's life): at least two
    certificates with different serials, each living about that duration, the current one the newest, and the node
    Ready on it."""
    c = ctx.checker(node)
    certs, current, now, bad = kubelet_certs(c)
    if certs and len({serial for _, serial, _, _ in certs}) < 2:
        first_end = certs[0][3]
        wait = min(first_end - now + 60, DAY2_DEADLINES["rotation"])  # past the end: it must have rotated by then
        log(f"{node.name}: one kubelet client certificate so far; waiting up to {wait} s for the rotation ...")
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait and len({serial for _, serial, _, _ in certs}) < 2:
            time.sleep(20)
            certs, current, now, bad = kubelet_certs(c)
    serials = {serial for _, serial, _, _ in certs}
    if len(serials) < 2:
        return False, f"no rotation: {len(certs)} certificate(s) {sorted(serials)}; {bad[-200:]}"
    lives = [end - start for _, _, start, end in certs]
    # The signer backdates notBefore by up to 5 minutes (clock skew): a life is duration .. duration + 5 min.
    right_life = all(duration_s - 60 <= life <= duration_s + 360 for life in lives)
    newest = certs[-1][0]
    ready = node.name in ready_names(ctx.kubectl)
    return right_life and current == newest and ready, (
        f"{len(certs)} client certificates, serials {[serial[-8:] for _, serial, _, _ in certs]}, lives {lives} s "
        f"(signing duration {duration_s} s); current -> {current.rsplit('/', 1)[-1]} "
        f"({'the newest' if current == newest else 'NOT the newest'}); Node {'Ready' if ready else 'NOT Ready'}")


def day2_kubelet_rotation(ctx: ClusterContext) -> None:
    with ctx.session.phase("day2-kubelet-rotation"):
        planned = {n.name for n in ctx.plan.nodes}
        worker = next(n for n in ctx.workers if n.name in planned)
        duration = ttl_seconds(ctx.plan.cluster.certificate_signing_duration)
        ctx.rec.check(worker.name, "day 2: the worker's kubelet rotated its client certificate (short "
                      "cluster.certificate_signing_duration) and stays Ready", partial(kubelet_rotated, ctx, worker,
                                                                                     duration))


# --- (c) node replace -----------------------------------------------------------------------------------------

def instance_id(out: Path, node: str) -> str:
    meta = yaml.safe_load((out / "nodes" / node / "meta-data").read_text()) or {}
    return str(meta.get("instance-id", ""))


def replace_worker(ctx: ClusterContext, dead: Node) -> tuple[bool, str]:
    p = Day2Paths.of(ctx.run_dir)
    spec = {"name": dead.name, "ip": dead.ip, "mac": dead.mac}
    if not p.state.exists():  # (a) did not get as far as the rotated token: make it now, never a new state
        ok, detail = token_apply_check(ctx.run_dir, ctx.out, ctx.kubectl)
        if not ok:
            return False, f"no state-day2: {detail}"
    ctx.lab.remove_node(dead)  # a dead machine: powered off, disk gone
    ctx.ssh_of.pop(dead.name, None)
    code, out = imagegen(ctx.run_dir, "node", "replace", str(p.plan), dead.name, "--kubeconfig",
                         str(ctx.out / "admin.conf"), "--kubectl", kubectl_bin(ctx), timeout=600)
    if code != 0:
        return False, f"imagegen node replace ({code}): {out[-300:]}"
    if not wait_gone(ctx.kubectl, "node", dead.name):
        return False, f"Node {dead.name} still there after node replace"
    if not p.plan.exists():
        write_plan(p.plan, yaml.safe_load((ctx.run_dir / "plan.yaml").read_text()), "unchanged so far")
    old_id = instance_id(ctx.out, dead.name)  # as the machine was first provisioned
    write_plan(p.plan, with_next_generation(yaml.safe_load(p.plan.read_text()), dead.name),
               f"{dead.name} re-provisioned (generation bumped)")
    code, out = imagegen(ctx.run_dir, "render", str(p.plan), "--out", str(p.out), "--state", str(p.state), "--quiet")
    if code != 0:
        return False, f"imagegen render: {out[-300:]}"
    new_id = instance_id(p.out, dead.name)
    if not new_id or new_id == old_id:
        return False, f"instance-id did not change ({old_id} -> {new_id}): cloud-init would not run again"
    # The token applied in (a) may have expired by now (ttl 1h): apply it again, as replace's next steps say.
    code, out = imagegen(ctx.run_dir, "token", "apply", str(p.plan), "--state", str(p.state), "--kubeconfig",
                         str(ctx.out / "admin.conf"), "--kubectl", kubectl_bin(ctx), timeout=300)
    if code != 0:
        return False, f"imagegen token apply: {out[-300:]}"
    node = new_domain(ctx, dead.name, spec, p.out / "seeds" / f"{dead.name}.iso")
    log(f"starting the replacement {node.name} ({node.ip}, {node.mac}), instance-id {new_id} ...")
    ok, detail = boot_and_join(ctx, node)
    return ok, f"instance-id {old_id} -> {new_id}; {detail}"


def day2_replace_worker(ctx: ClusterContext) -> None:
    with ctx.session.phase("day2-replace-worker"):
        planned = {n.name for n in ctx.plan.nodes}
        worker = next(n for n in ctx.workers if n.name in planned)
        ctx.rec.check(worker.name, "day 2: worker machine and disk destroyed, `imagegen node replace`, generation "
                      "bumped: a fresh machine with the same name, address and MAC joins and is Ready",
                      partial(replace_worker, ctx, worker))


# --- (d) certificates -----------------------------------------------------------------------------------------

def not_after(enddate: str) -> str:
    """Shell: the epoch seconds of the `notAfter=` line that `enddate` prints."""
    return f'date -u -d "$({enddate} | cut -d= -f2)" +%s'


CERT_FILE = not_after("openssl x509 -noout -enddate -in /etc/kubernetes/pki/apiserver.crt")
CERT_SERVED = not_after("port=$(sed -n -E 's/^[[:space:]]*bindPort:[[:space:]]*([0-9]+).*/\\1/p' "
                        "/etc/imagegen/kubeadm.yaml); echo | openssl s_client -connect 127.0.0.1:${port:-6443} "
                        "2>/dev/null | openssl x509 -noout -enddate")


def renew_control_plane(c: guest.Checker, kubectl: Kubectl) -> tuple[bool, str]:
    """`cert-renew.sh --now`: the node's own renewal (kubeadm certs renew all, then the four static pods restarted
    one at a time), without waiting for the certificate to be RENEW_DAYS from its end."""
    code, before = c.sudo(CERT_FILE)
    if code != 0 or not before.strip().isdigit():
        return False, f"cannot read apiserver.crt's notAfter: {before[-200:]}"
    code, out = c.sudo("/usr/local/lib/imagegen/cert-renew.sh --now", timeout=DAY2_DEADLINES["cert-renew"])
    _, after = c.sudo(CERT_FILE)
    _, served = c.sudo(CERT_SERVED)
    api, nodes = kubectl.retry("get", "nodes", "-o", "name")
    moved = after.strip().isdigit() and int(after) > int(before)
    ok = code == 0 and moved and served.strip() == after.strip() and api == 0
    return ok, (f"cert-renew.sh exit {code}: {' '.join(out.split())[-300:]}; apiserver.crt notAfter {before.strip()} "
                f"-> {after.strip()} (served on the port: {served.strip()}); kubectl via VIP: "
                f"{'ok' if api == 0 else ' '.join(nodes.split())[:120]}")


def renew_admin(ctx: ClusterContext) -> tuple[bool, str]:
    p = Day2Paths.of(ctx.run_dir)
    conf = p.out / "admin.conf"
    if not (p.plan.exists() and conf.exists()):
        return False, f"{p.plan} or {conf} missing: the steps before did not render the day-2 copy"
    before = conf.read_bytes()
    code, out = imagegen(ctx.run_dir, "kubeconfig", "renew", str(p.plan), "--out", str(p.out), "--state",
                         str(p.state))
    if code != 0:
        return False, f"imagegen kubeconfig renew: {out[-300:]}"
    fresh = Kubectl(Path(kubectl_bin(ctx)), conf, ctx.run_dir / "kube-cache-day2")
    api, nodes = fresh.retry("get", "nodes", "-o", "name")
    changed = conf.read_bytes() != before
    return api == 0 and changed, (f"{out.splitlines()[0][:200] if out else ''}; admin.conf "
                                  f"{'rewritten' if changed else 'unchanged'}; kubectl with it: "
                                  f"{' '.join(nodes.split())[:160]}")


def day2_certificates(ctx: ClusterContext) -> None:
    with ctx.session.phase("day2-certificates"):
        c = ctx.checker(ctx.cps[0])
        c.check("day 2: certificates renewed, cert-renew.sh restarts the control plane: apiserver notAfter later, "
                "kubectl via VIP works", partial(renew_control_plane, c, ctx.kubectl))
        ctx.rec.check("cluster", "day 2: `imagegen kubeconfig renew` writes an admin.conf that works",
                      partial(renew_admin, ctx))


# --- (e) etcd restore drill -----------------------------------------------------------------------------------

def ensure_namespace(kubectl: Kubectl, name: str) -> tuple[int, str]:
    manifest = f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"
    t0 = time.monotonic()
    while True:
        code, out = kubectl.run("apply", "-f", "-", stdin=manifest)
        if code == 0 or time.monotonic() - t0 > DEADLINES["kubectl"]:
            return code, out
        time.sleep(3)


def take_snapshot(c: guest.Checker) -> tuple[str, str]:
    """The node's own snapshot service; returns (path of the newest snapshot or '', output)."""
    code, out = c.sudo("systemctl start imagegen-etcd-snapshot.service && ls -t /var/backups/etcd/snapshot-*.db",
                       timeout=180)
    newest = out.splitlines()[0].strip() if code == 0 and out else ""
    return (newest if re.fullmatch(r"/var/backups/etcd/snapshot-[\w.-]+\.db", newest) else ""), out


def restore_drill(ctx: ClusterContext, c: guest.Checker) -> tuple[bool, str]:
    before = ready_names(ctx.kubectl)
    code, out = ensure_namespace(ctx.kubectl, "drill-before")
    if code != 0:
        return False, f"namespace drill-before: {out[-200:]}"
    snapshot, out = take_snapshot(c)
    if not snapshot:
        return False, f"no snapshot from imagegen-etcd-snapshot.service: {out[-300:]}"
    code, out = ensure_namespace(ctx.kubectl, "drill-after")
    if code != 0:
        return False, f"namespace drill-after: {out[-200:]}"
    code, out = c.sudo(f"{RESTORE} {snapshot}", timeout=DAY2_DEADLINES["etcd-restore"])
    (ctx.run_dir / "etcd-restore.log").write_text(out + f"\n[exit {code}]\n")
    last = out.splitlines()[-1] if out else ""
    if code != 0:
        return False, f"etcd-restore.sh exit {code}: {last[-400:]}"
    has_before, _ = ctx.kubectl.retry("get", "namespace", "drill-before", "-o", "name")
    after_gone = wait_gone(ctx.kubectl, "namespace", "drill-after")
    ready, now = wait_ready(ctx, before)
    return has_before == 0 and after_gone and ready, (
        f"{last[-300:]}; drill-before {'there' if has_before == 0 else 'MISSING'}, drill-after "
        f"{'gone' if after_gone else 'STILL THERE'}; Ready again: {sorted(before & now)}"
        + ("" if ready else f", not: {sorted(before - now)}"))


def restore_refused(ctx: ClusterContext, c: guest.Checker) -> tuple[bool, str]:
    snapshot, out = take_snapshot(c)
    if not snapshot:
        return False, f"no snapshot from imagegen-etcd-snapshot.service: {out[-300:]}"
    code, out = c.sudo(f"{RESTORE} {snapshot}", timeout=300)
    last = out.splitlines()[-1] if out else ""
    api, _ = ctx.kubectl.retry("get", "nodes", "-o", "name")
    return code == 1 and "multi-member" in last and api == 0, f"exit {code}: {last[-300:]}; API answers: {api == 0}"


def day2_etcd_restore(ctx: ClusterContext) -> None:
    with ctx.session.phase("day2-etcd-restore"):
        cp = ctx.cps[0]
        c = ctx.checker(cp)
        if len(ctx.cps) > 1:
            c.check("day 2: etcd-restore.sh refuses a multi-member etcd and changes nothing",
                    partial(restore_refused, ctx, c))
            return
        c.check("day 2: etcd restore drill: snapshot, etcd-restore.sh; the namespace made before it is there, the "
                "one made after it is gone, every node Ready again", partial(restore_drill, ctx, c))
