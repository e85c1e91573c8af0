"""Pure rendering: plan + state in, {relative path: Artifact} out. No file system writes, no clocks.

Per node: nodes/<name>/{user-data,user-data.gz,meta-data,network-config,guestinfo.vmx,govc-vm-change.sh,proxmox.txt}
and seeds/<name>.iso, seeds/<name>-configdrive.iso; for the cluster: admin.conf and manifest.json.

Nodes are independent, so a large plan's nodes render in worker processes (one per CPU, forked: they inherit the
plan, the state and the caches) while this process takes their files in plan order; the bytes are the same.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import jinja2
import yaml

from imagegen import channels, configdrive, kubeadm, nodeprogram, proxmox, registries, secretpolicy, userdata
from imagegen.kubeconfig import admin_kubeconfig
from imagegen.nodefacts import node_facts, to_env
from imagegen.plan import Node, Plan
from imagegen.profiles import Distro, FileSpec, Profile, load_distro, load_profile
from imagegen.seediso import build_seed_iso
from imagegen.state import ClusterState
from imagegen.templates import environment, evaluate, expression_names, string_names, template_names

BASE_MODULES = ("br_netfilter", "overlay", "nf_conntrack")
IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh")
CALICO_MODULES = ("ip_set", "ip_tables", "ip6_tables", "ipt_REJECT", "ipt_rpfilter", "ipt_set", "nf_conntrack_netlink",
                  "sctp", "xt_addrtype", "xt_comment", "xt_conntrack", "xt_ipvs", "xt_mark", "xt_multiport",
                  "xt_sctp", "xt_set", "xt_u32", "ipip")


@dataclass(frozen=True)
class Artifact:
    data: bytes
    mode: int = 0o644

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _secrets_for(profile: Profile, state: ClusterState) -> dict[str, str]:
    return secretpolicy.template_values(profile.secrets, state)


def _yaml_documents(docs: list[dict[str, Any]]) -> bytes:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000).encode()


def _generate(name: str, plan: Plan, node: Node, state: ClusterState, profile: Profile,
              ctx: dict[str, Any], memo: RenderMemo) -> bytes:
    if name == "bootstrap-env":
        return to_env(ctx["facts"])
    secrets = memo.secrets(profile)
    if name == "kubeadm-init":
        return _yaml_documents(kubeadm.init_documents(plan, node, secrets["bootstrap_token"],
                                                      secrets["certificate_key"], plan.cluster.token_ttl))
    if name == "kubeadm-join-control-plane":
        return _yaml_documents(kubeadm.join_documents(plan, node, secrets["bootstrap_token"], state.discovery_hash,
                                                      control_plane=True))
    if name == "kubeadm-join-worker":
        return _yaml_documents(kubeadm.join_documents(plan, node, secrets["bootstrap_token"], state.discovery_hash,
                                                      control_plane=False))
    if name == "etcd-patch":
        return _dump(kubeadm.ETCD_PATCH).encode()
    raise ValueError(f"profile {profile.name}: unknown generator {name}")


# -- template context ------------------------------------------------------------------------------------------

def kernel_modules(plan: Plan) -> tuple[str, ...]:
    mods = list(BASE_MODULES)
    if plan.cluster.kube_proxy_mode == "ipvs":
        mods += IPVS_MODULES
    if plan.cluster.cni == "calico":
        mods += [m for m in CALICO_MODULES if m not in mods]
    return tuple(mods)


def _docker_daemon(plan: Plan) -> dict[str, Any]:
    d = plan.cluster.docker
    daemon: dict[str, Any] = {
        "exec-opts": ["native.cgroupdriver=systemd"],
        "log-driver": "json-file",
        "log-opts": {"max-size": d.log_max_size, "max-file": str(d.log_max_file)},
        "storage-driver": "overlay2",
        "live-restore": True,
        "data-root": d.data_root,
    }
    mirrors = registries.docker_mirrors(plan)
    if mirrors:
        daemon["registry-mirrors"] = mirrors
    insecure = list(dict.fromkeys([*d.insecure_registries, *registries.docker_mirror_tls(plan)[1]]))
    if insecure:
        daemon["insecure-registries"] = insecure
    # Docker's bridge would NAT pod traffic of a CNI network it does not know about.
    if plan.cluster.cni == "host-gw":
        daemon["bridge"] = "none"
        daemon["iptables"] = True
    return daemon


def _host_gw_conflist(plan: Plan, node: Node) -> dict[str, Any] | None:
    if plan.cluster.cni != "host-gw" or not node.is_kubernetes:
        return None
    return {
        # 0.4.0: the newest version the CNI library of dockershim-era kubelets (1.20-1.23) reads.
        "cniVersion": "0.4.0",
        "name": "imagegen-host-gw",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             # The node's pod subnet is the cluster's to give (kube-controller-manager, Node.spec.podCIDR): the
             # host-gw agent (scripts/host-gw-routes.sh.j2) puts it here when the node has one.
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "NODE_POD_CIDR"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _kube_vip_manifests(plan: Plan, node: Node) -> list[dict[str, str]]:
    """kube-vip's static pod on admin.conf; the first control plane of a version where admin.conf has no RBAC
    binding until `kubeadm init` ends also gets one on super-admin.conf for init (kube-vip issue #684)."""
    if plan.endpoint.mode != "kube-vip" or node.role != "control-plane":
        return []
    manifests = [{"file": "kube-vip.yaml", "kubeconfig": "admin.conf"}]
    if node == plan.control_planes[0] and plan.cluster.rules.kube_vip_needs_super_admin:
        manifests.append({"file": "kube-vip-init.yaml", "kubeconfig": "super-admin.conf"})
    return manifests


def _apt_mirror(plan: Plan, distro: Distro) -> dict[str, str] | None:
    """cluster.distro_mirror as cloud-init's apt module takes it: one sources.list line per suite, the URL as
    cloud-init's own $PRIMARY (cloud-init fills it from `primary`), the distribution's components."""
    m = plan.cluster.distro_mirror
    if m is None:
        return None
    components = " ".join(distro.mirror_components)
    lines = "".join(f"deb $PRIMARY {suite} {components}\n" for suite in m.suites_for(distro.codename))
    return {"url": m.url, "sources_list": lines, "key": m.key}


def _shared_context(plan: Plan) -> dict[str, Any]:
    """The context values that are the same for every node of the plan (computed once per render)."""
    distro = load_distro(plan.cluster.distro)
    hosts, private = registries.registry_hosts(plan)
    return {
        "plan": plan, "cluster": plan.cluster, "endpoint": plan.endpoint, "network": plan.network,
        "distro": distro, "rules": plan.cluster.rules, "endpoint_address": plan.endpoint_address,
        "kernel_modules": kernel_modules(plan),
        "pause_image": kubeadm.pause_image(plan),
        "docker_daemon": _docker_daemon(plan),
        "registry_node": registries.registry_node(plan),
        "registry_hosts": hosts,
        "private_registries": private,
        "mirror_cas": registries.mirror_cas(plan),
        "docker_mirror_cas": registries.docker_mirror_tls(plan)[0],
        "vrrp_router_id": int(hashlib.sha256(plan.cluster.name.encode()).hexdigest(), 16) % 255 + 1,
        "patch_dir": kubeadm.PATCH_DIR,
        "apt_mirror": _apt_mirror(plan, distro),
    }


class _Uncacheable(Exception):
    """A context value that cannot be part of a cache key (a node, its facts): its template renders per node."""


_SCALARS = (str, int, bool, type(None))


def _frozen(value: Any) -> Any:
    """`value` as a hashable key that is equal only for values that render the same (types are part of it)."""
    kind = type(value)
    if kind in _SCALARS:
        return kind, value
    if kind is float:
        return kind, repr(value)
    if kind is tuple or kind is list:
        return kind, tuple(_frozen(v) for v in value)
    if kind is dict:
        return kind, tuple((_frozen(k), _frozen(v)) for k, v in value.items())
    raise _Uncacheable


class RenderMemo:
    """What one render computes once instead of once per node: the plan-wide context values, each profile's
    secrets and state items, and every template or expression output whose inputs are the same for many nodes.

    A template's output is reused only when every context name it reads (found by parsing it, through its
    includes) holds an equal value: plan-wide values are the same objects for every node; the rest must be plain
    data (strings, numbers, tuples, lists, dicts of those), compared by value and type. A template reading the
    node itself or its facts is rendered for each node. Lives for one render, so template edits between renders
    are seen."""

    MAX_ENTRIES = 4096  # outputs kept; beyond that, outputs are rendered and not kept (memory stays bounded)

    def __init__(self, plan: Plan, state: ClusterState) -> None:
        self.plan = plan
        self.state = state
        self.shared = _shared_context(plan)
        self._secrets: dict[str, dict[str, str]] = {}
        self._state_items: dict[tuple[str, str], bytes] = {}
        self._names: dict[tuple[str, str], frozenset[str] | None] = {}
        self._outputs: dict[Any, Any] = {}

    def secrets(self, profile: Profile) -> dict[str, str]:
        if profile.name not in self._secrets:
            self._secrets[profile.name] = _secrets_for(profile, self.state)
        return self._secrets[profile.name]

    def state_item(self, name: str, profile: Profile) -> bytes:
        key = (name, profile.name)
        if key not in self._state_items:
            self._state_items[key] = secretpolicy.state_item(name, profile.secrets, self.state, profile.name)
        return self._state_items[key]

    def _names_of(self, kind: str, text: str) -> frozenset[str] | None:
        key = (kind, text)
        if key not in self._names:
            if kind == "expression":
                self._names[key] = expression_names(text)
            elif kind == "string":
                self._names[key] = string_names(text)
            else:
                self._names[key] = template_names(text)
        return self._names[key]

    def _key(self, kind: str, text: str, ctx: dict[str, Any]) -> Any:
        names = self._names_of(kind, text)
        if names is None:
            return None
        shared = self.shared
        parts = []
        try:
            for name in sorted(names):
                if name in shared and ctx.get(name) is shared[name]:
                    continue
                parts.append((name, _frozen(ctx[name]) if name in ctx else None, name in ctx))
        except _Uncacheable:
            return None
        return kind, text, tuple(parts)

    def _cached(self, kind: str, text: str, ctx: dict[str, Any], make: Callable[[], Any]) -> Any:
        key = self._key(kind, text, ctx)
        if key is None:
            return make()
        try:
            return self._outputs[key]
        except KeyError:
            value = make()
            if len(self._outputs) < self.MAX_ENTRIES:
                self._outputs[key] = value
            return value

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        """`make()` for the first node asking for `key`, kept for the others."""
        if key not in self._outputs:
            self._outputs[key] = make()
        return self._outputs[key]

    def evaluate(self, expression: str, ctx: dict[str, Any]) -> Any:
        return self._cached("expression", expression, ctx, lambda: evaluate(expression, ctx))

    def render_string(self, text: str, ctx: dict[str, Any]) -> str:
        return str(self._cached("string", text, ctx, lambda: _compiled(text).render(ctx)))

    def render_template(self, name: str, ctx: dict[str, Any]) -> str:
        return str(self._cached("template", name, ctx, lambda: environment().get_template(name).render(ctx)))


def _steps(profile: Profile, ctx: dict[str, Any], memo: RenderMemo) -> list[str]:
    return [s.name for s in profile.steps if not s.when or memo.evaluate(s.when, ctx)]


def node_context(plan: Plan, node: Node, state: ClusterState, profile: Profile,
                 memo: RenderMemo | None = None) -> dict[str, Any]:
    memo = memo if memo is not None else RenderMemo(plan, state)
    cps = plan.control_planes
    lbs = plan.load_balancers
    ctx: dict[str, Any] = {
        **memo.shared,
        "node": node,
        "first_control_plane": node.role == "control-plane" and node == cps[0],
        "host_gw_conflist": _host_gw_conflist(plan, node),
        "vrrp_priority": 150 - 10 * lbs.index(node) if node in lbs else 0,
        "secrets": memo.secrets(profile),
        "kube_vip_manifests": _kube_vip_manifests(plan, node),
    }
    ctx["steps"] = _steps(profile, ctx, memo)
    groups = list(profile.packages)
    if node.is_kubernetes:
        groups.append(plan.cluster.container_runtime)
    ctx["packages"] = ctx["distro"].package_names(tuple(groups))
    ctx["facts"] = node_facts(plan, node, tuple(ctx["steps"]), ctx["packages"])
    return ctx


# -- user-data --------------------------------------------------------------------------------------------------

# libyaml's emitter when PyYAML has it (its wheels do): user-data emission dominates render time otherwise.
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[misc, valid-type]
    pass


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Multi-line file contents as literal blocks, so a reviewer reads golden files as the files themselves.
    if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) and "\t" not in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_presenter)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000,
                     allow_unicode=True)


