"""`imagegen node remove|replace`: the order of kubectl calls imagegen makes, and what it refuses.

kubectl here is a stand-in on PATH (a script that records its argv and answers canned JSON for `get` and for
`exec ... etcdctl`): this tests imagegen's own command sequencing and its safety checks, nothing about kubectl,
etcdctl or a cluster. The canned answers have the shape of `kubectl get -o json` and `etcdctl -w json`; whether
the real programs accept these argument lists is for a real cluster (`make cluster-test`), not shown here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from imagegen.cli import main

from .conftest import ROOT

PLAN = ROOT / "examples" / "ha.yaml"
CP_LABEL = {"node-role.kubernetes.io/control-plane": ""}
IPS = {"cp-1": "192.168.10.11", "cp-2": "192.168.10.12", "cp-3": "192.168.10.13"}
IDS = {"cp-1": 0x8E9E05C52164694D, "cp-2": 0x91BC3C398FB3C146, "cp-3": 0xFD422379FDA50E48}

FAKE = f"""#!{sys.executable}
import json, sys
scenario = json.load(open(sys.argv[0] + ".json"))
argv = sys.argv[1:]
with open(sys.argv[0] + ".calls", "a") as f:
    f.write(json.dumps(argv) + "\\n")
assert argv[0] == "--kubeconfig", argv
args = argv[2:]
if args[:2] == ["get", "node"]:
    node = scenario["nodes"].get(args[2])
    if node is not None:
        print(json.dumps({{"kind": "Node", "metadata": {{"name": args[2], "labels": node}}}}))
    sys.exit(0)
if args[:3] == ["-n", "kube-system", "get"]:
    print(json.dumps({{"kind": "List", "items": scenario["etcd_pods"]}}))
    sys.exit(0)
if args[:3] == ["-n", "kube-system", "exec"]:
    etcdctl = args[args.index("--") + 1:]
    assert etcdctl[0] == "etcdctl" and "--endpoints=https://127.0.0.1:2379" in etcdctl, etcdctl
    tail = etcdctl[8:]
    if tail == ["member", "list", "-w", "json"]:
        print(json.dumps({{"header": {{"cluster_id": 1}}, "members": scenario["members"]}}))
        sys.exit(0)
    if tail == ["endpoint", "health", "--cluster", "-w", "json"]:
        health = scenario["health"]
        print(json.dumps(health))
        sys.exit(0 if all(h["health"] for h in health) else 1)
    if tail[:2] == ["member", "remove"]:
        print("Member " + tail[2] + " removed from cluster")
        sys.exit(0)
if args[0] in ("cordon", "drain", "delete"):
    print(args[0] + " ok")
    sys.exit(0)
