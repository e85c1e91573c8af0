"""The node side of issue 11, checked by running the rendered scripts' own functions under bash, with fakes of
kubeadm, kubectl, curl and friends on PATH: the PKI survives `kubeadm reset`, every exit path prints exactly one
sentinel, a reboot resumes after the last completed step, apt keeps imagegen's conffiles, the repository URL is
joined right, Flannel gets the plan's pod CIDR, the CSR approver checks the requested names against the Node's own
addresses, etcd-snapshot leaves no partial file, and the local API server port follows the endpoint."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from imagegen.plan import parse_plan
from imagegen.render import render_user_data
from imagegen.state import ensure_state

from .conftest import CACHE, ROOT, Rendered, require_tool

DATA = ROOT / "tests" / "data"
CA_FILES = ["ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key", "sa.key",
            "sa.pub"]


def functions(script: str) -> str:
    """Every function definition of a rendered script, in order (multi-line and one-line ones)."""
    found = re.findall(r"^[a-z_]+\(\) \{\n.*?^\}\n|^[a-z_]+\(\) \{ [^\n]*\}\n", script, re.S | re.M)
    assert found
    return "".join(found)


def fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def run_bash(program: str, bin_dir: Path, **kw) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(bin_dir)}
    return subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=120, **kw)


PROGRAM_PREFIXES = ("/usr/local/lib/imagegen/lib.sh", "/usr/local/lib/imagegen/runtime.sh",
                    "/usr/local/lib/imagegen/parts/", "/usr/local/lib/imagegen/steps/",
                    "/usr/local/lib/imagegen/bootstrap.sh")


def bootstrap(r: Rendered, node: str) -> str:
    """The node's whole first-boot program: its library, runtime seam, parts, steps and the runner."""
    return "\n".join(f["content"] for path, f in r.files(node).items() if path.startswith(PROGRAM_PREFIXES))


# -- item 1: kubeadm reset must not cost the cluster its CAs ---------------------------------------------------

def _pki_node(tmp_path: Path, r: Rendered, node: str) -> tuple[Path, dict[str, str]]:
    kube = tmp_path / "etc-kubernetes"
    for f in CA_FILES:
        p = kube / "pki" / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(r.file(node, f"/etc/kubernetes/pki/{f}"))
    sums = {f: hashlib.sha256((kube / "pki" / f).read_bytes()).hexdigest() for f in CA_FILES}
    (tmp_path / "kubeadm.yaml").write_text(r.file(node, "/etc/imagegen/kubeadm.yaml"))
    return kube, sums


def _harness(tmp_path: Path, kube: Path, overrides: str = "") -> str:
    return f"""
STATE_DIR={tmp_path}/state; STEP_DIR=$STATE_DIR/steps; LOG_DIR={tmp_path}/log; PKI_KEEP=$STATE_DIR/pki
KUBE_DIR={kube}; PKI_DIR=$KUBE_DIR/pki; ETCD_DATA={tmp_path}/etcd; KUBEADM_CONFIG={tmp_path}/kubeadm.yaml
JOIN_RETRY_PHASES={tmp_path}/join-retry-phases
CA_FILES="{' '.join(CA_FILES)}"
NODE_NAME=cp; NODE_IP=127.0.0.1; CURRENT_STEP=test; FINISHED=0; DEADLINE_SECONDS=100000; JOIN_ATTEMPTS=3
SKIP_PHASES=""; KUBE_VIP=0; KUBE_VIP_SUPER_ADMIN=0; PATCHES_FLAG=""; PREVIOUS_CONTROL_PLANE=""
ENDPOINT_NAME=api; ENDPOINT_PORT=6443
mkdir -p "$STATE_DIR" "$LOG_DIR"
"""


def _fakes(bin_dir: Path, calls: Path, kube: Path, init_fails: int) -> None:
    pki = kube / "pki"
    fake(bin_dir, "kubeadm", f"""
echo "kubeadm $*" >>{calls}
case "$1 $2" in
  "init --config")
    n=$(( $(cat {calls}.inits 2>/dev/null || echo 0) + 1 )); echo $n >{calls}.inits
    # what the CAs were when kubeadm started this attempt
    (cd {pki} && sha256sum {' '.join(CA_FILES)}) >{calls}.pki-at-init-$n 2>&1
    mkdir -p {kube}/manifests; touch {kube}/kubelet.conf   # kubeadm's kubeconfig phase ran
    [ "$n" -gt {init_fails} ]; exit ;;
  "reset -f") rm -rf {pki} {kube}/kubelet.conf {kube}/manifests; exit 0 ;;  # as cleanupnode.go does
  "join --config")
    n=$(( $(cat {calls}.joins 2>/dev/null || echo 0) + 1 )); echo $n >{calls}.joins
    (cd {pki} && sha256sum {' '.join(CA_FILES)}) >{calls}.pki-at-join-$n 2>&1
    [ "$n" -gt {init_fails} ]; exit ;;
esac
exit 0
""")
    fake(bin_dir, "curl", "exit 7\n")  # no API server answers


def _sums_file(text: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in text.splitlines() if line.strip()}