@lru_cache(maxsize=4096)
def _dump_entry(path: str, permissions: str, content: str, append: bool) -> str:
    """One write_files item as YAML. Most items are identical across nodes of a role, so they are emitted once."""
    entry: dict[str, Any] = {"path": path, "owner": "root:root", "permissions": permissions, "content": content}
    if append:
        entry["append"] = True
    return _dump([entry])


@lru_cache(maxsize=1024)
def _compiled(text: str) -> jinja2.Template:
    return environment().from_string(text)


def _expand(spec: FileSpec, ctx: dict[str, Any], memo: RenderMemo | None = None
            ) -> Iterator[tuple[str, dict[str, Any]]]:
    if memo is None:
        if spec.when and not evaluate(spec.when, ctx):
            return
        items = evaluate(spec.foreach, ctx) if spec.foreach else [None]
        for item in items:
            local = {**ctx, "item": item}
            yield _compiled(spec.path).render(local), local
        return
    if spec.when and not memo.evaluate(spec.when, ctx):
        return
    items = memo.evaluate(spec.foreach, ctx) if spec.foreach else [None]
    for item in items:
        local = {**ctx, "item": item}
        yield memo.render_string(spec.path, local), local


# Generators whose output is the same for every node (no node, no secret in it).
_CONSTANT_GENERATORS = frozenset({"etcd-patch"})


