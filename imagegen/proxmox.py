"""Proxmox VE: the `qm set` lines that attach a node's rendered files as cloud-init `cicustom` snippets and give
its NIC the plan's MAC (`nodes/<name>/proxmox.txt`). Pure text; VMID is left for the operator to fill.

Snippet names are flat and carry the cluster's name (`<cluster>-<node>-user.yaml`), so one snippets storage holds
several clusters. Proxmox builds its NoCloud drive from the snippets when the VM has a cloud-init drive.
"""

from __future__ import annotations

from imagegen.plan import Node, Plan

STORAGE = "local"
SNIPPETS_DIR = "/var/lib/vz/snippets"   # the `local` storage's snippets directory
BRIDGE = "vmbr0"
# (snippet kind, the rendered file it is a copy of)
KINDS = (("user", "user-data"), ("network", "network-config"), ("meta", "meta-data"))


def snippet_name(plan: Plan, node: Node, kind: str) -> str:
    return f"{plan.cluster.name}-{node.name}-{kind}.yaml"


def cicustom(plan: Plan, node: Node, storage: str = STORAGE) -> str:
    return ",".join(f"{kind}={storage}:snippets/{snippet_name(plan, node, kind)}" for kind, _ in KINDS)


def instructions(plan: Plan, node: Node) -> str:
    lines = [
        f"# Proxmox VE: {node.name} ({node.role}) of cluster {plan.cluster.name}. Replace VMID with the VM's id.",
        f"# 1. Copy the node's files into the snippets directory of storage '{STORAGE}' ({SNIPPETS_DIR}; any",
        "#    storage with content type 'snippets' works: change 'local:' below). user-data holds the node's",
        "#    secrets: keep it 0600 there.",
    ]
    for kind, source in KINDS:
        lines.append(f"#    nodes/{node.name}/{source} -> {SNIPPETS_DIR}/{snippet_name(plan, node, kind)}")
    lines += [
        "# 2. On the Proxmox host:",
        f"qm set VMID --net0 virtio={node.mac},bridge={BRIDGE}",
        f"qm set VMID --ide2 {STORAGE}:cloudinit",
        f'qm set VMID --cicustom "{cicustom(plan, node)}"',
    ]
    return "\n".join(lines) + "\n"