def test_init_retry_restores_the_pre_placed_cas(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """A fake kubeadm whose init fails once and whose reset deletes /etc/kubernetes/pki (cleanupnode.go): the
    second `kubeadm init` must start with imagegen's CAs, byte for byte."""
    r = rendered["ha"]
    kube, sums = _pki_node(tmp_path, r, "cp-1")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _fakes(bin_dir, calls, kube, init_fails=1)
    program = (functions(bootstrap(r, "cp-1")) + _harness(tmp_path, kube)
               + "sleep() { :; }\nensure_offline_images() { :; }\nwait_healthy() { :; }\nstep_init_cluster\n"
               + "echo RETURNED\n")
    result = run_bash(program, bin_dir)
    assert "RETURNED" in result.stdout, result.stdout + result.stderr
    kubeadm_calls = calls.read_text().splitlines()
    assert [c.split()[1] for c in kubeadm_calls] == ["init", "reset", "init"]
    assert _sums_file((tmp_path / "calls.pki-at-init-2").read_text()) == sums
    for f in CA_FILES:
        assert hashlib.sha256((kube / "pki" / f).read_bytes()).hexdigest() == sums[f], f
    keep = tmp_path / "state" / "pki"
    assert oct(keep.stat().st_mode & 0o777) == "0o700"
    assert all(oct((keep / f).stat().st_mode & 0o777) == "0o600" for f in CA_FILES)


def test_first_control_plane_never_mints_a_ca(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    r = rendered["ha"]
    kube, _ = _pki_node(tmp_path, r, "cp-1")
    (kube / "pki" / "ca.key").unlink()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    calls.write_text("")
    _fakes(bin_dir, calls, kube, init_fails=0)
    program = (functions(bootstrap(r, "cp-1")) + _harness(tmp_path, kube)
               + "console() { echo \"$*\"; }\nsleep() { :; }\nensure_offline_images() { :; }\nstep_init_cluster\n")
    result = run_bash(program, bin_dir)
    assert result.returncode == 1
    assert "IMAGEGEN-BOOTSTRAP-FAILED node=cp step=test reason=cluster-ca-key-missing" in result.stdout
    assert "reason=cluster-ca-key-missing" in (tmp_path / "state" / "bootstrap.failed").read_text()
    assert calls.read_text() == ""  # kubeadm never ran


def test_changed_ca_is_restored_before_init(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """check_cluster_pki: a CA that differs from the one kept before kubeadm first ran is replaced."""
    r = rendered["ha"]
    kube, sums = _pki_node(tmp_path, r, "cp-1")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = (functions(bootstrap(r, "cp-1")) + _harness(tmp_path, kube)
               + f"keep_cluster_pki\necho minted >{kube}/pki/ca.crt\ncheck_cluster_pki\necho CHECKED\n")
    result = run_bash(program, bin_dir)
    assert "CHECKED" in result.stdout, result.stdout + result.stderr
    assert hashlib.sha256((kube / "pki" / "ca.crt").read_bytes()).hexdigest() == sums["ca.crt"]


def test_control_plane_join_retry_restores_cas(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """A joining control plane whose first join fails before it holds cluster state is reset and retried with
    its CAs restored; once it holds state, only the version's retry phases run, never a reset."""
    r = rendered["ha"]
    kube, sums = _pki_node(tmp_path, r, "cp-2")
    (tmp_path / "join-retry-phases").write_text(r.file("cp-2", "/etc/imagegen/join-retry-phases"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _fakes(bin_dir, calls, kube, init_fails=1)
    program = (functions(bootstrap(r, "cp-2")) + _harness(tmp_path, kube)
               + "sleep() { :; }\nensure_offline_images() { :; }\nwait_healthy() { :; }\nplace_kube_vip() { :; }\n"
               + "step_join_control_plane\necho RETURNED\n")
    result = run_bash(program, bin_dir)
    assert "RETURNED" in result.stdout, result.stdout + result.stderr
    assert [c.split()[1] for c in calls.read_text().splitlines()] == ["join", "reset", "join"]
    assert _sums_file((tmp_path / "calls.pki-at-join-2").read_text()) == sums

    # Now with cluster state (kubelet.conf): the phases of VersionRules, no reset, no full join.
    calls.unlink()
    (kube / "kubelet.conf").write_text("")
    result = run_bash(program, bin_dir)
    assert "RETURNED" in result.stdout, result.stdout + result.stderr
    done = [c.removesuffix(f" --config {tmp_path}/kubeadm.yaml") for c in calls.read_text().splitlines()]
    assert done == ["kubeadm join phase etcd-join", "kubeadm join phase kubelet-wait-bootstrap",
                    "kubeadm join phase control-plane-join all"]


# -- item 7: the control-plane join retry phases per version -----------------------------------------------------

@pytest.mark.parametrize("version", ["1.20.2", "1.30.6", "1.32.0", "1.33.1", "1.34.2"])
def test_join_retry_phases_exist_in_that_kubeadm(version: str) -> None:
    """Upstream facts kept as test data (tests/data/kubeadm-join-phases.json): every phase the retry runs exists
    in that kubeadm, and the phase that adds the etcd member is among them."""
    from imagegen.versions import KubeVersion, rules_for

    facts = json.loads((DATA / "kubeadm-join-phases.json").read_text())
    v = KubeVersion.parse(version)
    key = "1.33" if v.minor >= 33 else ("1.20" if v.minor <= 21 else "1.32")
    phases = rules_for(v).control_plane_join_retry_phases
    assert set(phases) <= set(facts["phases"][key])
    adds_member = facts["etcd_member_added_by"][key]
    assert adds_member in phases or adds_member.startswith("control-plane-join") and "control-plane-join all" in phases


# -- the sentinel: exactly one OK or FAILED line on every exit path, and resume after a reboot ------------------

def _runnable(tmp_path: Path, r: Rendered, node: str, steps: str, step_defs: str) -> tuple[Path, Path]:
    """The rendered runner (bootstrap.sh) and lib.sh with their fixed paths pointed into tmp_path; bootstrap.env
    names the steps and each step file holds `step_defs` (only steps defined here: the node's own would act on
    this machine)."""
    lib = tmp_path / "lib"
    (lib / "steps").mkdir(parents=True)
    script = r.file(node, "/usr/local/lib/imagegen/bootstrap.sh")
    env_text = r.file(node, "/etc/imagegen/bootstrap.env")
    env_text = re.sub(r'^STEPS=.*$', f'STEPS="{steps}"', env_text, flags=re.M) + "\n"
    (tmp_path / "bootstrap.env").write_text(env_text)
    library = r.file(node, "/usr/local/lib/imagegen/lib.sh")
    assert "/dev/console" in library
    (lib / "lib.sh").write_text(library.replace("/dev/console", str(tmp_path / "console")))
    for step in steps.split():
        (lib / "steps" / f"{step}.sh").write_text(step_defs + "\n")
    for old, new in (("/etc/imagegen/bootstrap.env", tmp_path / "bootstrap.env"),
                     ("LIB_DIR=/usr/local/lib/imagegen", f"LIB_DIR={lib}"),
                     ("STATE_DIR=/var/lib/imagegen", f"STATE_DIR={tmp_path}/state"),
                     ("LOG_DIR=/var/log/imagegen", f"LOG_DIR={tmp_path}/log")):
        assert str(old) in script, old
        script = script.replace(str(old), str(new))
    path = tmp_path / "bootstrap.sh"
    path.write_text(script)
    path.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake(bin_dir, "systemctl", f'echo "systemctl $*" >>{tmp_path}/systemctl\n')
    return path, bin_dir


def _console(tmp_path: Path) -> list[str]:
    c = tmp_path / "console"
    return c.read_text().splitlines() if c.exists() else []


@pytest.mark.parametrize("body,reason", [
    ("step_x() { :; }", None),
    ("step_x() { fail boom; }", "boom"),
    ('step_x() { echo "$NOT_SET_ANYWHERE"; }', "unexpected-exit-1"),
    ("step_x() { exit 3; }", "unexpected-exit-3"),
    ("step_x() { false; }", "step-x-returned-1"),
])
def test_exactly_one_sentinel_line(rendered: dict[str, Rendered], tmp_path: Path, body: str,
                                   reason: str | None) -> None:
    r = rendered["single"]
    script, bin_dir = _runnable(tmp_path, r, "lab-worker-1", "x", body)
    result = run_bash(str(script), bin_dir)
    lines = _console(tmp_path)
    assert len(lines) == 1, (lines, result.stderr, (tmp_path / "log" / "bootstrap.log").read_text())
    state = tmp_path / "state"
    if reason is None:
        assert result.returncode == 0 and lines[0].startswith("IMAGEGEN-BOOTSTRAP-OK node=lab-worker-1 role=worker")
        assert (state / "bootstrap.done").read_text().startswith("seconds=")
        assert not (state / "bootstrap.failed").exists() and not list(state.glob("*.tmp"))
    else:
        assert result.returncode != 0
        assert lines[0] == f"IMAGEGEN-BOOTSTRAP-FAILED node=lab-worker-1 step=x reason={reason}"
        assert f"reason={reason}" in (state / "bootstrap.failed").read_text()
        assert not (state / "bootstrap.done").exists()


def test_sigterm_prints_failed(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """systemd's stop (or TimeoutStartSec) sends SIGTERM to the unit's processes: one FAILED line still."""
    r = rendered["single"]
    script, bin_dir = _runnable(tmp_path, r, "lab-worker-1", "x", f"step_x() {{ touch {tmp_path}/started; sleep 30; }}")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin"}
    proc = subprocess.Popen([str(script)], env=env, start_new_session=True)
    for _ in range(100):
        if (tmp_path / "started").exists():
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    assert _console(tmp_path) == ["IMAGEGEN-BOOTSTRAP-FAILED node=lab-worker-1 step=x reason=killed-by-sigTERM"]


def test_resume_after_reboot_skips_completed_steps(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    r = rendered["single"]
    counter = tmp_path / "ran"
    defs = (f'step_a() {{ echo a >>{counter}; }}\n'
            f'step_b() {{ echo b >>{counter}; [ -f {tmp_path}/fixed ] || fail b-broken; }}')
    # Only steps defined here: the script's own steps would act on this machine.
    script, bin_dir = _runnable(tmp_path, r, "lab-worker-1", "a b", defs)
    assert run_bash(str(script), bin_dir).returncode == 1
    (tmp_path / "fixed").touch()
    # the reboot: the unit runs again (the script enabled it on its first run)
    assert "systemctl --no-reload enable imagegen-bootstrap.service" in (tmp_path / "systemctl").read_text()
    assert run_bash(str(script), bin_dir).returncode == 0
    assert counter.read_text().split() == ["a", "b", "b"]
    assert _console(tmp_path)[-1].startswith("IMAGEGEN-BOOTSTRAP-OK")
    assert sorted(p.name for p in (tmp_path / "state" / "steps").iterdir()) == ["a.done", "b.done"]


def test_bootstrap_unit_is_enabled_and_bounded(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    unit = r.file("worker-1", "/etc/systemd/system/imagegen-bootstrap.service")
    assert "TimeoutStartSec=infinity" not in unit
    timeout = int(re.search(r"^TimeoutStartSec=(\d+)$", unit, re.M).group(1))
    assert r.plan.bootstrap.deadline_seconds < timeout <= r.plan.bootstrap.deadline_seconds + 600
    assert "[Install]\nWantedBy=multi-user.target" in unit
    assert "ConditionPathExists=!/var/lib/imagegen/bootstrap.done" in unit


def test_retry_backs_off_and_gives_up(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = (functions(bootstrap(rendered["single"], "lab-worker-1"))
               + f"CURRENT_STEP=t; DEADLINE_SECONDS=100000\nsleep() {{ echo \"sleep $1\" >>{tmp_path}/slept; }}\n"
               + "n=0; flaky() { n=$((n + 1)); [ $n -ge 3 ]; }\nretry 5 flaky && echo OK-after-$n\n"
               + "retry 4 false || echo GAVE-UP\n")
    result = run_bash(program, bin_dir)
    assert "OK-after-3" in result.stdout and "GAVE-UP" in result.stdout
    assert (tmp_path / "slept").read_text().split("\n")[:2] == ["sleep 5", "sleep 10"]


@pytest.mark.parametrize("command", ["kubeadm reset -f", "kubectl apply", "harbor-install.sh"])
def test_reset_kubectl_and_harbor_output_is_masked(rendered: dict[str, Rendered], command: str) -> None:
    node = "harbor" if command == "harbor-install.sh" else "cp-1"
    script = "\n".join(line.strip() for line in bootstrap(rendered["ha"], node).splitlines())
    uses = [line for line in script.splitlines() if command in line and not line.startswith("#")]
    assert uses and all("redacted" in line for line in uses), uses


def test_redacted_masks_passwords(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    script = bootstrap(rendered["ha"], "cp-1")
    func = re.search(r"^redacted\(\) \{.*?^\}", script, re.S | re.M).group(0)
    result = subprocess.run(["bash", "-c", f"{func}\nredacted echo 'harbor_admin_password: \"s3cret-Pw\" ok'"],
                            capture_output=True, text=True)
    assert "s3cret" not in result.stdout and "<secret>" in result.stdout


# -- item 8: the API server's port with `single` and `kube-vip` -------------------------------------------------

@pytest.mark.parametrize("mode,port,bind", [("single", 8443, 8443), ("kube-vip", 7443, 7443),
                                            ("load-balancer", 8443, 6443)])
def test_api_server_binds_the_endpoint_port(base_plan: dict, tmp_path: Path, mode: str, port: int,
                                            bind: int) -> None:
    base_plan["endpoint"] = {**base_plan["endpoint"], "mode": mode, "port": port}
    if mode == "single":
        base_plan["endpoint"].pop("vip", None)
        base_plan["nodes"] = [n for n in base_plan["nodes"] if n["role"] not in ("load-balancer",)
                              and n["name"] not in ("cp-2", "cp-3")]
    if mode == "kube-vip":
        base_plan["nodes"] = [n for n in base_plan["nodes"] if n["role"] != "load-balancer"]
    plan = parse_plan(base_plan)
    state = ensure_state(tmp_path / "state", plan)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for node in plan.control_planes:
        files = {f["path"]: f["content"] for f in yaml.safe_load(render_user_data(plan, node, state))["write_files"]}
        docs = list(yaml.safe_load_all(files["/etc/imagegen/kubeadm.yaml"]))
        endpoint = (docs[0]["localAPIEndpoint"] if docs[0]["kind"] == "InitConfiguration"
                    else docs[0]["controlPlane"]["localAPIEndpoint"])
        assert endpoint["bindPort"] == bind
        conf = tmp_path / f"{node.name}.yaml"
        conf.write_text(files["/etc/imagegen/kubeadm.yaml"])
        script = "\n".join(text for path, text in files.items() if path.startswith(PROGRAM_PREFIXES))
        result = run_bash(f"{functions(script)}\nKUBEADM_CONFIG={conf}\napi_port", bin_dir)
        assert result.stdout.strip() == str(bind)
        assert ":6443/healthz" not in script and '$NODE_IP:$(api_port)/healthz' in script


# -- item 4: Flannel's net-conf.json follows the plan's pod CIDR --------------------------------------------------

@pytest.mark.parametrize("cidr", ["10.32.0.0/12", "10.244.0.0/16"])
def test_flannel_network_follows_pod_cidr(rendered: dict[str, Rendered], tmp_path: Path, cidr: str) -> None:
    """Upstream facts kept as test data: flannel's own kube-flannel-cfg ConfigMap (tests/data/kube-flannel-cfg.yaml),
    edited by the rendered script's set_flannel_network and read back as flanneld reads it (JSON)."""
    manifest = tmp_path / "kube-flannel.yml"
    original = (DATA / "kube-flannel-cfg.yaml").read_text()
    manifest.write_text(original)
    func = functions(bootstrap(rendered["kube-vip"], "k8scp-01"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = run_bash(f"{func}\nset_flannel_network {shlex.quote(str(manifest))} {cidr}", bin_dir)
    assert result.returncode == 0, result.stderr
    cm = yaml.safe_load(manifest.read_text())
    net = json.loads(cm["data"]["net-conf.json"])
    assert net["Network"] == cidr and net["Backend"] == {"Type": "vxlan"}
    assert json.loads(cm["data"]["cni-conf.json"]) == json.loads(yaml.safe_load(original)["data"]["cni-conf.json"])


def test_flannel_edit_refuses_an_unknown_shape(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    manifest = tmp_path / "other.yml"
    manifest.write_text("kind: ConfigMap\ndata:\n  other.json: '{}'\n")
    func = functions(bootstrap(rendered["kube-vip"], "k8scp-01"))
    result = run_bash(f"{func}\nset_flannel_network {manifest} 10.32.0.0/12", tmp_path)
    assert result.returncode != 0


def test_flannel_gets_the_plans_pod_cidr(rendered: dict[str, Rendered]) -> None:
    """The first control plane's apply_cni step passes the plan's pod CIDR (decided at render time, not read back
    from kubeadm.yaml at boot); other CNIs carry no Flannel code."""
    r = rendered["kube-vip"]
    assert r.plan.cluster.cni == "flannel"
    step = r.program("k8scp-01", "steps/apply_cni")
    assert f"set_flannel_network \"$copy\" {r.plan.cluster.pod_cidr} " in step
    for name, rr in rendered.items():
        for node in rr.plan.control_planes[:1]:
            files = rr.files(node.name)
            if rr.plan.cluster.cni != "flannel" and "/usr/local/lib/imagegen/steps/apply_cni.sh" in files:
                assert "flannel" not in files["/usr/local/lib/imagegen/steps/apply_cni.sh"]["content"].lower(), name


# -- item 10: package_repository with or without a trailing slash -----------------------------------------------

@pytest.mark.parametrize("repo", ["https://mirror.example.internal/k8s", "https://mirror.example.internal/k8s/"])
def test_package_repository_slash(rendered: dict[str, Rendered], tmp_path: Path, repo: str) -> None:
    distro = rendered["ha"].file("worker-1", "/usr/local/lib/imagegen/distro.sh")
    distro = distro.replace("/etc/apt/", f"{tmp_path}/etc/apt/")
    (tmp_path / "distro.sh").write_text(distro)
    for d in ("sources.list.d", "preferences.d"):
        (tmp_path / "etc/apt" / d).mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake(bin_dir, "curl", f'echo "curl $*" >>{tmp_path}/calls\n')
    for tool in ("apt-get", "apt-mark"):
        fake(bin_dir, tool, f'echo "{tool} $*" >>{tmp_path}/calls\n')
    # gpg --dearmor -o FILE writes FILE (kube_repo_install then makes it 0644)
    fake(bin_dir, "gpg", f'echo "gpg $*" >>{tmp_path}/calls\n'
         'while [ $# -gt 0 ]; do [ "$1" = -o ] && : >"$2"; shift; done\n')
    result = run_bash(f". {tmp_path}/distro.sh\nkube_repo_install {repo} 1.34.2 1.1 && echo DONE", bin_dir)
    assert "DONE" in result.stdout, result.stderr
    assert " https://mirror.example.internal/k8s/Release.key" in (tmp_path / "calls").read_text()
    sources = (tmp_path / "etc/apt/sources.list.d/kubernetes.list").read_text()
    assert " https://mirror.example.internal/k8s/ /" in sources


def test_apt_installs_keep_conffiles(rendered: dict[str, Rendered]) -> None:
    distro = rendered["ha"].file("lb-1", "/usr/local/lib/imagegen/distro.sh")
    installs = [line for line in distro.splitlines() if not line.lstrip().startswith("#")
                and ("apt-get install" in line or "APT_INSTALL[@]" in line)]
    assert installs
    assert "--force-confold" in distro and "--force-confdef" in distro
    assert all("APT_INSTALL" in line for line in installs if not line.lstrip().startswith("APT_INSTALL=("))


def _apt_install_run(distro: str, tmp_path: Path, existing: str | None, apt_status: int) -> tuple[str, str]:
    """apt_install from the rendered distro.sh with apt-get a stand-in that records policy-rc.d as it finds it;
    (what apt-get saw, what is left afterwards)."""
    guard = tmp_path / "policy-rc.d"
    if existing is not None:
        guard.write_text(existing)
        guard.chmod(0o755)
    script = tmp_path / "distro.sh"
    script.write_text(distro.replace("/usr/sbin/policy-rc.d", str(guard)))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\n{{ cat {guard}; {guard} start; echo \"exit=$?\"; }} "
                                     f">{tmp_path}/seen 2>&1\nexit {apt_status}\n")
    (bin_dir / "apt-get").chmod(0o755)
    done = subprocess.run(["bash", "-c", f". {script}; apt_install nginx; echo \"rc=$?\""], capture_output=True,
                          text=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False)
    assert f"rc={apt_status}" in done.stdout, done.stdout + done.stderr
    return (tmp_path / "seen").read_text(), guard.read_text() if guard.exists() else "<none>"


@pytest.mark.parametrize("apt_status", [0, 100])
def test_apt_install_forbids_service_starts_and_cleans_up(rendered: dict[str, Rendered], tmp_path: Path,
                                                          apt_status: int) -> None:
    """Maintainer scripts see a policy-rc.d answering 101 (invoke-rc.d(8): action forbidden) during the install,
    and it is gone afterwards, whether the install worked or not."""
    seen, left = _apt_install_run(rendered["ha"].file("lb-1", "/usr/local/lib/imagegen/distro.sh"), tmp_path, None,
                                  apt_status)
    assert "exit=101" in seen and "imagegen" in seen
    assert left == "<none>"


def test_apt_install_leaves_a_foreign_policy_rc_alone(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    foreign = "#!/bin/sh\n# the image builder's own\nexit 0\n"
    seen, left = _apt_install_run(rendered["ha"].file("lb-1", "/usr/local/lib/imagegen/distro.sh"), tmp_path,
                                  foreign, 0)
    assert "exit=0" in seen and left == foreign


# -- item 2, proven: Debian's own nginx installed over imagegen's nginx.conf in a throwaway chroot --------------

CHROOT_TAR = CACHE / "apt-chroot" / "bookworm-minbase.tar"


def _minbase() -> Path:
    if not CHROOT_TAR.exists():
        mmdebstrap = require_tool("mmdebstrap")
        CHROOT_TAR.parent.mkdir(parents=True, exist_ok=True)
        part = CHROOT_TAR.with_suffix(".part")
        subprocess.run([mmdebstrap, "--variant=minbase", "--mode=root", "--format=tar", "bookworm", str(part),
                        "http://deb.debian.org/debian"], check=True, capture_output=True, timeout=1200)
        part.rename(CHROOT_TAR)
    return CHROOT_TAR


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("IMAGEGEN_CHROOT_TESTS") != "1",
                    reason="opt-in (needs root and Debian's mirror, ~1 min): make test-chroot")
def test_pkg_ensure_keeps_imagegen_nginx_conf_in_a_chroot(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """The load balancer's own pkg_ensure (rendered distro.sh) installs Debian bookworm's nginx with stdin at
    /dev/null into a minbase chroot where /etc/nginx/nginx.conf was already written, as cloud-init does. Before the
    fix dpkg stopped at its conffile prompt ("end of file on stdin at conffile prompt")."""
    if os.geteuid() != 0:
        pytest.skip("needs root for the chroot")
    r = rendered["ha"]
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(_minbase()), "-C", str(root)], check=True)
    conf = r.file("lb-1", "/etc/nginx/nginx.conf")
    (root / "etc/nginx").mkdir(parents=True)
    (root / "etc/nginx/nginx.conf").write_text(conf)
    (root / "usr/local/lib/imagegen").mkdir(parents=True, exist_ok=True)
    (root / "usr/local/lib/imagegen/distro.sh").write_text(r.file("lb-1", "/usr/local/lib/imagegen/distro.sh"))
    # No policy-rc.d of the test's own: imagegen's apt_install must keep nginx's postinst from starting nginx on
    # imagegen's nginx.conf before libnginx-mod-stream is configured (the stock-image failure).
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    result = subprocess.run(
        ["chroot", str(root), "/bin/bash", "-c",
         ". /usr/local/lib/imagegen/distro.sh && pkg_ensure nginx libnginx-mod-stream && echo INSTALLED"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"})
    assert "INSTALLED" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert (root / "etc/nginx/nginx.conf").read_text() == conf
    status = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f=${Status}", "nginx"],
                            capture_output=True, text=True)
    assert status.stdout == "install ok installed"
    assert (root / "etc/nginx/nginx.conf.dpkg-dist").exists()  # the package's version, set aside by dpkg
    assert not (root / "usr/sbin/policy-rc.d").exists()  # imagegen's guard is gone again


# -- CSR approver: requested names against the Node's own addresses ---------------------------------------------

def _csr(tmp_path: Path, name: str, cn: str, sans: str) -> str:
    key = tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-subj", f"/O=system:nodes/CN={cn}", "-addext",
                    f"subjectAltName={sans}", "-out", str(tmp_path / f"{name}.csr")],
                   check=True, capture_output=True)
    return base64.b64encode((tmp_path / f"{name}.csr").read_bytes()).decode()


def test_csr_approver_checks_requested_names(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    require_tool("openssl")
    script = rendered["ha"].file("cp-1", "/usr/local/lib/imagegen/csr-approver.sh")
    assert "worker-1" not in script  # nothing about the plan's nodes is baked in
    csrs = {
        "good": ("system:node:worker-1", "DNS:worker-1,IP:192.168.10.21"),
        "extra-ip": ("system:node:worker-1", "DNS:worker-1,IP:192.168.10.21,IP:10.9.9.9"),
        "other-name": ("system:node:worker-1", "DNS:worker-1,DNS:k8s-api.example.internal"),
        "ghost": ("system:node:ghost", "DNS:ghost"),
        "cn-mismatch": ("system:node:worker-2", "DNS:worker-1,IP:192.168.10.21"),
    }
    users = {"good": "system:node:worker-1", "extra-ip": "system:node:worker-1", "other-name": "system:node:worker-1",
             "ghost": "system:node:ghost", "cn-mismatch": "system:node:worker-1"}
    listing = "".join(f"{n} kubernetes.io/kubelet-serving {users[n]} \n" for n in csrs)
    listing += "done kubernetes.io/kubelet-serving system:node:worker-1 Approved\n"
    listing += "client kubernetes.io/kube-apiserver-client-kubelet system:node:worker-1 \n"
    requests = {n: _csr(tmp_path, n, cn, sans) for n, (cn, sans) in csrs.items()}
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    (tmp_path / "listing").write_text(listing)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake(bin_dir, "kubectl", f"""
case "$1 $2" in
  "get csr")
    if [ "$3" = -o ]; then cat {tmp_path}/listing; else
      python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]], end="")' \
        {tmp_path}/requests.json "$3"
    fi ;;
  "get node")
    [ "$3" = worker-1 ] || {{ echo "Error from server (NotFound): nodes \\"$3\\" not found" >&2; exit 1; }}
    printf '192.168.10.21\\nworker-1\\n' ;;
  "certificate approve") echo "$3" >>{tmp_path}/approved ;;
esac
""")
    (tmp_path / "approver.sh").write_text(script)
    result = run_bash(f"bash {tmp_path}/approver.sh", bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "approved").read_text().split() == ["good"]
    for name in ("extra-ip", "other-name", "ghost", "cn-mismatch"):
        assert f"not approving {name}" in result.stdout


# -- etcd-snapshot leaves no partial file ------------------------------------------------------------------------

def test_etcd_snapshot_removes_part_on_failure(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    script = rendered["ha"].file("cp-1", "/usr/local/lib/imagegen/etcd-snapshot.sh")
    assert "dir=/var/backups/etcd" in script
    (tmp_path / "snap.sh").write_text(script.replace("dir=/var/backups/etcd", f"dir={tmp_path}/backups"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake(bin_dir, "etcdctl", 'if [ "$2" = save ]; then echo partial >"$3"; exit 1; fi\n')
    result = run_bash(f"bash {tmp_path}/snap.sh", bin_dir)
    assert result.returncode != 0
    assert list((tmp_path / "backups").iterdir()) == []


def test_interrupted_init_with_cluster_state_is_finished_not_reset(rendered: dict[str, Rendered],
                                                                   tmp_path: Path) -> None:
    """After a reboot mid-init: etcd data and kubelet.conf exist and the API server answers. The script must run
    init's remaining phases and never `kubeadm reset` or a second `kubeadm init`."""
    r = rendered["single"]
    kube, sums = _pki_node(tmp_path, r, "lab-cp-1")
    (kube / "kubelet.conf").write_text("")
    (tmp_path / "etcd" / "member").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _fakes(bin_dir, calls, kube, init_fails=0)
    fake(bin_dir, "curl", "echo ok\n")  # the API server answers
    program = (functions(bootstrap(r, "lab-cp-1")) + _harness(tmp_path, kube)
               + 'SKIP_PHASES="addon/coredns"\nsleep() { :; }\nensure_offline_images() { :; }\napply_cni() { :; }\n'
               + "keep_cluster_pki\nstep_init_cluster\necho RETURNED\n")
    result = run_bash(program, bin_dir)
    assert "RETURNED" in result.stdout, result.stdout + result.stderr
    done = [c.removesuffix(f" --config {tmp_path}/kubeadm.yaml") for c in calls.read_text().splitlines()]
    assert done == ["kubeadm init phase upload-config all", "kubeadm init phase mark-control-plane",
                    "kubeadm init phase bootstrap-token", "kubeadm init phase kubelet-finalize all",
                    "kubeadm init phase addon kube-proxy"]
    assert (kube / "pki" / "ca.key").exists()


def test_worker_with_kubelet_conf_is_not_joined_again(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    r = rendered["single"]
    kube = tmp_path / "etc-kubernetes"
    kube.mkdir()
    (kube / "kubelet.conf").write_text("")
    (tmp_path / "kubeadm.yaml").write_text(r.file("lab-worker-1", "/etc/imagegen/kubeadm.yaml"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    calls.write_text("")
    _fakes(bin_dir, calls, kube, init_fails=0)
    program = functions(bootstrap(r, "lab-worker-1")) + _harness(tmp_path, kube) + "step_join_worker\necho RETURNED\n"
    result = run_bash(program, bin_dir)
    assert "RETURNED" in result.stdout and calls.read_text() == ""


def _real_kubeadm_1_20() -> Path | None:
    found = sorted(CACHE.glob("k8s-build/*/bin/kubeadm")) + sorted(CACHE.glob("bundle/*/bundle/bin/kubeadm"))
    return found[0] if found else None


@pytest.mark.skipif(_real_kubeadm_1_20() is None, reason="no kubeadm 1.20 built here: make bundle")
def test_resume_and_retry_phases_exist_in_real_kubeadm_1_20(rendered: dict[str, Rendered]) -> None:
    """The phases the script runs after a failed init (finish_init_phases) and a failed 1.20 control-plane join
    (join-retry-phases), asked of the real kubeadm 1.20: each exists and takes --config."""
    kubeadm = str(_real_kubeadm_1_20())
    script = bootstrap(rendered["single"], "lab-cp-1")
    body = re.search(r"^finish_init_phases\(\) \{\n.*?^\}", script, re.S | re.M).group(0)
    init_phases = shlex.split(re.search(r"for phase in (.*?); do", body, re.S).group(1).replace("\\\n", " "))
    assert "upload-config all" in init_phases
    from imagegen.versions import KubeVersion, rules_for

    join_phases = rules_for(KubeVersion.parse("1.20.2")).control_plane_join_retry_phases
    for command, phases in (("init", init_phases), ("join", join_phases)):
        for phase in phases:
            result = subprocess.run([kubeadm, command, "phase", *phase.split(), "--help"], capture_output=True,
                                    text=True)
            assert result.returncode == 0 and "--config" in result.stdout, (command, phase, result.stderr)
            assert not re.search(r"^Available Commands:", result.stdout, re.M), f"{phase} is not a leaf phase"


def test_joining_control_plane_ca_matches_its_pin(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """check_ca_pin with the real openssl: the seed's ca.crt hashes to the caCertHashes of its kubeadm.yaml; another
    cluster's CA fails the node with a marker."""
    require_tool("openssl")
    r = rendered["ha"]
    kube, _ = _pki_node(tmp_path, r, "cp-2")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = functions(bootstrap(r, "cp-2")) + _harness(tmp_path, kube) + "check_ca_pin && echo PINNED\n"
    assert "PINNED" in run_bash(program, bin_dir).stdout
    (kube / "pki" / "ca.crt").write_text(rendered["single"].file("lab-cp-1", "/etc/kubernetes/pki/ca.crt"))
    result = run_bash(program + "", bin_dir)
    assert result.returncode == 1 and "PINNED" not in result.stdout
    assert "reason=cluster-ca-does-not-match-ca-cert-hash" in (tmp_path / "state" / "bootstrap.failed").read_text()


# -- pipefail: `producer | grep -q` fails when grep stops reading first ----------------------------------------

@pytest.mark.parametrize("wanted", ["k8s.gcr.io/kube-apiserver:v1.20.2", "k8s.gcr.io/pause:3.2"])
def test_image_present_survives_a_long_image_list(rendered: dict[str, Rendered], tmp_path: Path, wanted: str) -> None:
    """cluster-test on containerd failed with images-missing-from-bundle for an image that was imported: grep -q
    left the pipe early, ctr died of SIGPIPE and pipefail turned the match into a failure."""
    r = rendered["ha"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake(bin_dir, "ctr", f'echo {wanted}\nfor i in $(seq 1 200000); do echo "sha256:$i"; done\n')
    program = (f"set -uo pipefail\n{functions(bootstrap(r, 'cp-1'))}\n"
               f"runtime_image_present {wanted} && echo present || echo missing\n"
               "runtime_image_present k8s.gcr.io/none:1 && echo present || echo missing\n")
    out = run_bash(program, bin_dir).stdout.split()
    assert out == ["present", "missing"]


def test_join_error_classifier_reads_the_attempt_log(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    r = rendered["ha"]
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    program = (f"set -uo pipefail\nLOG_DIR={log_dir}\n{functions(bootstrap(r, 'worker-1'))}\n"
               "join_error_is_final && echo final || echo retry\n")
    log = log_dir / "join-attempt.log"
    log.write_text("x\n" * 100000 + "error: does not yet contain a JWS signature for token ID abc, will try again\n")
    assert run_bash(program, tmp_path).stdout.strip() == "retry"
    log.write_text("x\n" * 100000 + "could not find a JWS signature in the cluster-info ConfigMap for token ID 'abc'\n")
    assert run_bash(program, tmp_path).stdout.strip() == "final"