def _node_entries(plan: Plan, node: Node, state: ClusterState, ctx: dict[str, Any], memo: RenderMemo
                  ) -> Iterator[tuple[str, str, str, bool]]:
    """(path, permissions, content, append) of one node's write_files entries, in profile order."""
    profile = load_profile(node.role)
    for spec in (*profile.files, *nodeprogram.program_files(ctx["steps"])):
        secret = spec.secret or secretpolicy.generator_is_secret(spec.generator)
        permissions = secretpolicy.SECRET_MODE if secret else spec.mode
        for path, local in _expand(spec, ctx, memo):
            if spec.template:
                name = memo.render_string(spec.template, local)
                content = memo.render_template(name, local)
                if not content.endswith("\n"):
                    content += "\n"
            elif spec.generator:
                if spec.generator in _CONSTANT_GENERATORS:
                    content = memo.once(("generator", spec.generator), partial(
                        _generate, spec.generator, plan, node, state, profile, ctx, memo)).decode()
                else:
                    content = _generate(spec.generator, plan, node, state, profile, ctx, memo).decode()
            else:
                content = memo.state_item(spec.state, profile).decode()
            yield path, permissions, content, spec.append


def node_files(plan: Plan, node: Node, state: ClusterState, ctx: dict[str, Any] | None = None,
               memo: RenderMemo | None = None) -> list[dict[str, Any]]:
    """The write_files entries of one node, in profile order."""
    memo = memo if memo is not None else RenderMemo(plan, state)
    ctx = ctx if ctx is not None else node_context(plan, node, state, load_profile(node.role), memo)
    entries: list[dict[str, Any]] = []
    for path, permissions, content, append in _node_entries(plan, node, state, ctx, memo):
        entry: dict[str, Any] = {"path": path, "owner": "root:root", "permissions": permissions, "content": content}
        if append:
            entry["append"] = True
        entries.append(entry)
    return entries


