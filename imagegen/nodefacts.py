"""The typed contract between a plan and a node's first-boot program: `NodeFacts`, serialised as bootstrap.env.

bootstrap.env is sourced as root by /usr/local/lib/imagegen/bootstrap.sh, so it is written by code, never by a
template: every value goes through `shlex.quote`, whatever it holds. The plan's edge checks (imagegen.values)
already refuse values with shell or line syntax in them; quoting here means a value that slipped past them would
still be a string, never a command. Each field is read by the node program (tests/test_nodefacts.py checks that
every key of every role is read by the scripts that role receives).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields

from imagegen import kubeadm
from imagegen.plan import Node, Plan

PACKAGE_REVISION = "1.1"


@dataclass(frozen=True)
class KubernetesFacts:
    kubernetes_version: str
    container_runtime: str
    cri_dockerd: bool
    cni: str
    cni_manifest: str
    package_repository: str
    package_revision: str
    bundle_source: str
    bundle_label: str
    skip_phases: tuple[str, ...]
    patches_flag: str
    previous_control_plane: str
    kube_vip: bool
    kube_vip_super_admin: bool


@dataclass(frozen=True)
class NodeFacts:
    node_name: str
    node_role: str
    node_ip: str
    steps: tuple[str, ...]
    deadline_seconds: int
    join_attempts: int
    endpoint_name: str
    endpoint_port: int
    packages: tuple[str, ...]
    kubernetes: KubernetesFacts | None = None


def node_facts(plan: Plan, node: Node, steps: tuple[str, ...], packages: tuple[str, ...]) -> NodeFacts:
    """Everything the node program needs to know about the plan, decided here once."""
    k8s = None
    if node.is_kubernetes:
        c, cps = plan.cluster, plan.control_planes
        previous = cps[cps.index(node) - 1] if node.role == "control-plane" and node != cps[0] else None
        k8s = KubernetesFacts(
            kubernetes_version=str(c.kubernetes_version),
            container_runtime=c.container_runtime,
            cri_dockerd=c.cri_dockerd,
            cni=c.cni,
            cni_manifest=c.cni_manifest,
            package_repository=c.package_repository,
            package_revision=PACKAGE_REVISION,
            bundle_source=plan.bundle.source,
            bundle_label=plan.bundle.label,
            skip_phases=tuple(f"addon/{a}" for a in c.skip_addons),
            patches_flag="" if c.rules.patches_in_config else f"--experimental-patches={kubeadm.PATCH_DIR}",
            previous_control_plane=str(previous.ip) if previous else "",
            kube_vip=plan.endpoint.mode == "kube-vip",
            kube_vip_super_admin=c.rules.kube_vip_needs_super_admin,
        )
    return NodeFacts(
        node_name=node.name, node_role=node.role, node_ip=str(node.ip), steps=steps,
        deadline_seconds=plan.bootstrap.deadline_seconds, join_attempts=plan.bootstrap.join_attempts,
        endpoint_name=plan.endpoint.name, endpoint_port=plan.endpoint.port, packages=packages, kubernetes=k8s)


# Lists travel as one word list each; the separator is what the node program splits on.
_SEPARATORS = {"skip_phases": ","}


def _shell_value(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return _SEPARATORS.get(name, " ").join(str(v) for v in value)
    return str(value)


def env_items(facts: NodeFacts) -> list[tuple[str, str]]:
    """(VARIABLE, value) pairs in a fixed order: the node's facts, then its Kubernetes facts if any."""
    items: list[tuple[str, str]] = []
    for group in (facts, facts.kubernetes):
        if group is None:
            continue
        for f in fields(group):
            value = getattr(group, f.name)
            if f.name != "kubernetes":
                items.append((f.name.upper(), _shell_value(f.name, value)))
    return items


def to_env(facts: NodeFacts) -> bytes:
    lines = ["# imagegen: facts the first-boot script reads, quoted by imagegen.nodefacts. No secrets here."]
    lines += [f"{key}={shlex.quote(value)}" for key, value in env_items(facts)]
    return ("\n".join(lines) + "\n").encode()
