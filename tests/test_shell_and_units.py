"""Every rendered script through shellcheck, every unit through systemd-analyze verify, and the load balancer's
configs through nginx -t and keepalived --config-test: the real tools that consume them."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from imagegen.bundle.format import BundleImage, Manifest, node_lists

from .conftest import Rendered, plan_ids, require_tool


def _scripts(r: Rendered):
    for node in r.plan.nodes:
        for f in r.user_data(node.name)["write_files"]:
            if f["content"].startswith("#!/bin/bash"):
                yield node.name, f["path"], f["content"]


@pytest.mark.parametrize("plan_id", plan_ids())
def test_shellcheck(rendered: dict[str, Rendered], plan_id: str, tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    seen = set()
    scripts = list(_scripts(rendered[plan_id]))
    assert any(p.endswith("bootstrap.sh") for _, p, _ in scripts)
    for node, path, content in scripts:
        if content in seen:
            continue
        seen.add(content)
        file = tmp_path / re.sub(r"\W", "_", f"{node}{path}")
        file.write_text(content)
        result = subprocess.run([shellcheck, "-x", "-S", "style", str(file)], capture_output=True, text=True)
        assert result.returncode == 0, f"{node}:{path}\n{result.stdout}"


def test_shellcheck_catches_a_bug(tmp_path: Path) -> None:
    file = tmp_path / "bad.sh"
    file.write_text("#!/bin/bash\nrm -rf $1/*\n")
    assert subprocess.run([require_tool("shellcheck"), str(file)], capture_output=True).returncode != 0


@pytest.mark.parametrize("plan_id", ["ha", "k8s-1.28-docker"])
def test_nginx_config(rendered: dict[str, Rendered], plan_id: str, materialize) -> None:
    nginx = require_tool("nginx")
    r = rendered[plan_id]
    for lb in r.plan.load_balancers:
        root = materialize(r, lb.name)
        conf = root / "etc/nginx/nginx.conf"
        result = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "syntax is ok" in result.stderr
        text = conf.read_text()
        for cp in r.plan.control_planes:
            assert f"server {cp.ip}:6443 max_fails=3 fail_timeout=10s;" in text
        assert f"listen {r.plan.endpoint.port};" in text


def test_nginx_rejects_broken_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nstream { server { listen 6443; proxy_pass nowhere } }\n")
    assert subprocess.run([require_tool("nginx"), "-t", "-c", str(conf)], capture_output=True).returncode != 0


@pytest.mark.parametrize("plan_id", ["ha", "k8s-1.28-docker"])
def test_keepalived_config(rendered: dict[str, Rendered], plan_id: str, materialize) -> None:
    keepalived = require_tool("keepalived")
    r = rendered[plan_id]
    priorities = []
    for lb in r.plan.load_balancers:
        root = materialize(r, lb.name)
        conf = root / "etc/keepalived/keepalived.conf"
        # keepalived insists the check script be root-owned and not writable by others: point it at the
        # materialised copy, which is.
        text = conf.read_text().replace("/usr/local/lib/imagegen/", f"{root}/usr/local/lib/imagegen/")
        conf.write_text(text)
        result = subprocess.run([keepalived, "--config-test", "-f", str(conf)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (f"unicast_src_ip {lb.ip}" in text) == (len(r.plan.load_balancers) > 1)
        for peer in r.plan.load_balancers:
            assert (f"        {peer.ip}\n" in text) == (peer != lb)
        priorities.append(int(re.search(r"priority (\d+)", text).group(1)))
    assert len(set(priorities)) == len(priorities)


def test_keepalived_rejects_broken_config(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("vrrp_instance x {\n  virtual_router_id 999\n  interface\n}\n")
    result = subprocess.run([require_tool("keepalived"), "--config-test", "-f", str(conf)], capture_output=True)
    assert result.returncode != 0


@pytest.mark.parametrize("plan_id", plan_ids())
def test_systemd_units_verify(rendered: dict[str, Rendered], plan_id: str, materialize) -> None:
    analyze = require_tool("systemd-analyze")
    r = rendered[plan_id]
    for node in r.plan.nodes:
        root = materialize(r, node.name)
        units = sorted((root / "etc/systemd/system").glob("imagegen-*"))
        assert units, node.name
        for unit in units:
            # ExecStart must exist: point it at the materialised scripts.
            unit.write_text(unit.read_text().replace("/usr/local/lib/imagegen/", f"{root}/usr/local/lib/imagegen/"))
        result = subprocess.run([analyze, "verify", "--man=no", *map(str, units)], capture_output=True, text=True)
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if "imagegen" in line and "cloud-final.service" not in line]
        assert result.returncode == 0 and not problems, (node.name, result.stdout, result.stderr)


def test_systemd_analyze_catches_bad_unit(tmp_path: Path) -> None:
    unit = tmp_path / "imagegen-bad.service"
    unit.write_text("[Service]\nType=oneshott\nExecStart=/nonexistent/imagegen-x\n")
    result = subprocess.run([require_tool("systemd-analyze"), "verify", "--man=no", str(unit)],
                            capture_output=True, text=True)
    assert result.returncode != 0 or "imagegen" in result.stderr


def test_bootstrap_masks_kubeadm_output(rendered: dict[str, Rendered]) -> None:
    """The rendered script's own `redacted` function, run by bash on what kubeadm init prints at its end."""
    r = rendered["ha"]
    script = r.program("cp-1", "lib")
    func = re.search(r"^redacted\(\) \{.*?^\}", script, re.S | re.M).group(0)
    token, key = r.state.bootstrap_token, r.state.certificate_key
    fake = (f"kubeadm join k8s-api:6443 --token {token} --discovery-token-ca-cert-hash "
            f"{r.state.discovery_hash} --control-plane --certificate-key {key}; exit 3")
    result = subprocess.run(["bash", "-c", f"{func}\nredacted bash -c {shlex.quote('echo ' + fake)}"],
                            capture_output=True, text=True)
    assert result.returncode == 3
    assert token not in result.stdout and key not in result.stdout and "token" in result.stdout
    assert "--token <token>" in result.stdout and "--certificate-key <key>" in result.stdout