def render_user_data(plan: Plan, node: Node, state: ClusterState, memo: RenderMemo | None = None) -> bytes:
    memo = memo if memo is not None else RenderMemo(plan, state)
    profile = load_profile(node.role)
    ctx = node_context(plan, node, state, profile, memo)
    skeleton = yaml.load(memo.render_template("cloud-config.yaml.j2", ctx),
                         Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    entries = [_dump_entry(path, permissions, content, bool(append))
               for path, permissions, content, append in _node_entries(plan, node, state, ctx, memo)]
    return ("#cloud-config\n" + _dump(skeleton) + "write_files:\n" + "".join(entries)).encode()


def render_network_config(plan: Plan, node: Node) -> bytes:
    ctx = {"plan": plan, "node": node, "network": plan.network}
    return (environment().get_template("network-config.yaml.j2").render(ctx) + "\n").encode()


def instance_id(cluster_id: str, node: Node) -> str:
    """Stable for a node: the cluster's identity, the node's name and the generation the operator bumps only to
    re-provision it. Re-rendering after a token rotation, or after adding or removing other nodes, must not make
    cloud-init treat a running node as a new instance and re-run its per-instance modules over it."""
    digest = hashlib.sha256(f"{cluster_id}\0{node.name}\0{node.generation}".encode()).hexdigest()[:12]
    return f"{node.name}-{digest}"


def render_meta_data(node: Node, cluster_id: str) -> bytes:
    ctx = {"node": node, "instance_id": instance_id(cluster_id, node)}
    return (environment().get_template("meta-data.j2").render(ctx) + "\n").encode()


def render_node(plan: Plan, node: Node, state: ClusterState, memo: RenderMemo | None = None
                ) -> dict[str, Artifact]:
    user_data = render_user_data(plan, node, state, memo)
    network_config = render_network_config(plan, node)
    cluster_id = state.cluster_id or state.cluster_name
    meta_data = render_meta_data(node, cluster_id)
    seed = {"user-data": user_data, "meta-data": meta_data, "network-config": network_config}
    base = f"nodes/{node.name}"
    # VMware guestinfo carries the user-data (and so the node's secrets): 0600 like the user-data itself.
    meta = {"instance-id": instance_id(cluster_id, node), "local-hostname": node.name}
    guestinfo = channels.guestinfo(node.name, user_data, meta, network_config)
    # Cloud images: gzip user-data (checked against the plan's cluster.platform_limits), the OpenStack config
    # drive, Proxmox's cicustom lines. Both hold the user-data: 0600.
    gzipped = userdata.gzip_user_data(user_data)
    userdata.check(plan.cluster.platform_limits, node, user_data, gzipped)
    return {
        f"{base}/user-data": Artifact(user_data, 0o600),
        f"{base}/user-data.gz": Artifact(gzipped, 0o600),
        f"{base}/proxmox.txt": Artifact(proxmox.instructions(plan, node).encode()),
        f"seeds/{node.name}-configdrive.iso": Artifact(
            configdrive.build_config_drive(plan, node, meta["instance-id"], user_data), 0o600),
        f"{base}/meta-data": Artifact(meta_data),
        f"{base}/network-config": Artifact(network_config),
        f"{base}/guestinfo.vmx": Artifact(channels.vmx_fragment(guestinfo).encode(), 0o600),
        f"{base}/govc-vm-change.sh": Artifact(channels.govc_command(node.name, guestinfo).encode(), 0o600),
        f"seeds/{node.name}.iso": Artifact(build_seed_iso(seed), 0o600),
    }


# Nodes: a smaller plan renders in this process. Starting the workers costs about 50 ms and handing a node's files
# over about 0.35 ms, against 3 ms to render a node.
PARALLEL_FROM = 64
_CHUNK = 4  # nodes per task of a worker process: one round trip for four nodes' files
_HEAD_MAX = 16  # nodes rendered here before the workers start, to have rendered one of every role
_WINDOW_MAX = 32  # chunks handed to the workers and not taken yet (two per worker up to this): memory stays flat

_NodeFiles = tuple[list[tuple[str, Artifact]], dict[str, str]]  # one node's files in path order, and their sha256


def render_processes() -> int:
    """How many processes render a large plan when iter_render is not told: one per CPU this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def _node_files(plan: Plan, node: Node, state: ClusterState, memo: RenderMemo) -> _NodeFiles:
    files = sorted(render_node(plan, node, state, memo).items())
    return files, {path: artifact.sha256 for path, artifact in files}


_inherited: tuple[Plan, ClusterState, RenderMemo] | None = None  # in a worker process: the render it serves


def _exit_with(parent: int) -> None:
    """A worker whose main process was killed (SIGKILL: no shutdown) would wait for tasks forever: it ends."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _start_worker(plan: Plan, state: ClusterState, memo: RenderMemo, parent: int) -> None:
    global _inherited
    _inherited = (plan, state, memo)
    # The main process handles an interruption (Ctrl-C reaches the whole process group) and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with, args=(parent,), name="imagegen-parent-watch", daemon=True).start()


def _render_chunk(start: int, stop: int) -> list[_NodeFiles]:
    """In a worker process: nodes [start, stop), up to the first that fails (the main process renders that one
    again itself, so its error is raised there as it is, not as a copy pickled across)."""
    assert _inherited is not None
    plan, state, memo = _inherited
    done = []
    for node in plan.nodes[start:stop]:
        try:
            done.append(_node_files(plan, node, state, memo))
        except Exception:
            break
    return done


def _may_fork() -> bool:
    """Not in a daemon process (multiprocessing refuses it children), nor beside other threads (a lock one of them
    holds at the fork stays held in the child), nor where there is no fork."""
    return (not multiprocessing.current_process().daemon and threading.active_count() == 1
            and "fork" in multiprocessing.get_all_start_methods())


def _rendered_nodes(plan: Plan, state: ClusterState, memo: RenderMemo, processes: int) -> Iterator[_NodeFiles]:
    """Every node's files, in plan order: rendered here, or for a large plan by `processes` forked workers, at most
    two chunks per worker (and _WINDOW_MAX chunks in all) ahead of the consumer, so memory stays flat. A node a
    worker could not render (an error, a worker that died) is rendered here: the same bytes, or the error it
    raises."""
    nodes = plan.nodes
    if processes <= 1 or len(nodes) < PARALLEL_FROM or not _may_fork():
        for node in nodes:
            yield _node_files(plan, node, state, memo)
        return
    # Here first: nodes up to one of every role, which fills the caches the workers inherit (compiled templates,
    # the memo): a role's first node costs 10-20 times what the next one does.
    head: list[_NodeFiles] = []
    roles = {node.role for node in nodes}
    for node in nodes[:_HEAD_MAX]:
        head.append(_node_files(plan, node, state, memo))
        roles.discard(node.role)
        if not roles:
            break
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(plan, state, memo, os.getpid()))
    try:
        starts = iter(range(len(head), len(nodes), _CHUNK))
        window = min(2 * processes, _WINDOW_MAX)
        pending: deque[tuple[int, Future[list[_NodeFiles]] | None]] = deque()

        def submit() -> None:
            while len(pending) < window and (start := next(starts, None)) is not None:
                try:
                    future: Future[list[_NodeFiles]] | None = pool.submit(
                        _render_chunk, start, min(start + _CHUNK, len(nodes)))
                except Exception:  # the pool broke (a worker died): the rest renders here
                    future = None
                pending.append((start, future))

        submit()  # the first submit forks the workers, before the consumer starts any thread (writer.write_tree)
        yield from head
        del head
        while pending:
            start, future = pending.popleft()
            try:
                done = future.result() if future is not None else []
            except Exception:
                done = []
            submit()
            yield from done
            for node in nodes[start + len(done):min(start + _CHUNK, len(nodes))]:
                yield _node_files(plan, node, state, memo)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def iter_render(plan: Plan, state: ClusterState, progress: Callable[[Node, int, int], None] | None = None,
                processes: int | None = None) -> Iterator[tuple[str, Artifact]]:
    """Every artefact of the cluster, node by node, then admin.conf and manifest.json. Consumed as it comes (the
    CLI streams it to the writer), a render holds a few nodes' files at a time: memory does not grow with the
    cluster. Only the manifest's hashes are kept. `processes`: how many render a plan of PARALLEL_FROM nodes or
    more (default: render_processes()); 1 renders every node in this process."""
    owned: dict[str, dict[str, str]] = {}
    memo = RenderMemo(plan, state)
    workers = render_processes() if processes is None else processes
    rendered = _rendered_nodes(plan, state, memo, workers)
    for i, (node, (files, hashes)) in enumerate(zip(plan.nodes, rendered, strict=True)):
        owned[node.name] = hashes
        yield from files
        del files
        if progress:
            progress(node, i + 1, len(plan.nodes))
    admin = Artifact(admin_kubeconfig(plan, state), 0o600)
    yield "admin.conf", admin
    yield "manifest.json", Artifact(render_manifest(plan, state, owned, admin.sha256))


