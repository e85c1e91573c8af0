"""The control planes' etcd restore (etcd-restore.sh SNAPSHOT; for several members --stop, then SNAPSHOT
--initial-cluster LIST, or --cancel), rendered from a plan and run under bash in a temporary directory:
/etc/kubernetes and etcd's data directory under tmp_path, stand-ins for etcdctl, etcdutl, curl, crictl and sleep on
PATH that record their calls. The curl and crictl stand-ins play the kubelet: a component runs while its manifest is
in the manifests directory (and the restored etcd only when it is healthy). What etcd and the kubelet really do is
for a VM run (`make cluster-test-day2`, one control plane; the several-member restore has had no VM run); this shows
the script's own decisions: refuse a bad snapshot and a bad member list, take the API server and etcd down before
touching data, restore beside the old data directory and keep it, and put the original data back when the restore
fails (a single member also gets its manifests back; a member of several stays stopped)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Rendered

SCRIPT = "/usr/local/lib/imagegen/etcd-restore.sh"
NAME, PEER = "lab-cp-1", "https://10.0.0.11:2380"
# cp-2 of examples/ha.yaml, as kubeadm's join wrote its etcd.yaml; the cluster of the plan's three control planes.
HA_NAME, HA_PEER = "cp-2", "https://192.168.10.12:2380"
HA_CLUSTER = "cp-1=https://192.168.10.11:2380,cp-2=https://192.168.10.12:2380,cp-3=https://192.168.10.13:2380"

FAKES = {
    "etcdctl": 'echo "etcdctl $*" >>"$T/calls"\n'
               'case "$*" in\n'
               '  *"member list"*) [ -e "$T/etcd-down" ] && exit 1; cat "$T/members" ;;\n'
               '  "snapshot status"*) [ -e "$T/bad-snapshot" ] && { echo "Error: snapshot file has wrong CRC"; '
               'exit 1; }; echo "| 1a2b3c | 120 | 900 | 2.1 MB |" ;;\n'
               '  "snapshot restore"*)\n'
               '    echo "manifests during restore: $(ls "$T/kube/manifests" | tr "\\n" " ")" >>"$T/calls"\n'
               '    args="$*"; dir=${args##*--data-dir }; mkdir -p "$dir/member/snap"\n'
               '    [ -e "$T/restore-fails" ] && exit 1\n'
               '    echo restored >"$dir/member/snap/db" ;;\n'
               'esac\n',
    "curl": 'url=${*: -1}\n'
            'case "$url" in\n  *:2381/*) c=etcd ;;\n  *) c=kube-apiserver ;;\nesac\n'
            'echo "curl $c" >>"$T/calls"\n'
            'grep -qx "$c" "$T/never-down" 2>/dev/null && exit 0\n'
            '[ -f "$T/kube/manifests/$c.yaml" ] || exit 7\n'
            'if [ "$c" = etcd ] && [ -e "$T/restored-sick" ] && grep -qs restored "$T/data/etcd/member/snap/db"; '
            'then exit 7; fi\n'
            'exit 0\n',
    "crictl": 'name=${*: -1}; name=${name#^}; name=${name%$}\n'
              '[ -e "$T/crictl-fails" ] && exit 1\n'
              'grep -qx "$name" "$T/never-down" 2>/dev/null && { echo 0123abcd; exit 0; }\n'
              '[ -f "$T/kube/manifests/$name.yaml" ] && echo 0123abcd\nexit 0\n',
    "sleep": 'echo "sleep $*" >>"$T/sleeps"\n[ -e "$T/term-on-sleep" ] && kill -TERM "$PPID"\nexit 0\n',
}

ETCD_YAML = """apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://10.0.0.11:2379
    - --data-dir={data}
    - --initial-advertise-peer-urls={peer}
    - --initial-cluster={initial}
    - --name={name}
"""
APISERVER_YAML = """apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - command:
    - kube-apiserver
    - --secure-port=8443
