"""The operator's CLI: init, the version table, the plan schema, explain, -o json shapes, diff, completion,
progress, exit codes and the error style."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from imagegen import plan as plan_module
from imagegen import planschema
from imagegen.cli import main
from imagegen.initplan import InitOptions, plan_text
from imagegen.plan import load_plan, parse_plan_text
from imagegen.progress import Progress
from imagegen.versions import MAX_MINOR, MIN_MINOR, KubeVersion
from imagegen.versiontable import version_table

from .conftest import PLANS, ROOT

HA = str(ROOT / "examples" / "ha.yaml")
KUBE_VIP = str(ROOT / "examples" / "kube-vip.yaml")
ALL_PLANS = [*PLANS, *sorted(ROOT.glob("vm-tests/plans/*.yaml"))]

# The new-user task, with init flags only.
WALKTHROUGH = ["--name", "prod", "--control-planes", "3", "--workers", "4", "--endpoint", "kube-vip",
               "--vip", "10.20.0.10", "--network", "10.20.0.0/24", "--kubernetes-version", "1.33",
               "--runtime", "containerd", "--cni", "calico", "--distro", "ubuntu-24.04",
               "--image-repository", "registry.example.internal/k8s",
               "--registry-mirror", "https://registry.example.internal/v2/dockerhub",
               "--cni-manifest", "https://files.example.internal/calico/v3.28.2/calico.yaml",
               "--kube-vip-image", "registry.example.internal/kube-vip/kube-vip:v0.8.9"]


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagegen", *args], capture_output=True, text=True, cwd=ROOT,
                          input=stdin, env={**os.environ, **(env or {})})


def _tree(root: Path) -> dict[str, tuple[bytes, int, float]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (p.read_bytes() if p.is_file() else b"", st.st_mode, st.st_mtime)
    return out


# -- schema ------------------------------------------------------------------------------------------------------

def test_committed_schema_is_generated() -> None:
    committed = (ROOT / planschema.SCHEMA_FILE).read_text()
    assert committed == planschema.generated_text(), "run: python -m imagegen schema > schema/plan.schema.json"


def test_schema_covers_every_plan_key() -> None:
    paths = {f"{s}.{k}" if s else k for s, keys in plan_module.key_tables().items() for k in keys}
    assert paths == set(planschema.FIELDS)


@pytest.mark.parametrize("path", ALL_PLANS, ids=lambda p: p.stem)
def test_every_example_plan_validates_against_schema(path: Path) -> None:
    schema = json.loads((ROOT / planschema.SCHEMA_FILE).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(path.read_text())))
    assert not errors, [e.message for e in errors]


def test_schema_rejects_what_the_parser_rejects() -> None:
    validator = jsonschema.Draft202012Validator(planschema.generate())
    data = yaml.safe_load(Path(KUBE_VIP).read_text())
    data["cluster"]["kubernetes_verison"] = "1.30.6"
    data["endpoint"]["port"] = 70000
    data["bootstrap"] = {"join_attempts": 0}
    messages = " ".join(e.message for e in validator.iter_errors(data))
    assert "kubernetes_verison" in messages and "70000" in messages and "0 is less than" in messages


def test_schema_defaults_are_the_parsers() -> None:
    found = planschema.defaults()
    assert found["cluster.container_runtime"] == "containerd" and found["endpoint.port"] == 6443
    assert found["bootstrap.deadline_seconds"] == 3600 and found["bundle.label"] == "imagegen-bundle"


# -- version table -----------------------------------------------------------------------------------------------

def test_version_table_covers_every_supported_minor() -> None:
    table = version_table()
    assert [m.minor for m in table.minors] == list(range(MIN_MINOR, MAX_MINOR + 1))
    assert table.updated and all(m.source and m.etcd and m.coredns for m in table.minors)


def test_version_resolution() -> None:
    table = version_table()
    assert table.resolve("1.33") == table.release(33).newest  # type: ignore[union-attr]
    assert table.resolve("v1.30.2") == KubeVersion(1, 30, 2)
    with pytest.raises(ValueError, match="not in imagegen's version table"):
        table.resolve("1.19")
    assert table.warning(KubeVersion(1, 33, 99)) and table.warning(KubeVersion(1, 33, 0)) is None


def test_unknown_patch_warns_but_exits_zero(tmp_path: Path) -> None:
    text = Path(KUBE_VIP).read_text().replace('"1.30.6"', '"1.30.99"')
    result = run("validate", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    assert "imagegen: warning: Kubernetes 1.30.99 is not in imagegen's version table" in result.stderr


# -- init ----------------------------------------------------------------------------------------------------------

def test_init_walkthrough_validates_and_renders(tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk5bm9kZXMtYXJlLWNhdHRsZS1ub3QtcGV0cy0wMDAx ops@host\n")
    plan_file = tmp_path / "prod.yaml"
    assert main(["init", str(plan_file), *WALKTHROUGH, "--ssh-key", str(key)]) == 0
    text = plan_file.read_text()
    assert text.startswith("# yaml-language-server: $schema=") and text.splitlines()[0].endswith("plan.schema.json")
    plan = load_plan(plan_file)
    c = plan.cluster
    assert str(c.kubernetes_version) == str(version_table().release(33).newest)  # type: ignore[union-attr]
    assert (c.container_runtime, c.cni, c.distro, plan.endpoint.mode) == ("containerd", "calico", "ubuntu-24.04",
                                                                         "kube-vip")
    assert [n.role for n in plan.nodes].count("control-plane") == 3 and len(plan.nodes) == 7
    assert c.image_repository == "registry.example.internal/k8s" and plan.ssh_authorized_keys
    assert c.cni_manifest.startswith("https://files.example.internal/") and c.kube_vip_image.startswith("registry.")
    out, state = tmp_path / "out", tmp_path / "state"
    assert main(["render", str(plan_file), "--out", str(out), "--state", str(state), "--quiet"]) == 0
    assert (out / "seeds" / "cp-3.iso").is_file()


@pytest.mark.parametrize("flags", [[], ["--control-planes", "3", "--endpoint", "load-balancer"],
                                   ["--runtime", "docker", "--kubernetes-version", "1.28"],
                                   ["--cni", "host-gw", "--distro", "debian-12", "--workers", "0"],
                                   ["--kubernetes-version", "1.22", "--package-repository",
                                    "https://apt.example.internal/kubernetes/"]])
def test_init_variants_are_valid(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", *flags]) == 0
    parse_plan_text(capsys.readouterr().out)


def test_init_refusals_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "p.yaml"
    existing.write_text("keep")
    assert main(["init", str(existing)]) == 2
    assert existing.read_text() == "keep" and "--force" in capsys.readouterr().err
    assert main(["init", "--kubernetes-version", "1.19"]) == 2
    assert main(["init", "--kubernetes-version", "1.22"]) == 2  # pkgs.k8s.io starts at 1.24
    assert main(["init", "--network", "10.0.0.0/29", "--workers", "9"]) == 2
    assert main(["init", "--name", "Bad_Name"]) == 2
    err = capsys.readouterr().err
    assert err.count("imagegen: ") >= 4 and "cluster.name" in err


def test_init_print_defaults_is_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--print-defaults"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["cluster"]["kube_proxy_mode"] == "ipvs" and data["bootstrap"]["join_attempts"] == 5


def test_init_lays_out_addresses() -> None:
    text = plan_text(InitOptions(control_planes=2, workers=1, endpoint="load-balancer", network="10.1.2.0/24"))
    plan = parse_plan_text(text)
    assert [(n.name, str(n.ip)) for n in plan.nodes] == [("lb-1", "10.1.2.11"), ("lb-2", "10.1.2.12"),
                                                         ("cp-1", "10.1.2.13"), ("cp-2", "10.1.2.14"),
                                                         ("worker-1", "10.1.2.15")]
    assert str(plan.endpoint.vip) == "10.1.2.10" and plan.nodes[0].mac == "52:54:00:01:02:0b"


# -- explain --------------------------------------------------------------------------------------------------------

EXPLAIN_KEYS = {"node", "role", "description", "addresses", "steps", "files", "secret_groups", "packages", "images",
                "console"}


def test_explain_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", HA, "cp-1", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= EXPLAIN_KEYS and data["kubernetes_version"] == "1.34.2"
    assert set(data["addresses"]) == {"ip", "mac", "interface", "cidr", "gateway", "dns", "endpoint"}
    assert data["steps"][:4] == ["prepare", "disable_swap", "install_runtime", "install_kubernetes"]
    assert "init_cluster" in data["steps"]
    files = {f["path"]: f for f in data["files"]}
    assert files["/etc/kubernetes/pki/ca.key"]["secret_groups"] == ["cluster-ca-keys"]
    assert files["/etc/kubernetes/pki/ca.key"]["mode"] == "0600"
    assert files["/etc/imagegen/kubeadm.yaml"]["secret_groups"] == ["bootstrap-token", "certificate-key"]
    assert files["/etc/hosts"]["secret_groups"] == [] and set(files["/etc/hosts"]) == {"path", "mode",
                                                                                       "secret_groups", "source"}
    images = [i["image"] for i in data["images"]]
    assert "registry.k8s.io/kube-apiserver:v1.34.2" in images and all(set(i) == {"image", "from"}
                                                                     for i in data["images"])
    assert data["console"]["ok"] == "IMAGEGEN-BOOTSTRAP-OK node=cp-1 role=control-plane seconds=N"
    assert set(data["packages"]) == {"distribution", "distribution_source", "kubernetes", "kubernetes_source"}


def test_explain_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", HA, "cp-2", "-o", "json"]) == 0
    cp2 = json.loads(capsys.readouterr().out)
    assert "join_control_plane" in cp2["steps"] and "init_cluster" not in cp2["steps"]
    assert main(["explain", HA, "worker-1", "-o", "json"]) == 0
    worker = json.loads(capsys.readouterr().out)
    assert not any("kube-apiserver" in i["image"] for i in worker["images"])
    assert all("cluster-ca-keys" not in f["secret_groups"] for f in worker["files"])
    assert main(["explain", HA, "lb-1"]) == 0
    text = capsys.readouterr().out
    assert "/etc/keepalived/keepalived.conf" in text and "vrrp-password" in text and "IMAGEGEN-BOOTSTRAP-OK" in text


def test_explain_kube_vip_private_repository(capsys: pytest.CaptureFixture[str]) -> None:
    text = Path(KUBE_VIP).read_text().replace("  cni: flannel\n", "  cni: flannel\n  image_repository: "
                                              "registry.example.internal/k8s\n")
    plan = parse_plan_text(text)
    from imagegen.explain import explain_node

    images = [i["image"] for i in explain_node(plan, "k8scp-01")["images"]]
    assert "registry.example.internal/k8s/coredns:v1.11.1" in images  # kubeadm drops coredns/ for custom repos
    assert "ghcr.io/kube-vip/kube-vip:v0.8.9" in images


def test_explain_unknown_node_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", HA, "nope"]) == 2
    assert "imagegen: " in capsys.readouterr().err


# -- -o json on validate, show, render -------------------------------------------------------------------------------

PLAN_KEYS = {"cluster", "kubernetes_version", "kubeadm_api", "container_runtime", "cni", "kube_proxy_mode", "distro",
             "endpoint", "networks", "nodes"}


def test_validate_json_ok_and_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", HA, "-o", "json"]) == 0
    ok = json.loads(capsys.readouterr().out)
    assert ok["valid"] is True and ok["problems"] == [] and set(ok) >= PLAN_KEYS
    assert isinstance(ok["warnings"], list) and all(isinstance(w, str) for w in ok["warnings"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(HA).read_text().replace("kubernetes_version", "kubernetes_verison"))
    assert main(["validate", str(bad), "-o", "json"]) == 2
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["valid"] is False and data["plan"] == str(bad)
    assert {"field", "value", "message", "fix"} == set(data["problems"][0])
    assert any(p["field"] == "cluster.kubernetes_verison" for p in data["problems"])
    assert out.err.startswith(f"imagegen: {bad}: ")


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", HA, "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == PLAN_KEYS and data["endpoint"] == {"mode": "load-balancer", "name": "k8s-api.example.internal",
                                                           "address": "192.168.10.10", "port": 6443}
    assert set(data["nodes"][0]) == {"name", "role", "ip", "mac", "kubernetes"}


def test_render_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["render", KUBE_VIP, "--out", str(out), "--state", str(tmp_path / "s"), "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"cluster", "out", "state", "files", "bytes", "seeds", "admin_kubeconfig", "nodes"}
    assert data["seeds"] == 5 and data["nodes"][0] == {"name": "k8scp-01", "role": "control-plane",
                                                       "ip": "172.31.253.61",
                                                       "seed": str(out / "seeds" / "k8scp-01.iso")}


# -- diff -------------------------------------------------------------------------------------------------------------

def test_diff_writes_nothing_and_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    assert main(["render", KUBE_VIP, "--out", str(out), "--state", str(state), "--quiet"]) == 0
    before_out, before_state = _tree(out), _tree(state)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    assert main(["diff", KUBE_VIP, "--out", str(out), "--state", str(state), "--exit-code"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no changes")

    changed = tmp_path / "changed.yaml"
    changed.write_text(Path(KUBE_VIP).read_text().replace("ops@bastion", "ops@bastion2").replace(
        '  - {name: k8swn-02, role: worker, ip: 172.31.253.72, mac: "52:54:00:fd:00:72"}\n', ""))
    assert main(["diff", str(changed), "--out", str(out), "--state", str(state), "-o", "json", "--files",
                 "--exit-code"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"out", "changed", "state", "cluster", "nodes"} and data["changed"] is True
    nodes = {n["name"]: n for n in data["nodes"]}
    assert set(nodes["k8scp-01"]) == {"name", "role", "status", "files", "entries", "instance_id"}
    assert nodes["k8swn-02"]["status"] == "removed" and nodes["k8swn-01"]["status"] == "changed"
    assert "nodes/k8swn-01/user-data" in nodes["k8swn-01"]["files"]
    assert {"path", "change", "what", "secret"} == set(nodes["k8scp-01"]["entries"][0])
    assert _tree(out) == before_out and _tree(state) == before_state
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*siblings, "changed.yaml"])


def test_diff_masks_secrets_in_unified_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    assert main(["render", KUBE_VIP, "--out", str(out), "--state", str(state), "--quiet"]) == 0
    token = (state / "bootstrap-token").read_text().strip() if (state / "bootstrap-token").exists() else None
    assert main(["token", "rotate", "--state", str(state)]) == 0
    capsys.readouterr()
    assert main(["render", KUBE_VIP, "--out", str(out), "--state", str(state), "--dry-run", "--files"]) == 0
    text = capsys.readouterr().out
    assert "/etc/imagegen/kubeadm.yaml: content (secret, not shown)" in text
    assert "bootstrapToken" not in text and "token:" not in text
    if token:
        assert token not in text and token.split(".")[1] not in text


def test_diff_without_state_or_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", KUBE_VIP, "--out", str(tmp_path / "none"), "--state", str(tmp_path / "nostate")]) == 0
    text = capsys.readouterr().out
    assert "does not exist yet" in text and "new" in text
    assert not (tmp_path / "none").exists() and not (tmp_path / "nostate").exists()


# -- script-friendliness ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,usage", [(["render", HA, "--out", "x", "--bogus"], "usage: imagegen render"),
                                        (["validate", HA, "--bogus"], "usage: imagegen validate"),
                                        (["token", "rotate", "--bogus"], "usage: imagegen token rotate"),
                                        (["explain", HA, "cp-1", "--bogus"], "usage: imagegen explain")])
def test_unknown_flag_prints_subcommand_usage(argv: list[str], usage: str) -> None:
    result = run(*argv)
    assert result.returncode == 2 and result.stderr.startswith(usage), result.stderr
    assert "unrecognized arguments: --bogus" in result.stderr


def test_validate_reads_stdin() -> None:
    result = run("validate", "-", stdin=Path(HA).read_text())
    assert result.returncode == 0 and result.stdout.startswith("-: ok (prod")


def test_help_documents_exit_codes_and_debug() -> None:
    result = run("--help")
    assert "exit status" in result.stdout and "IMAGEGEN_DEBUG" in result.stdout
    for command in ("init", "explain", "diff", "completion", "schema"):
        assert command in result.stdout
    assert "standard input" in " ".join(run("validate", "--help").stdout.split())


def test_token_rotate_defaults_state_from_plan(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert run("render", KUBE_VIP, "--out", str(tmp_path / "out"), "--quiet", env=env).returncode == 0
    result = run("token", "rotate", KUBE_VIP, env=env)
    assert result.returncode == 0 and str(tmp_path / "xdg" / "imagegen" / "edge") in result.stdout
    result = run("token", "rotate")
    assert result.returncode == 2 and result.stderr.startswith("imagegen: token rotate:")


def test_bash_completion_sources() -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = run("completion", "bash").stdout
    probe = (script + "\ncomplete -p imagegen\n"
             "COMP_WORDS=(imagegen ren); COMP_CWORD=1; _imagegen; echo \"${COMPREPLY[*]}\"\n"
             "COMP_WORDS=(imagegen render x --o); COMP_CWORD=3; _imagegen; echo \"${COMPREPLY[*]}\"\n"
             "COMP_WORDS=(imagegen token ''); COMP_CWORD=2; _imagegen; echo \"${COMPREPLY[*]}\"\n")
    result = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines[0].startswith("complete -o filenames -F _imagegen imagegen"), result
    assert lines[1] == "render" and "--out" in lines[2].split() and sorted(lines[3].split()) == ["apply", "rotate"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_completions(shell: str) -> None:
    result = run("completion", shell)
    assert result.returncode == 0 and "imagegen" in result.stdout and "render" in result.stdout


def test_progress_tty_is_one_updating_line() -> None:
    stream = io.StringIO()
    ticks = iter(range(1000))
    bar = Progress(300, stream, tty=True, clock=lambda: next(ticks) / 100)
    for i in range(1, 301):
        bar.update(f"node-{i}", i)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 300
    assert "[300/300] node-300" in text and "nodes/s" in text and "s left" in text


def test_progress_plain_lines_are_few() -> None:
    stream = io.StringIO()
    bar = Progress(300, stream, tty=False)
    for i in range(1, 301):
        bar.update(f"node-{i}", i)
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= 11 and lines[-1].startswith("rendered 300/300 nodes")


def test_broken_state_file_is_exit_2_one_line(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    assert run("render", KUBE_VIP, "--out", str(out), "--state", str(state), "--quiet").returncode == 0
    victim = next(p for p in sorted(state.rglob("*")) if p.is_file() and p.name != "state.json")
    victim.unlink()
    result = run("render", KUBE_VIP, "--out", str(out), "--state", str(state))
    assert result.returncode == 2 and result.stderr.startswith("imagegen: --state ")
    assert "Errno" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_diff_refuses_what_render_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("keep")
    assert main(["diff", KUBE_VIP, "--out", str(foreign), "--state", str(tmp_path / "s")]) == 2
    assert "not an imagegen output" in capsys.readouterr().err
    assert main(["diff", KUBE_VIP, "--out", str(tmp_path / "o"), "--state", str(tmp_path / "o" / "s")]) == 2
    assert not (tmp_path / "s").exists() and not (tmp_path / "o").exists()


def test_version_table_and_version_pairs_cover_the_same_minors() -> None:
    from imagegen.compat import version_pairs

    pairs = set(version_pairs()["containerd"]["recommended"])
    assert {f"1.{m.minor}" for m in version_table().minors} == pairs