@dataclass
class RenderStats:
    """Counted while a render streams past (the CLI's summary), so nothing has to be kept."""

    files: int = 0
    bytes: int = 0
    seeds: int = 0

    def count(self, items: Iterable[tuple[str, Artifact]]) -> Iterator[tuple[str, Artifact]]:
        for path, artifact in items:
            self.files += 1
            self.bytes += len(artifact.data)
            self.seeds += path.startswith("seeds/") and path.endswith(".iso") and not path.endswith("-configdrive.iso")
            yield path, artifact


def render_cluster(plan: Plan, state: ClusterState,
                   progress: Callable[[Node, int, int], None] | None = None) -> dict[str, Artifact]:
    return dict(iter_render(plan, state, progress))


def render_manifest(plan: Plan, state: ClusterState, owned: dict[str, dict[str, str]], admin_sha256: str) -> bytes:
    """`owned`: node name -> {path: sha256} of the files rendered for that node."""
    nodes = []
    for node in plan.nodes:
        nodes.append({"name": node.name, "role": node.role, "ip": str(node.ip), "mac": node.mac,
                      "secrets": list(load_profile(node.role).secrets), "files": owned.get(node.name, {})})
    manifest = {
        "generator": "imagegen",
        "cluster": plan.cluster.name,
        "kubernetes_version": str(plan.cluster.kubernetes_version),
        "kubeadm_api": plan.cluster.rules.kubeadm_api_version,
        "container_runtime": plan.cluster.container_runtime,
        "endpoint": {"mode": plan.endpoint.mode, "name": plan.endpoint.name,
                     "address": str(plan.endpoint_address), "port": plan.endpoint.port},
        "discovery_hash": state.discovery_hash,
        "nodes": nodes,
        "files": {"admin.conf": admin_sha256},
    }
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
