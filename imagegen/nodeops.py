"""Day 2: take a node out of a running cluster (`imagegen node remove`) or clear the way for its re-provisioned
machine (`imagegen node replace`), with kubectl and the operator's admin.conf.

remove: cordon, drain, for a control plane remove its etcd member, delete the Node object.
replace: the old machine is dead, so no drain: remove the etcd member and delete the Node object, then say how
to boot the new machine (bump the node's `generation`, render, boot, `imagegen token apply`).

A control plane's etcd member is removed through `etcdctl` inside a running etcd static pod on ANOTHER control
plane (`kubectl exec`), with that node's healthcheck-client certificate. Quorum is never broken by accident: the
last control plane is never removed, and a control plane is removed only when every other member answers
`endpoint health --cluster` (--force overrides that health check, not the last-one refusal). Every check runs
before anything in the cluster changes.

Every kubectl call goes through `Kubectl.run`: an argument list (never a shell), `--kubeconfig` first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagegen.errors import UsageError
from imagegen.plan import Node, Plan

ETCDCTL = ("etcdctl", "--endpoints=https://127.0.0.1:2379", "--cacert", "/etc/kubernetes/pki/etcd/ca.crt",
           "--cert", "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
           "--key", "/etc/kubernetes/pki/etcd/healthcheck-client.key")
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
DRAIN_TIMEOUT = 300  # seconds, kubectl drain --timeout
CALL_TIMEOUT = 120  # seconds, any other kubectl call


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Kubectl:
    """The one door to the cluster: `kubectl --kubeconfig FILE ARGS...`, argument lists only."""

    binary: str
    kubeconfig: Path

    def run(self, *args: str, check: bool = True, timeout: int = CALL_TIMEOUT) -> Result:
        argv = [self.binary, "--kubeconfig", str(self.kubeconfig), *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise UsageError(f"--kubectl {self.binary}: not found; install kubectl or pass its path") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} did not answer within {timeout} s (is the API "
                               "endpoint reachable?)") from None
        result = Result(done.returncode, done.stdout, done.stderr)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()[-400:]
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed (exit {result.returncode}): {detail}")
        return result

    def json(self, *args: str) -> Any:
        out = self.run(*args).stdout
        if not out.strip():
            return None
        try:
            return json.loads(out)
        except ValueError:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: expected JSON, got {out.strip()[:200]!r}") from None


@dataclass(frozen=True)
class EtcdMember:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]

    @property
    def hex_id(self) -> str:
        return format(self.id, "x")  # etcdctl member remove takes the id in hex


@dataclass(frozen=True)
class EtcdView:
    pod: str  # the etcd pod (on another control plane) that etcdctl runs in
    members: tuple[EtcdMember, ...]
    target: EtcdMember | None
    healthy: frozenset[str]  # client URLs that answered endpoint health


class Refused(UsageError):
    """A safety check said no: exit 2, nothing changed."""


def _etcd_pod_elsewhere(kubectl: Kubectl, name: str) -> str | None:
    pods = kubectl.json("-n", "kube-system", "get", "pods", "-l", "component=etcd", "-o", "json") or {}
    for pod in pods.get("items", []):
        if pod.get("spec", {}).get("nodeName") == name or pod.get("status", {}).get("phase") != "Running":
            continue
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if statuses and not all(s.get("ready") for s in statuses):
            continue
        return str(pod["metadata"]["name"])
    return None


def _etcdctl(kubectl: Kubectl, pod: str, *args: str, check: bool = True) -> Result:
    return kubectl.run("-n", "kube-system", "exec", pod, "-c", "etcd", "--", *ETCDCTL, *args, check=check)


def _members(kubectl: Kubectl, pod: str) -> tuple[EtcdMember, ...]:
    out = _etcdctl(kubectl, pod, "member", "list", "-w", "json").stdout
    try:
        data = json.loads(out)
        return tuple(EtcdMember(int(m["ID"]), str(m.get("name", "")), tuple(m.get("peerURLs") or ()),
                                tuple(m.get("clientURLs") or ())) for m in data.get("members", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RuntimeError(f"etcdctl member list in {pod}: unexpected answer {out.strip()[:200]!r}") from None


def _healthy_endpoints(kubectl: Kubectl, pod: str) -> frozenset[str]:
    # etcdctl exits 1 when any endpoint is unhealthy; its JSON still lists every endpoint.
    result = _etcdctl(kubectl, pod, "endpoint", "health", "--cluster", "-w", "json", check=False)
    try:
        data = json.loads(result.stdout or "[]")
        return frozenset(str(e["endpoint"]) for e in data if e.get("health") is True)
    except (ValueError, KeyError, TypeError, AttributeError):
        return frozenset()  # no usable answer: nothing counts as healthy


def _find_member(members: tuple[EtcdMember, ...], name: str, node: Node | None) -> EtcdMember | None:
    for m in members:
        if m.name == name:
            return m
    if node is not None:  # a member that never started has no name yet; its peer URL carries the address
        peer = f"https://{node.ip}:2380"
        for m in members:
            if peer in m.peer_urls:
                return m
    return None


def etcd_view(kubectl: Kubectl, name: str, node: Node | None) -> EtcdView:
    pod = _etcd_pod_elsewhere(kubectl, name)
    if pod is None:
        raise Refused(f"{name} is the last control plane (no running etcd pod on another control plane): removing "
                      "it would end the cluster; imagegen does not do that (--force does not override this)")
    members = _members(kubectl, pod)
    target = _find_member(members, name, node)
    healthy = _healthy_endpoints(kubectl, pod) if target is not None else frozenset()
    return EtcdView(pod, members, target, healthy)


def quorum_problem(view: EtcdView) -> str | None:
    """Why removing the target member could break etcd, or None."""
    if view.target is None:
        return None
    others = [m for m in view.members if m.id != view.target.id]
    if not others:
        return f"etcd member {view.target.name} is the only member: removing it would end the cluster"
    def healthy(m: EtcdMember) -> bool:
        return bool(m.client_urls) and all(u in view.healthy for u in m.client_urls)

    sick = [m.name or m.hex_id for m in others if not healthy(m)]
    up = sum(healthy(m) for m in view.members)
    if up < len(view.members) // 2 + 1:
        return (f"etcd has no quorum ({up} of {len(view.members)} members healthy), so a member removal cannot "
                "commit; bring members back, or restore from a snapshot (README: etcd backup and restore)")
    if sick:
        return (f"etcd members {', '.join(sick)} are not healthy (etcdctl endpoint health --cluster); removing "
                f"{view.target.name} now could cost etcd its quorum: fix them first, or pass --force if you know "
                "the cluster keeps its quorum")
    return None


@dataclass(frozen=True)
class Outcome:
    lines: tuple[str, ...]
    in_plan: bool


def _node_object(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    found = kubectl.json("get", "node", name, "-o", "json", "--ignore-not-found")
    return found if isinstance(found, dict) else None


def _is_control_plane(obj: dict[str, Any] | None, node: Node | None) -> bool:
    labels = (obj or {}).get("metadata", {}).get("labels") or {}
    return (node is not None and node.role == "control-plane") or any(k in labels for k in CONTROL_PLANE_LABELS)


def _plan_node(plan: Plan, name: str) -> Node | None:
    try:
        node = plan.node(name)
    except KeyError:
        return None
    if not node.is_kubernetes:
        raise UsageError(f"{name} is a {node.role} node, not a Kubernetes node: remove it from the plan and "
                         "render again")
    return node


def remove_node(plan: Plan, name: str, kubectl: Kubectl, *, force: bool = False, drain: bool = True,
                drain_timeout: int = DRAIN_TIMEOUT, say: Callable[[str], None] = print) -> Outcome:
    """Take `name` out of the cluster (drain=False: replace, the machine is gone). Checks first, then changes."""
    node = _plan_node(plan, name)
    obj = _node_object(kubectl, name)
    control_plane = _is_control_plane(obj, node)
    if obj is None and node is None:
        raise UsageError(f"no node named {name} in the cluster or in the plan; `kubectl get nodes` lists the "
                         "cluster's")
    view = None
    if control_plane:
        view = etcd_view(kubectl, name, node)
        problem = quorum_problem(view)
        if problem and not force:
            raise Refused(f"not removing {name}: {problem}")
        if problem:
            say(f"warning: --force: {problem}")
    done: list[str] = []
    if obj is None:
        say(f"{name}: no Node object in the cluster (nothing to cordon, drain or delete)")
    elif drain:
        kubectl.run("cordon", name)
        say(f"{name}: cordoned")
        kubectl.run("drain", name, "--ignore-daemonsets", plan.cluster.rules.drain_emptydir_flag,
                    f"--timeout={drain_timeout}s", timeout=drain_timeout + 60)
        say(f"{name}: drained")
        done += ["cordoned", "drained"]
    if view is not None:
        if view.target is None:
            say(f"{name}: no etcd member of that name (nothing to remove from etcd)")
        else:
            _etcdctl(kubectl, view.pod, "member", "remove", view.target.hex_id)
            say(f"{name}: etcd member {view.target.hex_id} removed (through {view.pod})")
            done.append("etcd member removed")
    if obj is not None:
        kubectl.run("delete", "node", name)
        say(f"{name}: Node object deleted")
        done.append("Node deleted")
    return Outcome(tuple(done), node is not None)


def remove_next_steps(plan_file: str, name: str, in_plan: bool) -> str:
    if not in_plan:
        return f"{name} is out of the cluster; it is not in {plan_file}, so nothing more to do there."
    return (f"{name} is out of the cluster but still in {plan_file}: delete it from the plan's nodes and render "
            "again (load balancers and /etc/hosts list the plan's nodes); power the machine off, or its kubelet "
            "registers it again.")


def replace_next_steps(plan_file: str, node: Node) -> str:
    return "\n".join([
        f"{node.name}'s stale Node object and etcd member are gone. Next:",
        f"  1. in {plan_file}, set `generation: {node.generation + 1}` on node {node.name} (a new instance-id, "
        "so cloud-init runs again on the new machine)",
        f"  2. imagegen render {plan_file} --out OUT",
        f"  3. boot the new machine with OUT/seeds/{node.name}.iso (same name, address and MAC as planned)",
        f"  4. if the bootstrap token may have expired (cluster.token_ttl): imagegen token apply {plan_file} "
        "--kubeconfig OUT/admin.conf, before the boot",
    ])


# -- CLI ------------------------------------------------------------------------------------------------------

def _kubectl(args: argparse.Namespace) -> Kubectl:
    kubeconfig = Path(args.kubeconfig)
    if not kubeconfig.is_file():
        raise UsageError(f"--kubeconfig {kubeconfig}: not a file; use the admin.conf `imagegen render` wrote")
    return Kubectl(args.kubectl, kubeconfig)


def cmd_node_remove(args: argparse.Namespace) -> int:
    from imagegen.plan import load_plan

    if args.drain_timeout < 1:
        raise UsageError(f"--drain-timeout {args.drain_timeout}: give a number of seconds, at least 1")
    plan = load_plan(args.plan)
    outcome = remove_node(plan, args.name, _kubectl(args), force=args.force, drain_timeout=args.drain_timeout)
    print(remove_next_steps(args.plan, args.name, outcome.in_plan))
    return 0


def cmd_node_replace(args: argparse.Namespace) -> int:
    from imagegen.plan import load_plan

    plan = load_plan(args.plan)
    node = _plan_node(plan, args.name)
    if node is None:
        raise UsageError(f"{args.plan}: no node named {args.name}; replace re-provisions a planned node (to take "
                         "one out for good, use `imagegen node remove`)")
    if node == plan.first_control_plane:
        raise UsageError(f"{args.name} is the plan's first control plane, whose first boot runs `kubeadm init` (a "
                         "new, empty cluster): list another control plane first in the plan's nodes, then replace "
                         f"{args.name}")
    remove_node(plan, args.name, _kubectl(args), force=args.force, drain=False)
    print(replace_next_steps(args.plan, node))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    n = sub.add_parser("node", help="take a node out of the running cluster, or make way for its replacement")
    nsub = n.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    rm = nsub.add_parser("remove", help="cordon, drain, remove a control plane's etcd member, delete the Node",
                         description="Takes NAME out of the running cluster with kubectl: cordon, drain, for a "
                                     "control plane remove its etcd member (through etcdctl in the etcd pod of "
                                     "another control plane), delete the Node object. Refuses (exit 2, nothing "
                                     "changed) the last control plane, and a control plane while another etcd "
                                     "member is unhealthy (unless --force).")
    rp = nsub.add_parser("replace", help="clear a dead node's Node object and etcd member before re-provisioning",
                         description="For a machine that is gone: removes its Node object and (control plane) "
                                     "etcd member without draining, with the same quorum checks as remove, and "
                                     "prints how to boot its replacement (bump nodes[].generation, render, boot).")
    for p in (rm, rp):
        p.add_argument("plan", metavar="PLAN", help="the cluster plan (Kubernetes version, the node's role)")
        p.add_argument("name", metavar="NAME", help="the node's name")
        p.add_argument("--kubeconfig", required=True, metavar="FILE", help="the admin.conf `imagegen render` wrote")
        p.add_argument("--kubectl", default="kubectl", metavar="BIN", help="kubectl to run (default: from PATH)")
        p.add_argument("--force", action="store_true", help="remove a control plane even when another etcd member "
                                                            "is unhealthy (never the last control plane)")
    rm.add_argument("--drain-timeout", type=int, default=DRAIN_TIMEOUT, metavar="SECONDS",
                    help=f"give up draining after this long (default {DRAIN_TIMEOUT})")
    rm.set_defaults(func=cmd_node_remove)
    rp.set_defaults(func=cmd_node_replace)