"""


class Node:
    """A control plane's /etc/kubernetes and etcd data directory under tmp_path, and the script."""

    def __init__(self, tmp_path: Path, script: str, members: int = 1, etcdutl: bool = False, name: str = NAME,
                 peer: str = PEER, initial: str = "", joined: bool = False) -> None:
        self.t = tmp_path
        self.kube = tmp_path / "kube"
        self.manifests_dir = self.kube / "manifests"
        self.manifests_dir.mkdir(parents=True)
        self.data = tmp_path / "data" / "etcd"
        (self.data / "member" / "snap").mkdir(parents=True)
        (self.data / "member" / "snap" / "db").write_text("original")
        etcd_yaml = ETCD_YAML.replace("{data}", str(self.data)).replace("{peer}", peer).replace("{name}", name)
        etcd_yaml = etcd_yaml.replace("{initial}", initial or f"{name}={peer}")
        if joined:  # kubeadm join: the data directory it made holds the membership, the flags only say "join"
            etcd_yaml = etcd_yaml.replace("    - --name=", "    - --initial-cluster-state=existing\n    - --name=")
        (self.manifests_dir / "etcd.yaml").write_text(etcd_yaml)
        (self.manifests_dir / "kube-apiserver.yaml").write_text(APISERVER_YAML)
        (self.manifests_dir / "kube-scheduler.yaml").write_text("kind: Pod\n")
        self.manifests = {p.name: p.read_text() for p in self.manifests_dir.iterdir()}
        (tmp_path / "members").write_text("".join(
            f"{i:x}, started, m{i}, https://10.0.0.{i}:2380, https://10.0.0.{i}:2379, false\n"
            for i in range(1, members + 1)))
        self.snapshot = tmp_path / "backups" / "snapshot-lab-cp-1.db"
        self.snapshot.parent.mkdir()
        self.snapshot.write_text("snapshot")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fakes = dict(FAKES)
        if etcdutl:
            fakes["etcdutl"] = FAKES["etcdctl"].replace('echo "etcdctl', 'echo "etcdutl')
        for name, body in fakes.items():
            (bin_dir / name).write_text(f"#!/bin/bash\nT={tmp_path}\n{body}")
            (bin_dir / name).chmod(0o755)
        line = "KUBE_DIR=/etc/kubernetes"
        assert f"\n{line}\n" in script
        self.script = tmp_path / "etcd-restore.sh"
        self.script.write_text(script.replace(f"\n{line}\n", f"\nKUBE_DIR={self.kube}\n"))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        (self.t / "calls").unlink(missing_ok=True)
        env = {"PATH": f"{self.t}/bin:/usr/bin:/bin", "HOME": str(self.t)}
        argv = args if args else (str(self.snapshot),)
        result = subprocess.run(["bash", str(self.script), *argv], capture_output=True, text=True, env=env,
                                cwd=self.t, timeout=120)
        closing = [ln for ln in result.stdout.splitlines() if ln.startswith("etcd-restore:")]
        assert len(closing) == 1 and result.stdout.rstrip().endswith(closing[0]), result.stdout + result.stderr
        return result

    @property
    def calls(self) -> list[str]:
        path = self.t / "calls"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def held(self) -> Path:
        return self.kube / "imagegen-restore-held"

    def stopped(self) -> bool:
        """Both manifests held by --stop, exactly as they were, and gone from the manifests directory."""
        held = {p.name: p.read_text() for p in self.held.iterdir()} if self.held.is_dir() else {}
        here = {p.name for p in self.manifests_dir.iterdir()}
        return (held == {n: self.manifests[n] for n in ("etcd.yaml", "kube-apiserver.yaml")}
                and here == {"kube-scheduler.yaml"})

    def manifests_in_place(self) -> bool:
        here = {p.name: p.read_text() for p in self.manifests_dir.iterdir()}
        return here == self.manifests and not (self.kube / "imagegen-restore-held").exists()

    def data_content(self) -> str:
        return (self.data / "member" / "snap" / "db").read_text().strip()

    def beside(self) -> list[str]:
        return sorted(p.name for p in self.data.parent.iterdir() if p != self.data)


@pytest.fixture
def script(rendered: dict[str, Rendered]) -> str:
    return rendered["single"].file("lab-cp-1", SCRIPT)


