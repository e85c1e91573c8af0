"""The rendered host-gw agent, run for real in a throwaway network namespace (real `ip` routes and iptables rules),
with the Node objects it watches served by a stand-in `kubectl` that prints what a kube-apiserver's jsonpath
output would be. What is checked is imagegen's own agent: it learns every pod subnet from the cluster, writes its
own CNI config only once it has one, routes the others, prunes a node that is gone and ignores malformed fields."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Rendered

NS = f"imagegen-test-{os.getpid()}"


def _can_use_netns() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        return False
    ok = subprocess.run(["ip", "netns", "add", f"{NS}-probe"], capture_output=True).returncode == 0
    subprocess.run(["ip", "netns", "del", f"{NS}-probe"], capture_output=True)
    return ok


pytestmark = pytest.mark.skipif(not _can_use_netns(), reason="needs root and network namespaces")


@pytest.fixture
def netns(rendered: dict[str, Rendered]) -> Iterator[str]:
    iface = rendered["single"].plan.network.interface
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for cmd in (["link", "add", iface, "type", "veth", "peer", "name", "peer0"], ["link", "set", iface, "up"],
                    ["link", "set", "peer0", "up"], ["addr", "add", "10.77.0.11/24", "dev", iface]):
            subprocess.run(["ip", "-n", NS, *cmd], check=True)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def _routes(ns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "route", "show", "proto", "77"], capture_output=True, text=True,
                         check=True).stdout
    return {" ".join(line.split()[:3]) for line in out.splitlines()}


def _wait(predicate, seconds: float = 20) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_agent_learns_routes_and_its_subnet_from_node_objects(rendered: dict[str, Rendered], netns: str,
                                                               tmp_path: Path) -> None:
    r = rendered["single"]
    script = r.file("lab-cp-1", "/usr/local/lib/imagegen/host-gw-routes.sh")
    nodes = tmp_path / "nodes"
    kubeconfig = tmp_path / "kubelet.conf"
    conflist = tmp_path / "net.d" / "10-imagegen-host-gw.conflist"
    template = tmp_path / "host-gw.conflist.json"
    template.write_text(r.file("lab-cp-1", "/etc/imagegen/host-gw.conflist.json"))
    for old, new in (("/etc/kubernetes/kubelet.conf", kubeconfig), ("/etc/imagegen/host-gw.conflist.json", template),
                     ("/etc/cni/net.d/10-imagegen-host-gw.conflist", conflist), ("RESYNC=300", "RESYNC=1")):
        assert str(old) in script, old
        script = script.replace(str(old), str(new))
    agent = tmp_path / "agent.sh"
    agent.write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Answers `get nodes -o jsonpath={range .items[*]}...{end}` from the file; a watch just ends after a second.
    (bin_dir / "kubectl").write_text(f"#!/bin/bash\necho \"$*\" >>{tmp_path}/kubectl.log\n"
                                     f'case "$*" in *--watch-only*) sleep 1 ;; *) cat {nodes} ;; esac\n')
    (bin_dir / "kubectl").chmod(0o755)
    # The API server's /healthz, which the agent asks before it runs kubectl: ok once the file exists.
    (bin_dir / "curl").write_text(f"#!/bin/bash\necho \"$*\" >>{tmp_path}/curl.log\n"
                                  f"[ -f {tmp_path}/api-up ] && echo ok\n")
    (bin_dir / "curl").chmod(0o755)
    nodes.write_text("lab-cp-1  10.77.0.11\n")  # registered, no podCIDR yet
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "bash", str(agent)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        kubeconfig.write_text("apiVersion: v1\nclusters:\n- cluster:\n    server: https://ct-api:6443\n")
        assert _wait(lambda: (tmp_path / "curl.log").exists())
        time.sleep(1)
        assert not (tmp_path / "kubectl.log").exists()  # no kubectl while the API server does not answer
        assert "https://ct-api:6443/healthz" in (tmp_path / "curl.log").read_text()
        (tmp_path / "api-up").touch()
        assert _wait(lambda: (tmp_path / "kubectl.log").exists())
        time.sleep(1.5)
        assert not conflist.exists()  # no podCIDR, no CNI config: the kubelet stays NetworkNotReady
        nodes.write_text("lab-cp-1 10.244.0.0/24 10.77.0.11\nlab-worker-1 10.244.1.0/24 10.77.0.21\n"
                         "evil 10.9.0.0/24;reboot 10.77.0.66\nodd 10.244.9.0/24 10.77.0.21$(id)\n")
        assert _wait(lambda: _routes(netns) == {"10.244.1.0/24 via 10.77.0.21"}), _routes(netns)
        conf = json.loads(conflist.read_text())
        assert conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == "10.244.0.0/24"
        # A node leaves and another joins: the watch ends, the resync prunes and adds.
        nodes.write_text("lab-cp-1 10.244.0.0/24 10.77.0.11\nlab-worker-2 10.244.2.0/24 10.77.0.22\n")
        assert _wait(lambda: _routes(netns) == {"10.244.2.0/24 via 10.77.0.22"}), _routes(netns)
        nat = subprocess.run(["ip", "netns", "exec", netns, "iptables", "-t", "nat", "-S", "POSTROUTING"],
                             capture_output=True, text=True, check=True).stdout
        cidr = str(r.plan.cluster.pod_cidr)
        assert f"-A POSTROUTING -s {cidr} ! -d {cidr} -j MASQUERADE" in nat
        log = (tmp_path / "kubectl.log").read_text()
        assert f"--kubeconfig {kubeconfig}" in log and "--watch-only" in log
    finally:
        proc.terminate()
        proc.wait(timeout=10)
