"""`imagegen explain PLAN NODE`: what one node will do, read from the same profile, context and rules rendering
uses (no secrets needed: the layout of a node never depends on a secret's value).

`explain_node` returns plain data (the `-o json` shape, keys documented in the README); `explain_text` prints it.
"""

from __future__ import annotations

from typing import Any, cast

from imagegen import kubeadm, secretpolicy
from imagegen.plan import Node, Plan
from imagegen.profiles import FileSpec, Profile, load_profile
from imagegen.registries import image_source
from imagegen.render import _expand, node_context
from imagegen.state import ClusterState
from imagegen.versiontable import version_table

_DEFAULT_REPOSITORIES = ("registry.k8s.io", "k8s.gcr.io")


class _Placeholders:
    """Stands in for the state: explain reads a node's layout, never a secret."""

    bootstrap_token = "abcdef.0123456789abcdef"
    certificate_key = "0" * 64
    vrrp_password = "placehld"
    harbor_admin_password = "Placeholder1"
    harbor_db_password = "Placeholder1"
    discovery_hash = "sha256:" + "0" * 64
    mirror_auth = ()  # explain reads no state: config.toml is shown as it is without mirror credentials


def _groups(spec: FileSpec, profile: Profile) -> list[str]:
    return [g.value for g in secretpolicy.file_groups(state=spec.state, generator=spec.generator,
                                                      secret_template=spec.secret and bool(spec.template),
                                                      profile_groups=profile.secrets)]


def _source(spec: FileSpec) -> str:
    if spec.template:
        return f"template {spec.template}"
    if spec.generator:
        return f"generator {spec.generator}"
    return f"state {spec.state}"


def kubeadm_images(plan: Plan, node: Node) -> list[str]:
    """The images kubeadm of the plan's version pulls for this node's role (`kubeadm config images list` plus the
    node's runtime pause image); etcd and CoreDNS tags from the version table unless the plan pins etcd."""
    c = plan.cluster
    repo = c.image_repository
    tag = c.kubernetes_version.tag
    release = version_table().release(c.kubernetes_version.minor)
    images: list[str] = []
    if node.role == "control-plane":
        images += [f"{repo}/{name}:{tag}" for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")]
    if "kube-proxy" not in c.skip_addons:
        images.append(f"{repo}/kube-proxy:{tag}")
    images.append(kubeadm.pause_image(plan))
    if node.role == "control-plane":
        etcd = c.etcd_image_tag or (release.etcd if release else "")
        if etcd:
            images.append(f"{repo}/etcd:{etcd}")
        if "coredns" not in c.skip_addons and release:
            # kubeadm keeps the coredns/ sub-path only for its default repositories (from 1.21).
            path = "coredns/coredns" if repo in _DEFAULT_REPOSITORIES and c.kubernetes_version.minor >= 21 \
                else "coredns"
            images.append(f"{repo}/{path}:{release.coredns}")
        if plan.endpoint.mode == "kube-vip":
            images.append(c.kube_vip_image)
    return images


def _image_source(plan: Plan, image: str) -> str:
    if plan.bundle.source in ("disk", "image") and not image.startswith(plan.cluster.kube_vip_image):
        return f"bundle ({plan.bundle.source}); pulled from {image.split('/')[0]} only if the bundle lacks it"
    # The mirrors the node's runtime configuration names (imagegen.registries), in the order they are tried.
    source = image_source(plan, image)
    where = " -> ".join((*source.mirrors, source.registry))
    via = "a bundle when one is found, else " if plan.bundle.source == "online" else ""
    return f"{via}{where}"


def explain_node(plan: Plan, name: str) -> dict[str, Any]:
    try:
        node = plan.node(name)
    except KeyError:
        raise LookupError(name) from None
    profile = load_profile(node.role)
    ctx = node_context(plan, node, cast(ClusterState, _Placeholders()), profile)
    files = []
    for spec in profile.files:
        for path, _local in _expand(spec, ctx):
            groups = _groups(spec, profile)
            secret = bool(groups) or spec.secret or spec.generator.startswith("kubeadm")
            files.append({"path": path, "mode": "0600" if secret else spec.mode, "secret_groups": groups,
                          "source": _source(spec)})
    c = plan.cluster
    out: dict[str, Any] = {
        "node": node.name,
        "role": node.role,
        "description": profile.description,
        "addresses": {"ip": str(node.ip), "mac": node.mac, "interface": plan.network.interface,
                      "cidr": str(plan.network.cidr), "gateway": str(plan.network.gateway),
                      "dns": [str(d) for d in plan.network.dns],
                      "endpoint": f"{plan.endpoint.name}:{plan.endpoint.port} -> {plan.endpoint_address}"},
        "steps": list(ctx["steps"]),
        "files": files,
        "secret_groups": list(profile.secrets),
        "packages": {"distribution": list(ctx["packages"]), "distribution_source": f"{c.distro} package "
                     "repositories (or the node image, which has them baked in)"},
        "images": [],
        "console": {"ok": f"IMAGEGEN-BOOTSTRAP-OK node={node.name} role={node.role} seconds=N",
                    "failed": f"IMAGEGEN-BOOTSTRAP-FAILED node={node.name} step=STEP reason=REASON",
                    "log": "/var/log/imagegen/bootstrap.log"},
    }
    if node.is_kubernetes:
        out["kubernetes_version"] = str(c.kubernetes_version)
        out["packages"]["kubernetes"] = ["kubeadm", "kubelet", "kubectl"]
        out["packages"]["kubernetes_source"] = (
            f"bundle ({plan.bundle.source})" if plan.bundle.source != "online"
            else f"a bundle when one is found, else {c.package_repository}")
        out["images"] = [{"image": image, "from": _image_source(plan, image)} for image in kubeadm_images(plan, node)]
        if c.cni_manifest and node.role == "control-plane" and node == plan.first_control_plane:
            out["cni_manifest"] = c.cni_manifest
    return out


def explain_text(data: dict[str, Any]) -> str:
    a = data["addresses"]
    lines = [f"{data['node']}: {data['role']} — {data['description']}".rstrip(" —"),
             f"  address   {a['ip']} on {a['interface']} (MAC {a['mac']}), {a['cidr']} via {a['gateway']}, "
             f"DNS {', '.join(a['dns']) or 'none'}",
             f"  endpoint  {a['endpoint']}"]
    if "kubernetes_version" in data:
        lines.append(f"  version   Kubernetes {data['kubernetes_version']}")
    lines.append("steps (in order):")
    lines += [f"  {i}. {step}" for i, step in enumerate(data["steps"], 1)]
    lines.append(f"files ({len(data['files'])}):")
    width = max(len(f["path"]) for f in data["files"])
    for f in data["files"]:
        lines.append(f"  {f['path']:<{width}}  {f['mode']}  {', '.join(f['secret_groups']) or '-'}")
    pk = data["packages"]
    lines.append(f"packages from {pk['distribution_source']}:")
    lines.append(f"  {' '.join(pk['distribution'])}")
    if "kubernetes" in pk:
        lines.append(f"  {' '.join(pk['kubernetes'])} from {pk['kubernetes_source']}")
    if data["images"]:
        lines.append("images:")
        lines += [f"  {i['image']}  <- {i['from']}" for i in data["images"]]
    if "cni_manifest" in data:
        lines.append(f"  and the CNI's images, as {data['cni_manifest']} names them")
    lines.append("console (last line of the first boot):")
    lines.append(f"  {data['console']['ok']}")
    lines.append(f"  or {data['console']['failed']}   (details: {data['console']['log']})")
    return "\n".join(lines)