sys.stderr.write("fake kubectl: unexpected " + " ".join(args))
sys.exit(99)
"""


def etcd_pod(node: str, phase: str = "Running") -> dict:
    return {"metadata": {"name": f"etcd-{node}"}, "spec": {"nodeName": node},
            "status": {"phase": phase, "containerStatuses": [{"name": "etcd", "ready": phase == "Running"}]}}


def member(node: str) -> dict:
    ip = IPS[node]
    return {"ID": IDS[node], "name": node, "peerURLs": [f"https://{ip}:2380"], "clientURLs": [f"https://{ip}:2379"]}


def health(node: str, ok: bool = True) -> dict:
    return {"endpoint": f"https://{IPS[node]}:2379", "health": ok, "took": "9ms",
            **({} if ok else {"error": "context deadline exceeded"})}


def scenario(cps: tuple[str, ...] = ("cp-1", "cp-2", "cp-3"), workers: tuple[str, ...] = ("worker-1", "worker-2"),
             sick: tuple[str, ...] = ()) -> dict:
    return {"nodes": {**{c: CP_LABEL for c in cps}, **{w: {} for w in workers}},
            "etcd_pods": [etcd_pod(c) for c in cps], "members": [member(c) for c in cps],
            "health": [health(c, c not in sick) for c in cps]}


class Cluster:
    def __init__(self, tmp_path: Path, data: dict) -> None:
        self.kubectl = tmp_path / "bin" / "kubectl"
        self.kubectl.parent.mkdir()
        self.kubectl.write_text(FAKE)
        self.kubectl.chmod(0o755)
        Path(f"{self.kubectl}.json").write_text(json.dumps(data))
        self.kubeconfig = tmp_path / "admin.conf"
        self.kubeconfig.write_text("apiVersion: v1\nkind: Config\n")

    def run(self, *argv: str, plan: Path = PLAN) -> int:
        return main(["node", *argv[:1], str(plan), *argv[1:], "--kubeconfig", str(self.kubeconfig),
                     "--kubectl", str(self.kubectl)])

    @property
    def calls(self) -> list[list[str]]:
        path = Path(f"{self.kubectl}.calls")
        calls = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        assert all(c[:2] == ["--kubeconfig", str(self.kubeconfig)] for c in calls)
        return [c[2:] for c in calls]

    @property
    def verbs(self) -> list[str]:
        """Each call as 'verb' or, for etcdctl, 'etcdctl <subcommand>'."""
        out = []
        for c in self.calls:
            if "exec" in c:
                tail = c[c.index("--") + 9:]
                out.append("etcdctl " + " ".join(tail[:2]))
            else:
                out.append(c[0] if c[0] != "-n" else c[2])
        return out

    @property
    def changes(self) -> list[str]:
        return [v for v in self.verbs if v in ("cordon", "drain", "delete", "etcdctl member remove")]


def test_worker_remove_cordons_drains_then_deletes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario())
    assert cluster.run("remove", "worker-1") == 0
    assert cluster.verbs == ["get", "cordon", "drain", "delete"]
    calls = cluster.calls
    assert calls[1] == ["cordon", "worker-1"]
    assert calls[2] == ["drain", "worker-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=300s"]
    assert calls[3] == ["delete", "node", "worker-1"]
    out = capsys.readouterr().out
    assert "still in" in out and "delete it from the plan" in out


def test_control_plane_remove_finds_the_member_id_through_another_etcd(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, scenario())
    assert cluster.run("remove", "cp-3") == 0
    assert cluster.verbs == ["get", "get", "etcdctl member list", "etcdctl endpoint health", "cordon", "drain",
                             "etcdctl member remove", "delete"]
    pods = cluster.calls[1]
    assert pods == ["-n", "kube-system", "get", "pods", "-l", "component=etcd", "-o", "json"]
    exec_call = cluster.calls[2]
    assert exec_call[:7] == ["-n", "kube-system", "exec", "etcd-cp-1", "-c", "etcd", "--"]
    assert exec_call[7:] == ["etcdctl", "--endpoints=https://127.0.0.1:2379",
                             "--cacert", "/etc/kubernetes/pki/etcd/ca.crt",
                             "--cert", "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
                             "--key", "/etc/kubernetes/pki/etcd/healthcheck-client.key", "member", "list", "-w", "json"]
    remove = cluster.calls[6]
    assert remove[3] == "etcd-cp-1" and remove[-2:] == ["remove", "fd422379fda50e48"]


def test_etcd_pod_on_the_node_itself_is_never_used(tmp_path: Path) -> None:
    data = scenario()
    data["etcd_pods"] = [etcd_pod("cp-1"), etcd_pod("cp-2", phase="Pending"), etcd_pod("cp-3")]
    cluster = Cluster(tmp_path, data)
    assert cluster.run("remove", "cp-1") == 0
    assert {c[3] for c in cluster.calls if "exec" in c} == {"etcd-cp-3"}


def test_unhealthy_member_refuses_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario(sick=("cp-2",)))
    assert cluster.run("remove", "cp-3") == 2
    err = capsys.readouterr().err
    assert "not removing cp-3" in err and "cp-2" in err and "quorum" in err and "--force" in err
    assert cluster.changes == []


def test_force_overrides_the_health_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario(sick=("cp-2",)))
    assert cluster.run("remove", "cp-3", "--force") == 0
    assert cluster.changes == ["cordon", "drain", "etcdctl member remove", "delete"]
    assert "warning: --force" in capsys.readouterr().out


def test_the_removed_members_own_health_does_not_matter(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, scenario(sick=("cp-3",)))
    assert cluster.run("replace", "cp-3") == 0
    assert cluster.changes == ["etcdctl member remove", "delete"]


def test_no_quorum_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario(cps=("cp-2", "cp-3"), sick=("cp-3",)))
    assert cluster.run("replace", "cp-3") == 2  # 1 of 2 healthy: etcd could not commit the removal
    assert "etcd has no quorum (1 of 2 members healthy)" in capsys.readouterr().err
    assert cluster.changes == []


def test_last_control_plane_is_refused_even_with_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario(cps=("cp-2",)))
    assert cluster.run("remove", "cp-2", "--force") == 2
    assert "last control plane" in capsys.readouterr().err
    assert cluster.changes == []


def test_replace_skips_the_drain_and_says_what_next(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario())
    assert cluster.run("replace", "cp-2") == 0
    assert cluster.verbs == ["get", "get", "etcdctl member list", "etcdctl endpoint health",
                             "etcdctl member remove", "delete"]
    out = capsys.readouterr().out
    assert "generation: 2" in out and "imagegen render" in out and "token apply" in out
    assert cluster.run("replace", "worker-2") == 0
    assert cluster.changes[-1:] == ["delete"] and "cordon" not in cluster.verbs


def test_replace_refuses_the_first_control_plane_and_unplanned_nodes(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario())
    assert cluster.run("replace", "cp-1") == 2
    assert "kubeadm init" in capsys.readouterr().err
    assert cluster.run("replace", "gone-7") == 2
    assert "no node named gone-7" in capsys.readouterr().err
    assert cluster.calls == []


def test_node_missing_from_the_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario(workers=("worker-1",)))
    assert cluster.run("remove", "worker-2") == 0  # planned, never joined: nothing to do in the cluster
    assert cluster.verbs == ["get"]
    assert "no Node object" in capsys.readouterr().out
    assert cluster.run("remove", "nosuch") == 2  # in neither
    assert "no node named nosuch in the cluster or in the plan" in capsys.readouterr().err
    assert cluster.changes == []


def test_control_plane_that_never_registered_still_loses_its_member(tmp_path: Path) -> None:
    data = scenario()
    del data["nodes"]["cp-3"]
    data["members"][2]["name"] = ""  # a member added by a join that died before etcd started
    data["etcd_pods"] = data["etcd_pods"][:2]
    cluster = Cluster(tmp_path, data)
    assert cluster.run("remove", "cp-3") == 0
    assert cluster.changes == ["etcdctl member remove"]
    assert cluster.calls[-1][-1] == "fd422379fda50e48"


def test_unplanned_node_is_removed_by_its_cluster_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = scenario()
    data["nodes"]["old-cp"] = CP_LABEL
    data["etcd_pods"].append(etcd_pod("old-cp"))
    data["members"].append({"ID": 0x1234, "name": "old-cp", "peerURLs": ["https://192.168.10.99:2380"],
                            "clientURLs": ["https://192.168.10.99:2379"]})
    data["health"].append({"endpoint": "https://192.168.10.99:2379", "health": True})
    cluster = Cluster(tmp_path, data)
    assert cluster.run("remove", "old-cp") == 0
    assert cluster.changes == ["cordon", "drain", "etcdctl member remove", "delete"]
    assert cluster.calls[-2][-1] == "1234"
    assert "not in" in capsys.readouterr().out


def test_load_balancer_is_not_a_kubernetes_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = Cluster(tmp_path, scenario())
    assert cluster.run("remove", "lb-1") == 2
    assert "not a Kubernetes node" in capsys.readouterr().err
    assert cluster.calls == []


def test_kubernetes_1_20_drains_with_delete_local_data(tmp_path: Path) -> None:
    data = yaml.safe_load(PLAN.read_text())
    data["cluster"]["kubernetes_version"] = "1.20.15"
    data["cluster"]["package_repository"] = "https://mirror.example.internal/kubernetes"
    plan = tmp_path / "old.yaml"
    plan.write_text(yaml.safe_dump(data))
    cluster = Cluster(tmp_path, scenario())
    assert cluster.run("remove", "worker-1", "--drain-timeout", "60", plan=plan) == 0
    assert cluster.calls[2] == ["drain", "worker-1", "--ignore-daemonsets", "--delete-local-data", "--timeout=60s"]


def test_missing_kubeconfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "remove", str(PLAN), "worker-1", "--kubeconfig", str(tmp_path / "none")]) == 2
    assert "not a file" in capsys.readouterr().err
