"""Version rules and role content: kubeadm API generation, flag names, runtime rules, pinned versions."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from imagegen.kubeadm import cri_socket
from imagegen.plan import parse_plan
from imagegen.render import render_user_data
from imagegen.versions import KubeVersion, rules_for

from .conftest import CACHE, Rendered, plan_ids


@pytest.mark.parametrize("version,api", [("1.20.2", "v1beta2"), ("1.21.14", "v1beta2"), ("1.22.0", "v1beta3"),
                                         ("1.30.6", "v1beta3"), ("1.31.0", "v1beta4"), ("1.34.2", "v1beta4")])
def test_kubeadm_api_generation(version: str, api: str) -> None:
    assert rules_for(KubeVersion.parse(version)).kubeadm_api == api


@pytest.mark.parametrize("version,dockershim,scheme,super_admin,pkgs", [
    ("1.20.2", True, False, False, False), ("1.23.17", True, False, False, False),
    ("1.24.0", False, True, False, True), ("1.28.15", False, True, False, True),
    ("1.29.0", False, True, True, True), ("1.34.2", False, True, True, True)])
def test_runtime_and_endpoint_rules(version: str, dockershim: bool, scheme: bool, super_admin: bool,
                                    pkgs: bool) -> None:
    rules = rules_for(KubeVersion.parse(version))
    assert rules.has_dockershim is dockershim
    assert rules.cri_socket_uri_scheme is scheme
    assert rules.kube_vip_needs_super_admin is super_admin
    assert rules.pkgs_k8s_io is pkgs
    # --experimental-cluster-signing-duration was removed in 1.25; every supported version takes the new name.
    assert rules.signing_duration_flag == "cluster-signing-duration"


def _kubeadm(r: Rendered, node: str) -> list[dict]:
    return list(yaml.safe_load_all(r.file(node, "/etc/imagegen/kubeadm.yaml")))


@pytest.mark.parametrize("plan_id", plan_ids())
def test_kubeadm_documents(rendered: dict[str, Rendered], plan_id: str) -> None:
    r = rendered[plan_id]
    plan = r.plan
    api = plan.cluster.rules.kubeadm_api_version
    first = plan.first_control_plane
    docs = {d["kind"]: d for d in _kubeadm(r, first.name)}
    assert set(docs) == {"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration",
                         "KubeProxyConfiguration"}
    init, cc = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["apiVersion"] == cc["apiVersion"] == api
    assert init["bootstrapTokens"][0]["token"] == r.state.bootstrap_token
    assert init["certificateKey"] == r.state.certificate_key
    assert cc["controlPlaneEndpoint"] == f"{plan.endpoint.name}:{plan.endpoint.port}"
    assert cc["kubernetesVersion"] == f"v{plan.cluster.kubernetes_version}"
    sans = set(cc["apiServer"]["certSANs"])
    assert {plan.endpoint.name, str(plan.endpoint_address)} | {str(n.ip) for n in plan.control_planes} <= sans
    cm_args = cc["controllerManager"]["extraArgs"]
    if api.endswith("v1beta4"):
        assert {"name": "cluster-signing-duration", "value": "87600h"} in cm_args
    else:
        assert cm_args["cluster-signing-duration"] == "87600h"
    kubelet = docs["KubeletConfiguration"]
    assert kubelet["cgroupDriver"] == "systemd" and kubelet["rotateCertificates"] and kubelet["serverTLSBootstrap"]
    assert docs["KubeProxyConfiguration"]["mode"] == plan.cluster.kube_proxy_mode
    assert init["nodeRegistration"]["criSocket"] == cri_socket(plan)
    for node in plan.kubernetes_nodes:
        if node == first:
            continue
        (join,) = _kubeadm(r, node.name)
        assert join["kind"] == "JoinConfiguration" and join["apiVersion"] == api
        bt = join["discovery"]["bootstrapToken"]
        assert bt["caCertHashes"] == [r.state.discovery_hash] and bt["token"] == r.state.bootstrap_token
        assert "unsafeSkipCAVerification" not in bt
        assert ("controlPlane" in join) == (node.role == "control-plane")
        assert "certificateKey" not in join.get("controlPlane", {})


def test_cri_socket_per_runtime_and_version(base_plan: dict) -> None:
    assert cri_socket(parse_plan(base_plan)) == "unix:///run/containerd/containerd.sock"
    base_plan["cluster"].update(kubernetes_version="1.20.2", container_runtime="docker",
                                package_repository="https://mirror.example.internal/k8s/")
    assert cri_socket(parse_plan(base_plan)) == "/var/run/dockershim.sock"
    base_plan["cluster"].update(kubernetes_version="1.28.15", cri_dockerd=True)
    assert cri_socket(parse_plan(base_plan)) == "unix:///var/run/cri-dockerd.sock"


@pytest.mark.parametrize("plan_id", plan_ids())
def test_same_pinned_versions_on_every_node(rendered: dict[str, Rendered], plan_id: str) -> None:
    r = rendered[plan_id]
    pins = set()
    for node in r.plan.kubernetes_nodes:
        env = dict(line.split("=", 1) for line in r.file(node.name, "/etc/imagegen/bootstrap.env").splitlines()
                   if "=" in line and not line.startswith("#"))
        pins.add((env["KUBERNETES_VERSION"], env["PACKAGE_REVISION"], env["PACKAGE_REPOSITORY"]))
    assert len(pins) == 1
    distro = r.file(r.plan.kubernetes_nodes[0].name, "/usr/local/lib/imagegen/distro.sh")
    assert 'apt-mark hold kubeadm kubelet kubectl' in distro and '"kubeadm=$version-$revision"' in distro


@pytest.mark.parametrize("plan_id", ["ha", "kube-vip"])
def test_containerd_config(rendered: dict[str, Rendered], plan_id: str) -> None:
    r = rendered[plan_id]
    node = r.plan.kubernetes_nodes[-1].name
    conf = tomllib.loads(r.file(node, "/etc/containerd/config.toml"))
    cri = conf["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["sandbox_image"] == f"registry.k8s.io/pause:{r.plan.cluster.rules.pause_tag}"
    assert cri["registry"]["config_path"] == "/etc/containerd/certs.d"
    for path, f in r.files(node).items():
        if path.endswith("hosts.toml"):
            hosts = tomllib.loads(f["content"])
            assert hosts["server"].startswith("https://")


def test_harbor_mirror_and_trust(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    files = r.files("worker-1")
    ca = files["/etc/containerd/certs.d/harbor.example.internal/ca.crt"]["content"]
    assert ca.encode() == r.state.registry_ca.cert_pem
    hosts = tomllib.loads(files["/etc/containerd/certs.d/docker.io/hosts.toml"]["content"])
    assert hosts["host"]["https://harbor.example.internal/v2/dockerhub"]["override_path"] is True


def test_docker_daemon_json(rendered: dict[str, Rendered]) -> None:
    r = rendered["k8s-1.28-docker"]
    daemon = json.loads(r.file("wk-a", "/etc/docker/daemon.json"))
    assert daemon["exec-opts"] == ["native.cgroupdriver=systemd"]
    assert daemon["log-driver"] == "json-file" and daemon["log-opts"] == {"max-size": "100m", "max-file": "5"}
    assert daemon["storage-driver"] == "overlay2" and daemon["live-restore"] is True
    assert daemon["registry-mirrors"] == ["https://mirror.example.internal"]
    assert daemon["insecure-registries"] == ["registry.lab.internal:5000"]
    assert daemon["data-root"] == "/srv/docker"
    # cri-dockerd (Kubernetes >= 1.24 on Docker) is the runtime seam's business: only its Docker file installs it.
    assert "cri-dockerd" in r.program("wk-a", "runtime")
    assert "cri-dockerd" not in rendered["single"].program("lab-worker-1", "runtime")  # 1.20: dockershim
    assert "runtime_start" in rendered["ha"].program("worker-1", "runtime")
    assert "docker" not in rendered["ha"].program("worker-1", "steps/install_kubernetes").replace("cri-docker", "")


def test_node_preparation_content(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    modules = r.file("worker-1", "/etc/modules-load.d/imagegen-kubernetes.conf").split()
    assert {"br_netfilter", "overlay", "nf_conntrack", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "ipip",
            "xt_set"} <= set(modules)
    sysctl = r.file("worker-1", "/etc/sysctl.d/90-imagegen-kubernetes.conf")
    for line in ("net.bridge.bridge-nf-call-iptables = 1", "net.ipv4.ip_forward = 1", "vm.swappiness = 0",
                 "vm.overcommit_memory = 1", "vm.panic_on_oom = 0", "fs.nr_open = 52706963"):
        assert line in sysctl
    assert "tcp_tw_recycle" not in sysctl.replace("# imagegen", "").split("\n", 1)[1]
    journald = r.file("worker-1", "/etc/systemd/journald.conf.d/90-imagegen.conf")
    assert "Storage=persistent" in journald and "ForwardToSyslog=no" in journald
    assert "ipvs" not in "".join(rendered["k8s-1.28-docker"].file("wk-a", "/etc/modules-load.d/"
                                                                       "imagegen-kubernetes.conf").split("\n")[1:])


def test_plan_overrides_sysctl_and_journald(base_plan: dict) -> None:
    from imagegen.state import ClusterState  # noqa: F401 - only for the type in the fixture below

    base_plan["cluster"]["sysctl"] = {"vm.swappiness": 1, "net.core.somaxconn": 32768}
    base_plan["cluster"]["journald"] = {"SystemMaxUse": "2G"}
    plan = parse_plan(base_plan)
    assert ("vm.swappiness", "1") in plan.cluster.sysctl and ("net.core.somaxconn", "32768") in plan.cluster.sysctl
    assert ("SystemMaxUse", "2G") in plan.cluster.journald


def test_kube_vip_manifest(rendered: dict[str, Rendered]) -> None:
    r = rendered["kube-vip"]
    pod = yaml.safe_load(r.file("k8scp-01", "/etc/imagegen/kube-vip.yaml"))
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["address"] == "172.31.253.60" and env["vip_arp"] == "true" and env["vip_leaderelection"] == "true"
    assert env["vip_interface"] == "eth0"
    assert "kube-vip.yaml" not in "".join(r.files("k8swn-01"))
    assert pod["spec"]["volumes"][0]["hostPath"]["path"] == "/etc/kubernetes/admin.conf"
    # 1.30 needs super-admin.conf while kubeadm init runs (kube-vip #684): only the first control plane has that
    # variant, decided at render time (no placeholder rewritten at boot).
    init = yaml.safe_load(r.file("k8scp-01", "/etc/imagegen/kube-vip-init.yaml"))
    assert init["spec"]["volumes"][0]["hostPath"]["path"] == "/etc/kubernetes/super-admin.conf"
    assert "/etc/imagegen/kube-vip-init.yaml" not in r.files("k8scp-02")
    assert "/etc/imagegen/kube-vip.yaml" in r.files("k8scp-02")
    assert "KUBECONFIG" not in r.file("k8scp-01", "/etc/imagegen/kube-vip.yaml")


def test_steps_per_role(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]

    def steps(node: str) -> str:
        env = r.file(node, "/etc/imagegen/bootstrap.env")
        return next(line for line in env.splitlines() if line.startswith("STEPS="))

    assert "init_cluster" in steps("cp-1") and "join_control_plane" not in steps("cp-1")
    assert "join_control_plane" in steps("cp-2") and "init_cluster" not in steps("cp-2")
    assert "PREVIOUS_CONTROL_PLANE=192.168.10.12" in r.file("cp-3", "/etc/imagegen/bootstrap.env")
    assert "PREVIOUS_CONTROL_PLANE" not in r.file("cp-1", "/etc/imagegen/bootstrap.env")
    # A node carries only its own steps and the parts they need: no kubeadm, runtime or bundle on a load balancer.
    for lb in ("lb-1", "harbor"):
        names = [p for p in r.files(lb) if p.startswith("/usr/local/lib/imagegen/")]
        assert not [p for p in names if "/parts/" in p or p.endswith("/runtime.sh")], names
        assert "kubeadm" not in "".join(r.files(lb)[p]["content"] for p in names if "/steps/" in p)
    assert "join_worker" in steps("worker-1")
    assert "install_load_balancer" in steps("lb-1") and "install_registry" in steps("harbor")


def test_host_gw_config_holds_no_other_node(rendered: dict[str, Rendered]) -> None:
    """host-gw: the CNI config waits for the node's podCIDR from the cluster, and no node's seed names another
    Kubernetes node (routes come from the Node objects: tests/test_host_gw_agent.py)."""
    r = rendered["single"]
    conf = json.loads(r.file("lab-worker-1", "/etc/imagegen/host-gw.conflist.json"))
    assert conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == "NODE_POD_CIDR"
    for node in r.plan.kubernetes_nodes:
        text = r.artifacts[f"nodes/{node.name}/user-data"].data.decode()
        others = [n for n in r.plan.kubernetes_nodes if n != node and n.role == "worker"]
        assert not [n.name for n in others if n.name in text or f"{n.ip}" in text], node.name
    docs = list(yaml.safe_load_all(r.file("lab-cp-1", "/etc/imagegen/kubeadm.yaml")))
    cluster = next(d for d in docs if d["kind"] == "ClusterConfiguration")
    assert "allocate-node-cidrs" not in str(cluster["controllerManager"])  # kubeadm's default: true


def _bundle_kubeadm() -> Path | None:
    for path in (CACHE / "bundle" / "current" / "bundle" / "bin" / "kubeadm",
                 CACHE / "bundle" / "current" / "bin" / "kubeadm"):
        if path.exists():
            return path
    return None


@pytest.mark.skipif(_bundle_kubeadm() is None, reason="no kubeadm binary: build the test bundle with `make bundle`")
def test_real_kubeadm_1_20_reads_rendered_config(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    r = rendered["single"]
    config = tmp_path / "kubeadm.yaml"
    config.write_text(r.file("lab-cp-1", "/etc/imagegen/kubeadm.yaml"))
    result = subprocess.run([str(_bundle_kubeadm()), "config", "images", "list", "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "k8s.gcr.io/kube-apiserver:v1.20.2" in result.stdout
    assert "k8s.gcr.io/etcd:3.4.13-0" in result.stdout
    assert shutil.which("true")


def test_render_is_pure(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    node = r.plan.node("cp-2")
    assert render_user_data(r.plan, node, r.state) == r.artifacts["nodes/cp-2/user-data"].data


@pytest.mark.parametrize("version,as_list", [("1.20.2", False), ("1.34.2", True)])
def test_component_args_reach_cluster_configuration(base_plan: dict, version: str, as_list: bool) -> None:
    from imagegen.kubeadm import init_documents

    base_plan["cluster"].update(kubernetes_version=version, package_repository="https://mirror.example.internal/",
                                component_args={"controller-manager": {"leader-elect-lease-duration": "120s"},
                                                 "apiserver": {"audit-log-maxage": 30},
                                                 "etcd": {"heartbeat-interval": "500"}})
    plan = parse_plan(base_plan)
    cc = init_documents(plan, plan.first_control_plane, "abcdef.0123456789abcdef", "0" * 64, "24h")[1]

    def flags(section: object) -> dict:
        return {i["name"]: i["value"] for i in section} if as_list else dict(section)

    assert flags(cc["controllerManager"]["extraArgs"])["leader-elect-lease-duration"] == "120s"
    assert flags(cc["controllerManager"]["extraArgs"])["cluster-signing-duration"] == "87600h"
    assert flags(cc["apiServer"]["extraArgs"]) == {"audit-log-maxage": "30"}
    assert flags(cc["etcd"]["local"]["extraArgs"]) == {"heartbeat-interval": "500"}


@pytest.mark.parametrize("version,phases", [
    ("1.20.2", ("control-plane-join all",)), ("1.32.4", ("control-plane-join all",)),
    ("1.33.0", ("etcd-join", "kubelet-wait-bootstrap", "control-plane-join all")),
    ("1.34.2", ("etcd-join", "kubelet-wait-bootstrap", "control-plane-join all"))])
def test_control_plane_join_retry_phases(version: str, phases: tuple[str, ...]) -> None:
    """kubernetes/kubeadm#3262: from 1.33 `control-plane-join all` no longer adds the etcd member."""
    assert rules_for(KubeVersion.parse(version)).control_plane_join_retry_phases == phases


def test_join_retry_phases_reach_the_node(rendered: dict[str, Rendered]) -> None:
    assert rendered["ha"].file("cp-2", "/etc/imagegen/join-retry-phases").split("\n")[0] == "etcd-join"
    assert rendered["kube-vip"].file("k8scp-02", "/etc/imagegen/join-retry-phases") == "control-plane-join all\n"
    assert "/etc/imagegen/join-retry-phases" not in rendered["ha"].files("cp-1")


@pytest.mark.parametrize("version,group", [("1.20.2", "system:masters"), ("1.28.15", "system:masters"),
                                           ("1.29.0", "kubeadm:cluster-admins"),
                                           ("1.34.2", "kubeadm:cluster-admins")])
def test_admin_group(version: str, group: str) -> None:
    """From 1.29 kubeadm's admin.conf is in kubeadm:cluster-admins (RBAC-bound, revocable), not system:masters."""
    assert rules_for(KubeVersion.parse(version)).admin_group == group