def closing(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.rstrip().splitlines()[-1]


def test_rendered_for_control_planes_only(rendered: dict[str, Rendered], script: str, tmp_path: Path) -> None:
    r = rendered["ha"]
    for cp in ("cp-1", "cp-2", "cp-3"):
        assert r.files(cp)[SCRIPT]["permissions"] == "0755"
        assert "\nPLANNED_MEMBERS=3 " in r.file(cp, SCRIPT)
        assert f'\nPLANNED_CLUSTER="{HA_CLUSTER}"\n' in r.file(cp, SCRIPT)
    assert SCRIPT not in r.files("worker-1") and SCRIPT not in r.files("lb-1")
    assert "\nPLANNED_MEMBERS=1 " in script
    (tmp_path / "s.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "s.sh")]).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck:  # also in test_shell_and_units for every rendered script
        result = subprocess.run([shellcheck, "-x", "-S", "style", str(tmp_path / "s.sh")], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stdout


def test_restore_in_order_keeps_the_old_data_directory(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script)
    result = node.run()
    assert result.returncode == 0, result.stdout + result.stderr
    calls = node.calls
    restore = next(i for i, c in enumerate(calls) if c.startswith("etcdctl snapshot restore"))
    before, after = calls[:restore], calls[restore + 1:]
    # Members counted and the snapshot checked before anything stops; both pods down before the restore.
    assert before[0].startswith("etcdctl --endpoints=https://127.0.0.1:2379") and "member list" in before[0]
    assert before[1] == f"etcdctl snapshot status {node.snapshot} -w table"
    assert [c for c in before[2:]] == ["curl kube-apiserver", "curl etcd"]
    assert after[0] == "manifests during restore: kube-scheduler.yaml "
    assert after[1:] == ["curl etcd", "curl kube-apiserver"]  # etcd answers first, then the API server
    new_dir = calls[restore].split("--data-dir ")[1]
    assert re.fullmatch(rf"{re.escape(str(node.data))}\.restore-\d{{8}}T\d{{6}}Z", new_dir)
    assert calls[restore] == (f"etcdctl snapshot restore {node.snapshot} --name {NAME} --initial-cluster "
                              f"{NAME}={PEER} --initial-advertise-peer-urls {PEER} --data-dir {new_dir}")
    assert node.data_content() == "restored" and node.manifests_in_place()
    kept = node.beside()
    assert len(kept) == 1 and re.fullmatch(r"etcd\.before-restore-\d{8}T\d{6}Z", kept[0])
    assert (node.data.parent / kept[0] / "member" / "snap" / "db").read_text() == "original"
    assert closing(result).startswith(f"etcd-restore: restored {node.snapshot}: member {NAME} answers")
    assert kept[0] in closing(result)


def test_a_multi_member_etcd_is_refused(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, members=2)
    result = node.run()
    assert result.returncode == 1
    assert re.search(r"FAILED: etcd lists 2 member\(s\): a multi-member etcd is restored on every control plane .*"
                     r"etcd-restore.sh --stop on each, then etcd-restore.sh SNAPSHOT --initial-cluster "
                     rf"{NAME}=https://\S+:2380 on each .*README", closing(result))
    assert len(node.calls) == 1 and "member list" in node.calls[0]  # nothing stopped, nothing restored
    assert node.manifests_in_place() and node.data_content() == "original" and node.beside() == []


def test_etcd_down_falls_back_to_the_plan(rendered: dict[str, Rendered], script: str, tmp_path: Path) -> None:
    (tmp_path / "ha").mkdir()
    ha = Node(tmp_path / "ha", rendered["ha"].file("cp-1", SCRIPT))
    (tmp_path / "ha" / "etcd-down").touch()
    result = ha.run()
    assert result.returncode == 1 and "the plan has 3 control plane(s): a multi-member" in closing(result)
    assert f"--initial-cluster {HA_CLUSTER} on each" in closing(result)  # the plan's list, ready to paste
    assert ha.manifests_in_place() and ha.data_content() == "original"
    (tmp_path / "single").mkdir()
    single = Node(tmp_path / "single", script)
    (tmp_path / "single" / "etcd-down").touch()
    result = single.run()
    assert result.returncode == 0, result.stdout
    assert "etcd does not answer; the plan has 1 control plane(s)" in result.stdout
    assert single.data_content() == "restored"


def test_a_bad_snapshot_changes_nothing(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script)
    (tmp_path / "bad-snapshot").touch()
    result = node.run()
    assert result.returncode == 1 and "snapshot status rejects" in closing(result)
    assert "wrong CRC" in closing(result) and "nothing changed" in closing(result)
    assert not any(c.startswith("curl") for c in node.calls)
    assert node.manifests_in_place() and node.data_content() == "original" and node.beside() == []


def test_a_failed_restore_puts_the_original_back(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script)
    (tmp_path / "restore-fails").touch()
    result = node.run()
    assert result.returncode == 1
    assert "snapshot restore failed; the original data directory" in closing(result)
    assert node.manifests_in_place() and node.data_content() == "original"
    assert node.beside() == []  # the partial restore is gone
    assert node.calls[-2:] == ["curl etcd", "curl kube-apiserver"]  # back up on the original data


def test_a_restored_etcd_that_does_not_answer_is_rolled_back(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script)
    (tmp_path / "restored-sick").touch()
    result = node.run()
    assert result.returncode == 1
    assert "the restored etcd did not answer; the original data directory" in closing(result)
    assert node.manifests_in_place() and node.data_content() == "original"
    kept = node.beside()
    assert len(kept) == 1 and re.fullmatch(r"etcd\.failed-restore-\d{8}T\d{6}Z", kept[0])
    assert (node.data.parent / kept[0] / "member" / "snap" / "db").read_text().strip() == "restored"


def test_a_pod_that_does_not_stop_changes_nothing(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script)
    (tmp_path / "never-down").write_text("etcd\n")
    result = node.run()
    assert result.returncode == 1 and "did not stop; manifests are back, nothing else changed" in closing(result)
    assert "etcd: still running 120s after its manifest went away" in result.stdout
    assert not any("snapshot restore" in c for c in node.calls)
    assert node.manifests_in_place() and node.data_content() == "original" and node.beside() == []


def test_etcdutl_is_preferred_when_present(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script, etcdutl=True)
    result = node.run()
    assert result.returncode == 0, result.stdout
    tools = [c.split()[0] for c in node.calls if " snapshot " in c]
    assert tools == ["etcdutl", "etcdutl"]  # status and restore; etcdctl only for the member list


def test_usage_and_an_interrupted_earlier_restore(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script)
    result = node.run(str(tmp_path / "missing.db"))
    assert result.returncode == 1 and closing(result).startswith("etcd-restore: FAILED: usage: etcd-restore.sh")
    held = node.kube / "imagegen-restore-held"
    held.mkdir()
    (node.manifests_dir / "etcd.yaml").rename(held / "etcd.yaml")
    result = node.run()
    assert result.returncode == 1 and "an earlier restore was interrupted" in closing(result)
    assert (held / "etcd.yaml").exists() and node.calls == []  # left for the operator to look at


def test_sigterm_while_waiting_puts_the_manifests_back(script: str, tmp_path: Path) -> None:
    node = Node(tmp_path, script)
    (tmp_path / "never-down").write_text("kube-apiserver\n")
    (tmp_path / "term-on-sleep").touch()
    result = node.run()
    assert result.returncode == 143
    assert closing(result).startswith("etcd-restore: stopped (exit 143) before the data directory was touched")
    assert node.manifests_in_place() and node.data_content() == "original" and node.beside() == []


# Several members: --stop on every control plane, then SNAPSHOT --initial-cluster LIST on every control plane.

@pytest.fixture
def ha_node(rendered: dict[str, Rendered], tmp_path: Path) -> Node:
    """cp-2 of a three-member etcd, as kubeadm's join leaves it: state existing, a partial initial cluster."""
    return Node(tmp_path, rendered["ha"].file("cp-2", SCRIPT), members=3, name=HA_NAME, peer=HA_PEER,
                initial=f"cp-1=https://192.168.10.11:2380,{HA_NAME}={HA_PEER}", joined=True)


def stopped_node(node: Node) -> Node:
    result = node.run("--stop")
    assert result.returncode == 0, result.stdout + result.stderr
    assert node.stopped()
    return node


def restore_call(node: Node) -> str:
    return next(c for c in node.calls if " snapshot restore " in c)


def test_stop_holds_both_manifests_until_restore_or_cancel(ha_node: Node) -> None:
    result = ha_node.run("--stop")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ha_node.stopped() and ha_node.data_content() == "original" and ha_node.beside() == []
    assert "etcd lists 3 member(s); stopping member cp-2" in result.stdout
    # API server first, each waited for until it stopped answering; nothing restored.
    assert [c for c in ha_node.calls if c.startswith("curl")] == ["curl kube-apiserver", "curl etcd"]
    assert not any("snapshot" in c for c in ha_node.calls)
    assert closing(result).startswith(f"etcd-restore: stopped: kube-apiserver and etcd are down on {HA_NAME}")
    assert f"etcd-restore.sh SNAPSHOT --initial-cluster {HA_CLUSTER}" in closing(result)
    again = ha_node.run("--stop")
    assert again.returncode == 1 and "this member is stopped already" in closing(again) and ha_node.stopped()
    single = ha_node.run(str(ha_node.snapshot))  # the one-member form leaves a stopped member alone
    assert single.returncode == 1 and "--stop ran: manifests are held" in closing(single) and ha_node.stopped()
    cancel = ha_node.run("--cancel")
    assert cancel.returncode == 0 and closing(cancel).startswith("etcd-restore: cancelled: the kube-apiserver and etcd")
    assert ha_node.manifests_in_place() and ha_node.data_content() == "original"
    nothing = ha_node.run("--cancel")
    assert nothing.returncode == 1 and "nothing to cancel" in closing(nothing) and ha_node.manifests_in_place()


def test_a_stop_that_does_not_stop_puts_the_manifests_back(ha_node: Node) -> None:
    (ha_node.t / "never-down").write_text("etcd\n")
    result = ha_node.run("--stop")
    assert result.returncode == 1 and "did not stop; manifests are back, nothing else changed" in closing(result)
    assert ha_node.manifests_in_place() and ha_node.data_content() == "original"


def test_sigterm_during_stop_puts_the_manifests_back(ha_node: Node) -> None:
    (ha_node.t / "never-down").write_text("kube-apiserver\n")
    (ha_node.t / "term-on-sleep").touch()
    result = ha_node.run("--stop")
    assert result.returncode == 143 and "manifests are back" in closing(result)
    assert ha_node.manifests_in_place()


def test_ha_restore_gives_every_member_the_same_cluster(ha_node: Node) -> None:
    stopped_node(ha_node)
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", HA_CLUSTER)
    assert result.returncode == 0, result.stdout + result.stderr
    sha = hashlib.sha256(ha_node.snapshot.read_bytes()).hexdigest()
    assert f"snapshot sha256 {sha}: every member must print the same" in result.stdout
    assert "--initial-cluster: the plan's 3 control planes" in result.stdout
    call = restore_call(ha_node)
    new_dir = call.split("--data-dir ")[1]
    assert re.fullmatch(rf"{re.escape(str(ha_node.data))}\.restore-\d{{8}}T\d{{6}}Z", new_dir)
    assert call == (f"etcdctl snapshot restore {ha_node.snapshot} --name {HA_NAME} --initial-cluster {HA_CLUSTER} "
                    f"--initial-cluster-token imagegen-restore-{sha[:16]} --initial-advertise-peer-urls {HA_PEER} "
                    f"--data-dir {new_dir}")
    # Restored while both pods were down; no member list asked (etcd is down everywhere), no pod stopped again.
    calls = ha_node.calls
    assert calls[calls.index(call) + 1] == "manifests during restore: kube-scheduler.yaml "
    assert not any("member list" in c for c in calls)
    assert ha_node.data_content() == "restored" and ha_node.manifests_in_place()
    kept = ha_node.beside()
    assert len(kept) == 1 and re.fullmatch(r"etcd\.before-restore-\d{8}T\d{6}Z", kept[0])
    assert closing(result).startswith(f"etcd-restore: restored member {HA_NAME} of 3 from {ha_node.snapshot}")
    assert "etcd answers, a quorum is restored" in closing(result) and kept[0] in closing(result)


def test_ha_restore_accepts_the_list_in_any_form_and_notes_a_list_unlike_the_plan(ha_node: Node) -> None:
    two = f"{HA_NAME}={HA_PEER},cp-9=https://192.168.10.99:2380"
    stopped_node(ha_node)
    result = ha_node.run(f"--initial-cluster={two}", str(ha_node.snapshot))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"--initial-cluster {two} --initial-cluster-token" in restore_call(ha_node)
    assert "--initial-cluster differs from the plan's control planes" in result.stdout
    assert "restored member cp-2 of 2" in closing(result)


def test_members_restored_from_different_files_get_different_tokens(rendered: dict[str, Rendered],
                                                                     tmp_path: Path) -> None:
    tokens = []
    for i, content in enumerate(("snapshot", "snapshot", "another snapshot")):
        (tmp_path / str(i)).mkdir()
        node = stopped_node(Node(tmp_path / str(i), rendered["ha"].file("cp-2", SCRIPT), members=3, name=HA_NAME,
                                 peer=HA_PEER))
        node.snapshot.write_text(content)
        assert node.run(str(node.snapshot), "--initial-cluster", HA_CLUSTER).returncode == 0
        tokens.append(restore_call(node).split("--initial-cluster-token ")[1].split()[0])
    assert tokens[0] == tokens[1] != tokens[2]


def test_a_restored_member_waiting_for_quorum_is_not_rolled_back(ha_node: Node) -> None:
    stopped_node(ha_node)
    (ha_node.t / "restored-sick").touch()  # as the first restored member: no leader until a quorum is restored
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", HA_CLUSTER)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "etcd waits for a quorum (run the same command on the other members)" in closing(result)
    assert ha_node.data_content() == "restored" and ha_node.manifests_in_place()
    assert len(ha_node.beside()) == 1


@pytest.mark.parametrize("members, says", [
    ("cp-1=https://192.168.10.11:2380,cp-2=https://192.168.10.12:2380,", "has an empty entry"),
    ("cp-1=https://192.168.10.11:2380,,cp-2=https://192.168.10.12:2380", "has an empty entry"),
    ("cp-1=http://192.168.10.11:2380,cp-2=https://192.168.10.12:2380",
     "entry 'cp-1=http://192.168.10.11:2380' is not NAME=https://IPv4:2380"),
    ("cp-1=https://cp-1.example:2380,cp-2=https://192.168.10.12:2380", "is not NAME=https://IPv4:2380"),
    ("cp-1=https://192.168.10.11:2379,cp-2=https://192.168.10.12:2380", "is not NAME=https://IPv4:2380"),
    ("cp-1=https://192.168.10.256:2380,cp-2=https://192.168.10.12:2380", "is not NAME=https://IPv4:2380"),
    ("cp-1=https://192.168.10.11:2380/,cp-2=https://192.168.10.12:2380", "is not NAME=https://IPv4:2380"),
    ("https://192.168.10.11:2380,cp-2=https://192.168.10.12:2380", "is not NAME=https://IPv4:2380"),
    ("cp 1=https://192.168.10.11:2380,cp-2=https://192.168.10.12:2380", "is not NAME=https://IPv4:2380"),
    ("cp-1=https://192.168.10.11:2380,cp-3=https://192.168.10.13:2380",
     f"this member, {HA_NAME} ({HA_PEER} in etcd.yaml), is not in --initial-cluster"),
    ("cp-1=https://192.168.10.11:2380,cp-2=https://192.168.10.12:2380,cp-1=https://192.168.10.13:2380",
     "names member cp-1 twice"),
    ("cp-1=https://192.168.10.11:2380,cp-2=https://192.168.10.12:2380,cp-3=https://192.168.10.11:2380",
     "gives peer URL https://192.168.10.11:2380 to cp-1 and cp-3"),
    ("cp-1=https://192.168.10.11:2380,cp-2=https://192.168.10.22:2380",
     f"gives {HA_NAME} the peer URL https://192.168.10.22:2380, etcd.yaml has {HA_PEER}"),
    (f"{HA_NAME}={HA_PEER}", "names this member alone"),
])
def test_a_bad_member_list_is_refused_and_the_member_stays_stopped(ha_node: Node, members: str, says: str) -> None:
    stopped_node(ha_node)
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", members)
    assert result.returncode == 1 and closing(result).startswith("etcd-restore: FAILED: ")
    assert says in closing(result) and closing(result).endswith("nothing changed")
    assert not any("snapshot" in c for c in ha_node.calls)
    assert ha_node.stopped() and ha_node.data_content() == "original" and ha_node.beside() == []


def test_ha_restore_wants_every_member_stopped_first(ha_node: Node) -> None:
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", HA_CLUSTER)
    assert result.returncode == 1 and "this member is running: restoring several members starts with" in closing(result)
    assert ha_node.calls == [] and ha_node.manifests_in_place() and ha_node.data_content() == "original"
    stopped_node(ha_node)
    (ha_node.t / "never-down").write_text("etcd\n")  # held, yet something still answers on etcd's port
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", HA_CLUSTER)
    assert result.returncode == 1 and "etcd answers although its manifest is held" in closing(result)
    assert ha_node.stopped() and ha_node.data_content() == "original"


@pytest.mark.parametrize("argv", [
    ("--initial-cluster", HA_CLUSTER),
    ("SNAP", "--initial-cluster"),
    ("SNAP", "SNAP", "--initial-cluster", HA_CLUSTER),
    ("SNAP", "--initial-cluster", HA_CLUSTER, "--initial-cluster", HA_CLUSTER),
    ("--stop", "SNAP"),
    ("--cancel", "--stop"),
])
def test_ha_usage(ha_node: Node, argv: tuple[str, ...]) -> None:
    stopped_node(ha_node)
    result = ha_node.run(*(str(ha_node.snapshot) if a == "SNAP" else a for a in argv))
    assert result.returncode == 1 and closing(result).startswith("etcd-restore: FAILED: usage: etcd-restore.sh")
    assert f"SNAPSHOT --initial-cluster {HA_CLUSTER}" in closing(result)
    assert ha_node.calls == [] and ha_node.stopped()


def test_a_failed_ha_restore_keeps_the_original_data_and_the_member_stopped(ha_node: Node) -> None:
    stopped_node(ha_node)
    (ha_node.t / "restore-fails").touch()
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", HA_CLUSTER)
    assert result.returncode == 1
    assert "snapshot restore failed; the original data directory" in closing(result)
    assert "stays stopped: run again, or --cancel" in closing(result)
    assert ha_node.stopped() and ha_node.data_content() == "original" and ha_node.beside() == []
    assert not any(c.startswith("curl") for c in ha_node.calls[ha_node.calls.index(restore_call(ha_node)):])
    (ha_node.t / "restore-fails").unlink()  # fixed: the same command again
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", HA_CLUSTER)
    assert result.returncode == 0 and ha_node.data_content() == "restored" and ha_node.manifests_in_place()


def test_a_bad_snapshot_leaves_the_member_stopped(ha_node: Node) -> None:
    stopped_node(ha_node)
    (ha_node.t / "bad-snapshot").touch()
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", HA_CLUSTER)
    assert result.returncode == 1 and "snapshot status rejects" in closing(result)
    assert ha_node.stopped() and ha_node.data_content() == "original" and ha_node.beside() == []


def test_sigterm_during_ha_restore_leaves_the_member_stopped(ha_node: Node) -> None:
    stopped_node(ha_node)
    # The stand-in etcdctl's restore kills the script: as if the operator pressed ^C while it ran.
    etcdctl = ha_node.t / "bin" / "etcdctl"
    etcdctl.write_text(etcdctl.read_text().replace('    [ -e "$T/restore-fails" ] && exit 1\n',
                                                   '    kill -TERM "$PPID"; exit 1\n'))
    result = ha_node.run(str(ha_node.snapshot), "--initial-cluster", HA_CLUSTER)
    assert result.returncode == 143
    assert "the manifests stay held" in closing(result) and ha_node.stopped()
    assert ha_node.data_content() == "original"
