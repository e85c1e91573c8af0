"""kubeadm configuration documents for one node, shaped for the API generation its version accepts.

Built as data (dicts) rather than text templates because the three API generations differ in structure
(extraArgs as a map or a list, where timeouts and patches live), which is logic, not layout.
"""

from __future__ import annotations

from typing import Any

from imagegen.plan import Node, Plan
from imagegen.versions import VersionRules

PATCH_DIR = "/etc/kubernetes/imagegen-patches"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"


def cri_socket(plan: Plan) -> str:
    c = plan.cluster
    rules = c.rules
    if c.container_runtime == "containerd":
        path = "/run/containerd/containerd.sock"
    elif rules.has_dockershim:
        path = "/var/run/dockershim.sock"
    else:
        path = "/var/run/cri-dockerd.sock"
    return f"unix://{path}" if rules.cri_socket_uri_scheme else path


def api_bind_port(plan: Plan) -> int:
    """The port each control plane's API server binds. Behind imagegen's load balancers it is 6443 (nginx maps
    endpoint.port to it); with `single` or `kube-vip` (ARP mode forwards no ports) clients reach the API server
    itself at endpoint.port, so it must bind that port."""
    return 6443 if plan.endpoint.mode == "load-balancer" else plan.endpoint.port


def _args(rules: VersionRules, args: dict[str, str]) -> Any:
    if rules.extra_args_as_list:
        return [{"name": k, "value": v} for k, v in sorted(args.items())]
    return dict(sorted(args.items()))


def image_repository(plan: Plan) -> str:
    return plan.cluster.image_repository


def pause_image(plan: Plan) -> str:
    return f"{plan.cluster.image_repository}/pause:{plan.cluster.rules.pause_tag}"


def ignore_preflight(plan: Plan, node: Node) -> list[str]:
    items = list(plan.cluster.ignore_preflight_errors)
    if "coredns" in plan.cluster.skip_addons:
        # kubeadm's preflight pulls the CoreDNS image even when the addon phase is skipped.
        items.append("ImagePull")
    return sorted(set(items))


def _node_registration(plan: Plan, node: Node, control_plane: bool) -> dict[str, Any]:
    rules = plan.cluster.rules
    reg: dict[str, Any] = {
        "name": node.name,
        "criSocket": cri_socket(plan),
        "kubeletExtraArgs": _args(rules, {"node-ip": str(node.ip)}),
        "ignorePreflightErrors": ignore_preflight(plan, node),
    }
    if not control_plane:
        reg["taints"] = []
    return reg


def _cluster_configuration(plan: Plan) -> dict[str, Any]:
    c = plan.cluster
    rules = c.rules
    sans = sorted({plan.endpoint.name, str(plan.endpoint_address), "127.0.0.1", "localhost",
                   *(str(n.ip) for n in plan.control_planes), *(n.name for n in plan.control_planes)})
    cm_args = {rules.signing_duration_flag: c.certificate_signing_duration, **c.args_for("controller-manager")}
    etcd_local: dict[str, Any] = {"dataDir": "/var/lib/etcd"}
    if c.etcd_image_tag:
        etcd_local["imageTag"] = c.etcd_image_tag
    if c.args_for("etcd"):
        etcd_local["extraArgs"] = _args(rules, c.args_for("etcd"))
    doc: dict[str, Any] = {
        "apiVersion": rules.kubeadm_api_version,
        "kind": "ClusterConfiguration",
        "clusterName": c.name,
        "kubernetesVersion": c.kubernetes_version.tag,
        "controlPlaneEndpoint": plan.endpoint_hostport,
        "imageRepository": c.image_repository,
        "networking": {"podSubnet": str(c.pod_cidr), "serviceSubnet": str(c.service_cidr),
                       "dnsDomain": c.dns_domain},
        "apiServer": {"certSANs": sans},
        "controllerManager": {"extraArgs": _args(rules, cm_args)},
        "scheduler": {"extraArgs": _args(rules, c.args_for("scheduler"))},
        "etcd": {"local": etcd_local},
    }
    if c.args_for("apiserver"):
        doc["apiServer"]["extraArgs"] = _args(rules, c.args_for("apiserver"))
    if rules.kubeadm_api == "v1beta2":
        doc["dns"] = {"type": "CoreDNS"}
    return doc


def _kubelet_configuration(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": KUBELET_API,
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
        "rotateCertificates": True,
        # Serving certificates come from the cluster CA through CSRs that imagegen's approver signs off.
        "serverTLSBootstrap": True,
        "clusterDomain": plan.cluster.dns_domain,
    }


def _kube_proxy_configuration(plan: Plan) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": KUBE_PROXY_API,
        "kind": "KubeProxyConfiguration",
        "mode": plan.cluster.kube_proxy_mode,
        "clusterCIDR": str(plan.cluster.pod_cidr),
    }
    if plan.cluster.kube_proxy_mode == "ipvs":
        doc["ipvs"] = {"scheduler": "rr", "strictARP": plan.endpoint.mode == "kube-vip"}
    return doc


def init_documents(plan: Plan, node: Node, token: str, certificate_key: str, token_ttl: str
                   ) -> list[dict[str, Any]]:
    rules = plan.cluster.rules
    init: dict[str, Any] = {
        "apiVersion": rules.kubeadm_api_version,
        "kind": "InitConfiguration",
        "bootstrapTokens": [{"token": token, "ttl": token_ttl, "groups":
                             ["system:bootstrappers:kubeadm:default-node-token"],
                             "usages": ["signing", "authentication"]}],
        "certificateKey": certificate_key,
        "localAPIEndpoint": {"advertiseAddress": str(node.ip), "bindPort": api_bind_port(plan)},
        "nodeRegistration": _node_registration(plan, node, control_plane=True),
    }
    return [init, _cluster_configuration(plan), _kubelet_configuration(plan), _kube_proxy_configuration(plan)]


def join_documents(plan: Plan, node: Node, token: str, ca_hash: str, control_plane: bool
                   ) -> list[dict[str, Any]]:
    rules = plan.cluster.rules
    discovery: dict[str, Any] = {
        "bootstrapToken": {"apiServerEndpoint": plan.endpoint_hostport, "token": token,
                           "caCertHashes": [ca_hash]},
    }
    join: dict[str, Any] = {
        "apiVersion": rules.kubeadm_api_version,
        "kind": "JoinConfiguration",
        "discovery": discovery,
        "nodeRegistration": _node_registration(plan, node, control_plane=control_plane),
    }
    if rules.kubeadm_api == "v1beta4":
        join["timeouts"] = {"discovery": "5m0s"}
    else:
        discovery["timeout"] = "5m0s"
    if control_plane:
        # No certificateKey: the CAs are delivered with the node, so the join never depends on the
        # two-hour lifetime of kubeadm's uploaded-certs Secret.
        join["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": str(node.ip),
                                                     "bindPort": api_bind_port(plan)}}
        if rules.patches_in_config:
            join["patches"] = {"directory": PATCH_DIR}
    return [join]


ETCD_PATCH = {
    # A freshly bootstrapped kubelet may not report rootfs stats yet (seen under TCG); with etcd's
    # ephemeral-storage request the pod is rejected once and never retried, after its member was added.
    "spec": {"containers": [{"name": "etcd", "resources": {"requests": {"ephemeral-storage": None}}}]},
}