@pytest.mark.parametrize("line,final", [
    ('[discovery] The cluster-info ConfigMap does not yet contain a JWS signature for token ID "szifs7", '
     'will try again', False),
    ("error execution phase kubelet-start: timed out waiting for the condition", False),
    ('couldn\'t validate the identity of the API Server: could not find a JWS signature in the cluster-info '
     'ConfigMap for token ID "abcdef"', True),
    ('failed to verify JWS signature of received cluster info object, can\'t trust this API Server', True),
    ('cluster CA found in cluster-info ConfigMap is invalid: none of the public keys "sha256:00" are pinned', True),
])
def test_join_error_classification(rendered: dict[str, Rendered], tmp_path: Path, line: str, final: bool) -> None:
    """The rendered script's join_error_is_final on lines kubeadm 1.20 printed in the cluster test."""
    script = rendered["single"].program("lab-worker-1", "parts/kubeadm")
    func = re.search(r"^join_error_is_final\(\) \{.*?^\}", script, re.S | re.M).group(0)
    (tmp_path / "join-attempt.log").write_text(f"[preflight] Running pre-flight checks\n{line}\n")
    result = subprocess.run(["bash", "-c", f"LOG_DIR={shlex.quote(str(tmp_path))}\n{func}\njoin_error_is_final"])
    assert (result.returncode == 0) is final


def test_workers_skip_control_plane_images() -> None:
    """The bundle's worker image list (imagegen.bundle.format.node_lists): only images whose every tag is a
    control-plane component are left out; pause, kube-proxy, workloads and mixed-tag images are loaded."""
    images = {
        "images/kube-apiserver.tar": ["k8s.gcr.io/kube-apiserver:v1.20.2"],
        "images/kube-controller-manager.tar": ["registry.k8s.io/kube-controller-manager:v1.28.4"],
        "images/kube-scheduler.tar": ["k8s.gcr.io/kube-scheduler:v1.20.2"],
        "images/etcd.tar": ["k8s.gcr.io/etcd:3.4.13-0", "imagegen.local/etcd:3.4.23"],
        "images/kube-proxy.tar": ["k8s.gcr.io/kube-proxy:v1.20.2"],
        "images/pause.tar": ["k8s.gcr.io/pause:3.2"],
        "images/etcd-and-tools.tar": ["k8s.gcr.io/etcd:3.4.13-0", "example.org/etcd-tools:1"],
    }
    manifest = Manifest(kubernetes_version="1.20.2", runtime="docker", files={}, cni_plugins=(), created_by="t",
                        images=tuple(BundleImage(f, tuple(t)) for f, t in images.items()))
    lists = node_lists(manifest)
    assert lists["node/images-worker.list"].decode().split() == [
        "images/kube-proxy.tar", "images/pause.tar", "images/etcd-and-tools.tar"]
    assert lists["node/images-control-plane.list"].decode().split() == list(images)
