"""The control planes' etcd restore (etcd-restore.sh SNAPSHOT), rendered from a plan and run under bash in a
temporary directory: /etc/kubernetes and etcd's data directory under tmp_path, stand-ins for etcdctl, etcdutl,
curl, crictl and sleep on PATH that record their calls. The curl and crictl stand-ins play the kubelet: a component
runs while its manifest is in the manifests directory (and the restored etcd only when it is healthy). What etcd and
the kubelet really do is for a VM run (`make cluster-test-day2`); this shows the script's own decisions: refuse a
multi-member etcd and a bad snapshot, take the API server and etcd down before touching data, restore beside the
old data directory and keep it, and put the original data and manifests back when the restore fails."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Rendered

SCRIPT = "/usr/local/lib/imagegen/etcd-restore.sh"
NAME, PEER = "lab-cp-1", "https://10.0.0.11:2380"

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

ETCD_YAML = f"""apiVersion: v1
kind: Pod
metadata: {{name: etcd, namespace: kube-system}}
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://10.0.0.11:2379
    - --data-dir={{data}}
    - --initial-advertise-peer-urls={PEER}
    - --initial-cluster={NAME}={PEER}
    - --name={NAME}
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

    def __init__(self, tmp_path: Path, script: str, members: int = 1, etcdutl: bool = False) -> None:
        self.t = tmp_path
        self.kube = tmp_path / "kube"
        self.manifests_dir = self.kube / "manifests"
        self.manifests_dir.mkdir(parents=True)
        self.data = tmp_path / "data" / "etcd"
        (self.data / "member" / "snap").mkdir(parents=True)
        (self.data / "member" / "snap" / "db").write_text("original")
        (self.manifests_dir / "etcd.yaml").write_text(ETCD_YAML.replace("{data}", str(self.data)))
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
    assert re.search(r"FAILED: etcd lists 2 member\(s\): restoring a multi-member etcd is done by hand .*README",
                     closing(result))
    assert len(node.calls) == 1 and "member list" in node.calls[0]  # nothing stopped, nothing restored
    assert node.manifests_in_place() and node.data_content() == "original" and node.beside() == []


def test_etcd_down_falls_back_to_the_plan(rendered: dict[str, Rendered], script: str, tmp_path: Path) -> None:
    (tmp_path / "ha").mkdir()
    ha = Node(tmp_path / "ha", rendered["ha"].file("cp-1", SCRIPT))
    (tmp_path / "ha" / "etcd-down").touch()
    result = ha.run()
    assert result.returncode == 1 and "the plan has 3 control plane(s): restoring a multi-member" in closing(result)
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
