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

from imagegen.plan import Node, Plan

PACKAGE_REVISION = "1.1"


@dataclass(frozen=True)
class KubernetesFacts:
    node_ip: str | None                    # only for control planes (their own API server's address)
    endpoint_name: str
    endpoint_port: int
    join_attempts: int
    kubernetes_version: str
    container_runtime: str
    cni: str | None                        # only for the apply_cni step
    cni_manifest: str | None
    package_repository: str
    package_revision: str
    bundle_source: str
    bundle_label: str
    skip_phases: tuple[str, ...]
    previous_control_plane: str | None     # only for the join_control_plane step


@dataclass(frozen=True)
class NodeFacts:
    node_name: str
    node_role: str
    steps: tuple[str, ...]
    deadline_seconds: int
    packages: tuple[str, ...]
    kubernetes: KubernetesFacts | None = None


def node_facts(plan: Plan, node: Node, steps: tuple[str, ...], packages: tuple[str, ...]) -> NodeFacts:
    """Everything the node program needs to know about the plan, decided here once."""
    k8s = None
    if node.is_kubernetes:
        c, cps = plan.cluster, plan.control_planes
        previous = cps[cps.index(node) - 1] if node.role == "control-plane" and node != cps[0] else None
        k8s = KubernetesFacts(
            node_ip=str(node.ip) if node.role == "control-plane" else None,
            endpoint_name=plan.endpoint.name, endpoint_port=plan.endpoint.port,
            join_attempts=plan.bootstrap.join_attempts,
            kubernetes_version=str(c.kubernetes_version),
            container_runtime=c.container_runtime,
            cni=c.cni if "apply_cni" in steps else None,
            cni_manifest=c.cni_manifest if "apply_cni" in steps else None,
            package_repository=c.package_repository,
            package_revision=PACKAGE_REVISION,
            bundle_source=plan.bundle.source,
            bundle_label=plan.bundle.label,
            skip_phases=tuple(f"addon/{a}" for a in c.skip_addons),
            previous_control_plane=(str(previous.ip) if previous and "join_control_plane" in steps
                                    else None),
        )
    return NodeFacts(
        node_name=node.name, node_role=node.role, steps=steps,
        deadline_seconds=plan.bootstrap.deadline_seconds,
        packages=packages, kubernetes=k8s)


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
            # None: the fact does not apply to this node (no step it runs reads it), so it is not written.
            if f.name != "kubernetes" and value is not None:
                items.append((f.name.upper(), _shell_value(f.name, value)))
    return items


def to_env(facts: NodeFacts) -> bytes:
    lines = ["# imagegen: facts the first-boot script reads, quoted by imagegen.nodefacts. No secrets here."]
    lines += [f"{key}={shlex.quote(value)}" for key, value in env_items(facts)]
    return ("\n".join(lines) + "\n").encode()
