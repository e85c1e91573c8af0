"""`imagegen show PLAN --urls`: every URL and image a node will fetch, grouped by role, with the mirror that serves
each image, so an operator can fill a mirror before booting anything. Read from the plan, the distribution data
and the same rules rendering uses (imagegen.registries, imagegen.explain.kubeadm_images); no state needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagegen.explain import kubeadm_images
from imagegen.plan import ROLES, Node, Plan
from imagegen.profiles import load_distro
from imagegen.registries import image_source


@dataclass(frozen=True)
class Fetch:
    kind: str                     # package-repository, signing-key, file, package, image, packages
    target: str                   # URL, image reference or absolute path
    purpose: str
    mirrors: tuple[str, ...] = ()  # images: tried in order, the registry itself last; empty: the registry only
    condition: str = ""           # when the node fetches it (empty: always)


def _bundled(plan: Plan) -> str:
    return "only without a bundle" if plan.bundle.source == "online" else \
        f"only if the bundle ({plan.bundle.source}) lacks it"


def node_fetches(plan: Plan, node: Node) -> list[Fetch]:
    c = plan.cluster
    distro = load_distro(c.distro)
    lacking = "only those the image lacks (imagegen's image has them all)"
    if c.distro_mirror is not None:
        # cloud-init's apt module replaces the image's sources with this mirror (cloud-config.yaml.j2).
        suites = ", ".join(c.distro_mirror.suites_for(distro.codename))
        out = [Fetch("package-repository", c.distro_mirror.url, f"cluster.distro_mirror ({suites}; "
                     f"{' '.join(distro.mirror_components)}): its indexes at first boot (cloud-init's apt-get "
                     f"update), then this role's {c.distro} packages the image lacks")]
    else:
        out = [Fetch("packages", f"{c.distro} package repositories", "this role's distribution packages, from the "
                     "image's apt sources", condition=lacking)]
    if node.is_kubernetes:
        repo = c.package_repository.rstrip("/") + "/"
        out += [Fetch("package-repository", repo, "kubeadm, kubelet, kubectl, cri-tools, kubernetes-cni",
                      condition=_bundled(plan)),
                Fetch("signing-key", f"{repo}Release.key", "the Kubernetes repository's key",
                      condition=_bundled(plan))]
        if c.container_runtime == "docker" and c.cri_dockerd:
            out.append(Fetch("package", distro.cri_dockerd_package, "cri-dockerd", condition=_bundled(plan)))
        if c.cni_manifest and node == plan.first_control_plane:
            out.append(Fetch("file", c.cni_manifest, f"the {c.cni} manifest, applied once",
                             condition="unless a bundle carries extras/" + c.cni + ".yaml"))
        for image in kubeadm_images(plan, node):
            source = image_source(plan, image)
            bundled = plan.bundle.source != "online" and image != c.kube_vip_image
            out.append(Fetch("image", image, "kube-vip" if image == c.kube_vip_image else "kubeadm",
                             (*source.mirrors, source.registry) if source.mirrors else (),
                             _bundled(plan) if bundled else ""))
        if c.cni_manifest:
            out.append(Fetch("images", c.cni_manifest, f"the {c.cni} images this manifest names, through their "
                             "registries' mirrors"))
    if node.role == "registry" and plan.registry:
        out.append(Fetch("file", plan.registry.harbor_installer, f"Harbor {plan.registry.harbor_version} offline "
                         "installer"))
    return out


def fetches_by_role(plan: Plan) -> dict[str, Any]:
    roles = []
    for role in ROLES:
        nodes = [n for n in plan.nodes if n.role == role]
        if not nodes:
            continue
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for node in nodes:
            for f in node_fetches(plan, node):
                entry = seen.setdefault((f.kind, f.target), {
                    "kind": f.kind, "target": f.target, "purpose": f.purpose, "mirrors": list(f.mirrors),
                    "condition": f.condition, "nodes": []})
                entry["nodes"].append(node.name)
        fetches = list(seen.values())
        for entry in fetches:
            if len(entry["nodes"]) == len(nodes):
                entry["nodes"] = "all"
        roles.append({"role": role, "nodes": [n.name for n in nodes], "fetches": fetches})
    return {"cluster": plan.cluster.name, "container_runtime": plan.cluster.container_runtime,
            "bundle": plan.bundle.source, "roles": roles}


def fetches_text(data: dict[str, Any]) -> str:
    lines = [f"{data['cluster']}: what nodes fetch ({data['container_runtime']}, bundle {data['bundle']})"]
    for role in data["roles"]:
        lines.append(f"{role['role']} ({', '.join(role['nodes'])}):")
        for f in role["fetches"]:
            notes = [f["purpose"]]
            if f["condition"]:
                notes.append(f["condition"])
            if f["nodes"] != "all":
                notes.append(f"on {', '.join(f['nodes'])}")
            lines.append(f"  {f['kind']:<18} {f['target']}")
            lines.append(f"  {'':<18}   {'; '.join(notes)}")
            if f["mirrors"]:
                lines.append(f"  {'':<18}   from {' -> '.join(f['mirrors'])}")
    return "\n".join(lines)
