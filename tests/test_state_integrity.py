"""The state directory is verified, locked and bound to one cluster: tampering, corruption, missing halves,
concurrent renders, identity changes, unknown formats and loose permissions (issue 10, "State integrity")."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from imagegen import pki
from imagegen.cli import main
from imagegen.errors import UsageError
from imagegen.plan import load_plan, parse_plan
from imagegen.state import STATE_FORMAT, ensure_state, inspect_state, rotate_token

from .conftest import ROOT

HA = ROOT / "examples" / "ha.yaml"


def problems(stderr: str) -> list[str]:
    """stderr without the plan's advisory warnings (version pairs): the lines a refusal must keep to one."""
    return [line for line in stderr.splitlines() if not line.startswith("imagegen: warning: cluster.")]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete state for the HA example (every item: LB password, registry PKI), made once."""
    path = tmp_path_factory.mktemp("template") / "state"
    ensure_state(path, load_plan(HA))
    return path


@pytest.fixture
def plan():
    return load_plan(HA)


@pytest.fixture
def sdir(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "state"
    shutil.copytree(template, path)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def other_ca() -> pki.KeyPair:
    return pki.new_ca("kubernetes")


# --- tampering and corruption: refused with the file named, nothing changed -------------------------------------

def _garbage(path: str) -> Callable[[Path], None]:
    pem = b"-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n"
    return lambda s: (s / path).write_bytes(pem)


def _foreign_key(stem: str) -> Callable[[Path], None]:
    return lambda s: (s / f"pki/{stem}.key").write_bytes(other_ca().key_pem)


def _admin_from_other_ca(s: Path) -> None:
    leaf = pki.new_leaf(other_ca(), "kubernetes-admin", org="system:masters", client=True)
    (s / "pki/admin.crt").write_bytes(leaf.cert_pem)
    (s / "pki/admin.key").write_bytes(leaf.key_pem)


def _admin_expired(s: Path) -> None:
    ca = pki.KeyPair((s / "pki/ca.crt").read_bytes(), (s / "pki/ca.key").read_bytes())
    leaf = pki.new_leaf(ca, "kubernetes-admin", org="system:masters", client=True,
                        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
    (s / "pki/admin.crt").write_bytes(leaf.cert_pem)
    (s / "pki/admin.key").write_bytes(leaf.key_pem)


def _registry_from_other_ca(s: Path) -> None:
    leaf = pki.new_leaf(other_ca(), "harbor.example.internal", server=True, dns_names=("harbor.example.internal",),
                        ips=("192.168.10.30",))
    (s / "pki/registry.crt").write_bytes(leaf.cert_pem)
    (s / "pki/registry.key").write_bytes(leaf.key_pem)


def _leaf_as_ca(s: Path) -> None:
    ca = pki.KeyPair((s / "pki/ca.crt").read_bytes(), (s / "pki/ca.key").read_bytes())
    leaf = pki.new_leaf(ca, "front-proxy-ca", client=True)
    (s / "pki/front-proxy-ca.crt").write_bytes(leaf.cert_pem)
    (s / "pki/front-proxy-ca.key").write_bytes(leaf.key_pem)


def _other_sa_pub(s: Path) -> None:
    (s / "pki/sa.pub").write_bytes(pki.new_service_account_keys()[1])


def _write(path: str, data: bytes) -> Callable[[Path], None]:
    return lambda s: (s / path).write_bytes(data)


def _delete(*paths: str) -> Callable[[Path], None]:
    return lambda s: [(s / p).unlink() for p in paths]


TAMPERED = {
    "garbage-ca-key": (_garbage("pki/ca.key"), "pki/ca.key is not a PEM private key"),
    "garbage-sa-key": (_garbage("pki/sa.key"), "pki/sa.key is not a PEM private key"),
    "garbage-etcd-ca-crt": (_write("pki/etcd/ca.crt", b"garbage\n"), "pki/etcd/ca.crt is not a PEM certificate"),
    "truncated-ca-crt": (lambda s: (s / "pki/ca.crt").write_bytes((s / "pki/ca.crt").read_bytes()[:300]),
                         "pki/ca.crt is not a PEM certificate"),
    "ca-key-of-another-ca": (_foreign_key("ca"), "pki/ca.key does not belong to the certificate"),
    "etcd-key-of-another-ca": (_foreign_key("etcd/ca"), "pki/etcd/ca.key does not belong"),
    "registry-ca-key-of-another-ca": (_foreign_key("registry-ca"), "pki/registry-ca.key does not belong"),
    "admin-key-mismatch": (lambda s: (s / "pki/admin.key").write_bytes(other_ca().key_pem),
                           "pki/admin.key does not belong"),
    "admin-from-another-ca": (_admin_from_other_ca, "pki/admin.crt is not signed by its CA"),
    "admin-expired": (_admin_expired, "pki/admin.crt expired on"),
    "registry-from-another-ca": (_registry_from_other_ca, "pki/registry.crt is not signed by its CA"),
    "front-proxy-ca-not-a-ca": (_leaf_as_ca, "pki/front-proxy-ca.crt is not a CA certificate"),
    "sa-pub-of-another-key": (_other_sa_pub, "pki/sa.pub is not the public half of sa.key"),
    "truncated-token": (_write("bootstrap-token", b"abcdef.0123456789\n"), "bootstrap-token is not a kubeadm"),
    "token-upper-case": (_write("bootstrap-token", b"ABCDEF.0123456789abcdef\n"), "bootstrap-token is not"),
    "token-extra-line": (_write("bootstrap-token", b"abcdef.0123456789abcdef\n\n"), "bootstrap-token is not"),
    "token-not-ascii": (_write("bootstrap-token", b"abcdef.0123456789abcd\xe9\n"), "bootstrap-token is not ASCII"),
    "short-certificate-key": (_write("certificate-key", b"abc\n"), "certificate-key is not 64 lower-case hex"),
    "vrrp-password-injection": (_write("vrrp-password", b"ab\"}\nx\n"), "vrrp-password is not 8 letters"),
    "harbor-password-quote": (_write("harbor-admin-password", b"Abc123'; rm -rf /\n"),
                              "harbor-admin-password is not"),
    "bad-json": (_write("state.json", b"{not json"), "state.json is not valid JSON"),
    "json-not-object": (_write("state.json", b"[1, 2]\n"), "state.json is not a JSON object"),
    "unknown-format": (_write("state.json", b'{"format": 99, "cluster": "prod"}\n'), "format 99"),
    "format-as-string": (_write("state.json", b'{"format": "2", "cluster": "prod"}\n'), "format '2'"),
    "corrupt-identity": (lambda s: (s / "state.json").write_text(json.dumps({"format": 2, "cluster": "prod"})),
                         "malformed cluster_id or identity"),
    "missing-ca-key": (_delete("pki/ca.key"), "pki/ca.key is missing while pki/ca.crt exists"),
    "missing-ca-crt": (_delete("pki/ca.crt"), "pki/ca.crt is missing while pki/ca.key exists"),
    "missing-ca-pair": (_delete("pki/ca.crt", "pki/ca.key"), "pki/ca.crt and pki/ca.key are missing"),
    "missing-etcd-ca-pair": (_delete("pki/etcd/ca.crt", "pki/etcd/ca.key"), "pki/etcd/ca.crt and"),
    "missing-admin-key": (_delete("pki/admin.key"), "pki/admin.key is missing while pki/admin.crt exists"),
    "missing-sa-pub": (_delete("pki/sa.pub"), "pki/sa.pub is missing"),
    "missing-token": (_delete("bootstrap-token"), "bootstrap-token is missing; run 'imagegen token rotate"),
    "missing-certificate-key": (_delete("certificate-key"), "certificate-key is missing"),
    "registry-without-its-ca": (_delete("pki/registry-ca.crt", "pki/registry-ca.key"),
                                "pki/registry.crt exists without its CA"),
    "symlinked-key": (lambda s: ((s / "pki/ca.key").unlink(), (s / "pki/ca.key").symlink_to(s / "pki/sa.key")),
                      "pki/ca.key is a symbolic link"),
    "huge-token": (_write("bootstrap-token", b"a" * (2 << 20)), "bootstrap-token is 2097152 bytes"),
    "pki-is-a-file": (lambda s: (shutil.rmtree(s / "pki"), (s / "pki").write_text("x")), "pki/ca.crt cannot be read"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_state_is_refused_and_left_alone(case: str, sdir: Path, plan) -> None:
    tamper, message = TAMPERED[case]
    tamper(sdir)
    before = snapshot(sdir)
    with pytest.raises(UsageError) as info:
        ensure_state(sdir, plan)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text and text.startswith(f"--state {sdir}: ")
    assert snapshot(sdir) == before  # nothing regenerated, not even the missing half


def test_refusal_never_shows_a_secret(sdir: Path, plan) -> None:
    (sdir / "bootstrap-token").write_text("abcdef.0123456789abcdeX\n")
    with pytest.raises(UsageError) as info:
        ensure_state(sdir, plan)
    assert "0123456789abcde" not in str(info.value)
    rotate_token(sdir)
    (sdir / "vrrp-password").write_text("Secr3t!x\n")
    with pytest.raises(UsageError) as info:
        ensure_state(sdir, plan)
    assert "Secr3t" not in str(info.value)


def test_cli_corrupt_state_exit_2_one_line(sdir: Path, tmp_path: Path) -> None:
    (sdir / "pki" / "ca.crt").write_text("garbage")
    result = subprocess.run([sys.executable, "-m", "imagegen", "render", str(HA), "--out", str(tmp_path / "out"),
                             "--state", str(sdir)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert len(problems(result.stderr)) == 1 and "pki/ca.crt" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_cli_missing_state_file_exit_2_not_errno(sdir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (sdir / "pki" / "front-proxy-ca.key").unlink()
    assert main(["render", str(HA), "--out", str(tmp_path / "out"), "--state", str(sdir)]) == 2
    err = capsys.readouterr().err
    assert "pki/front-proxy-ca.key is missing" in err and "Errno" not in err


# --- what may be made in an existing state ----------------------------------------------------------------------

def test_admin_pair_deleted_is_reissued_by_the_same_ca(sdir: Path, plan) -> None:
    ca_before = (sdir / "pki" / "ca.crt").read_bytes()
    (sdir / "pki" / "admin.crt").unlink()
    (sdir / "pki" / "admin.key").unlink()
    state = ensure_state(sdir, plan)
    assert state.ca.cert_pem == ca_before
    state.admin.cert.verify_directly_issued_by(state.ca.cert)
    assert f"O={plan.cluster.rules.admin_group}" in state.admin.cert.subject.rfc4514_string()


def test_expired_admin_fix_in_message_works(sdir: Path, plan) -> None:
    _admin_expired(sdir)
    with pytest.raises(UsageError, match="delete pki/admin.crt and pki/admin.key and render again"):
        ensure_state(sdir, plan)
    (sdir / "pki" / "admin.crt").unlink()
    (sdir / "pki" / "admin.key").unlink()
    assert ensure_state(sdir, plan).admin.cert.not_valid_after_utc > dt.datetime.now(dt.UTC)


def test_registry_pki_made_when_plan_gains_a_registry(tmp_path: Path, base_plan: dict) -> None:
    base_plan["nodes"] = [n for n in base_plan["nodes"] if n["role"] != "registry"]
    base_plan.pop("registry", None)
    base_plan["cluster"]["registry_mirrors"] = []
    no_registry = parse_plan(base_plan)
    sdir = tmp_path / "s"
    first = ensure_state(sdir, no_registry)
    assert first.registry_ca is None and not (sdir / "pki" / "registry-ca.crt").exists()
    second = ensure_state(sdir, load_plan(HA))
    assert second.ca == first.ca and second.registry_ca is not None and second.registry_cert is not None
    second.registry_cert.cert.verify_directly_issued_by(second.registry_ca.cert)


def test_missing_token_is_repaired_by_token_rotate(sdir: Path, plan) -> None:
    (sdir / "bootstrap-token").write_text("broken\n")
    ca_before = (sdir / "pki" / "ca.key").read_bytes()
    rotate_token(sdir)
    state = ensure_state(sdir, plan)
    assert (sdir / "pki" / "ca.key").read_bytes() == ca_before and len(state.bootstrap_token) == 23


def test_token_rotate_refuses_a_corrupt_state(sdir: Path) -> None:
    (sdir / "pki" / "sa.key").write_text("garbage")
    token_before = (sdir / "bootstrap-token").read_bytes()
    with pytest.raises(UsageError, match="pki/sa.key"):
        rotate_token(sdir)
    assert (sdir / "bootstrap-token").read_bytes() == token_before


def test_token_rotate_on_a_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["token", "rotate", "--state", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


# --- locking and atomic creation --------------------------------------------------------------------------------

_CREATE = textwrap.dedent("""
    import hashlib, sys
    from pathlib import Path
    from imagegen.plan import load_plan
    from imagegen.state import ensure_state
    state = ensure_state(Path(sys.argv[1]), load_plan(sys.argv[2]))
    state.admin.cert.verify_directly_issued_by(state.ca.cert)
    print(hashlib.sha256(state.ca.cert_pem + state.ca.key_pem + state.bootstrap_token.encode()).hexdigest())
""")


def test_concurrent_renders_on_an_empty_state_make_one_pki(tmp_path: Path, plan) -> None:
    for trial in range(3):
        sdir = tmp_path / f"s{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", _CREATE, str(sdir), str(HA)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(3)]
        results = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
        assert len({out for out, _ in results}) == 1, f"trial {trial}: different PKIs"
        inspect_state(sdir, plan)  # the stored state verifies as a whole
        assert not [p for p in sdir.rglob("*") if "imagegen-" in p.name]


_REUSE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from imagegen.plan import load_plan
    from imagegen.state import ensure_state, rotate_token
    plan = load_plan(sys.argv[2])
    for i in range(4):
        ensure_state(Path(sys.argv[1]), plan)
        if i % 2 == 0:
            rotate_token(Path(sys.argv[1]))
""")


def test_concurrent_renders_on_an_existing_state_never_collide(sdir: Path, plan) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _REUSE, str(sdir), str(HA)], stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for _ in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    ensure_state(sdir, plan)


def test_interrupted_creation_leaves_nothing_half_made(tmp_path: Path, plan, monkeypatch: pytest.MonkeyPatch) -> None:
    sdir = tmp_path / "s"

    def boom() -> tuple[bytes, bytes]:
        raise KeyboardInterrupt

    monkeypatch.setattr(pki, "new_service_account_keys", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_state(sdir, plan)
    monkeypatch.undo()
    assert [p.name for p in sdir.iterdir()] == ["state.lock"]
    ensure_state(sdir, plan)  # a fresh state again: made whole


def test_leftover_temporaries_are_removed(sdir: Path, plan) -> None:
    (sdir / ".bootstrap-token.k2j3h4.imagegen-tmp").write_text("half")
    (sdir / "pki" / ".ca.key.abc.imagegen-tmp").write_text("half")
    (sdir / ".imagegen-new-xyz" / "pki").mkdir(parents=True)
    ensure_state(sdir, plan)
    assert not [p for p in sdir.rglob("*") if "imagegen-" in p.name]


def test_fresh_state_with_leftovers_only_is_created(tmp_path: Path, plan) -> None:
    sdir = tmp_path / "s"
    (sdir / ".imagegen-new-abc" / "pki").mkdir(parents=True)
    (sdir / "state.lock").touch()
    state = ensure_state(sdir, plan)
    assert state.cluster_id and not (sdir / ".imagegen-new-abc").exists()


# --- identity ------------------------------------------------------------------------------------------------

def _variant(base_plan: dict, change: Callable[[dict], None]):
    change(base_plan)
    return parse_plan(base_plan)


IDENTITY_CHANGES = {
    "endpoint-vip": (lambda p: p["endpoint"].__setitem__("vip", "192.168.10.99"), "endpoint address"),
    "endpoint-port": (lambda p: p["endpoint"].__setitem__("port", 7443), "endpoint port"),
    "endpoint-name": (lambda p: p["endpoint"].__setitem__("name", "api.other.internal"), "endpoint name"),
    "network-cidr": (lambda p: p["network"].__setitem__("cidr", "192.168.8.0/21"), "network cidr"),
}


@pytest.mark.parametrize("case", sorted(IDENTITY_CHANGES))
def test_changed_identity_needs_the_flag(case: str, sdir: Path, base_plan: dict) -> None:
    change, label = IDENTITY_CHANGES[case]
    changed = _variant(base_plan, change)
    before = snapshot(sdir)
    with pytest.raises(UsageError, match=f"another identity \\({label} .*--accept-changed-identity"):
        ensure_state(sdir, changed)
    assert snapshot(sdir) == before
    notes: list[str] = []
    old_id = json.loads((sdir / "state.json").read_text())["cluster_id"]
    state = ensure_state(sdir, changed, accept_changed_identity=True, notify=notes.append)
    assert state.cluster_id == old_id and any(label in n for n in notes)
    ensure_state(sdir, changed)  # recorded: no flag needed any more


def test_changed_identity_cli_flag(sdir: Path, tmp_path: Path, base_plan: dict,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    base_plan["endpoint"]["vip"] = "192.168.10.99"
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(base_plan))
    argv = ["render", str(moved), "--out", str(tmp_path / "out"), "--state", str(sdir), "--quiet"]
    assert main(argv) == 2
    assert "--accept-changed-identity" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main([*argv, "--accept-changed-identity"]) == 0
    assert json.loads((sdir / "state.json").read_text())["identity"]["endpoint_address"] == "192.168.10.99"


def test_adding_and_removing_nodes_is_no_identity_change(sdir: Path, base_plan: dict) -> None:
    fewer = _variant(base_plan, lambda p: p.__setitem__("nodes", [n for n in p["nodes"] if n["name"] != "worker-2"]))
    ensure_state(sdir, fewer)
    more = yaml.safe_load(HA.read_text())
    more["nodes"].append({"name": "worker-3", "role": "worker", "ip": "192.168.10.23", "mac": "52:54:00:10:00:23"})
    ensure_state(sdir, parse_plan(more))


def test_state_records_identity_and_a_random_cluster_id(tmp_path: Path, plan) -> None:
    a, b = ensure_state(tmp_path / "a", plan), ensure_state(tmp_path / "b", plan)
    meta = json.loads((tmp_path / "a" / "state.json").read_text())
    assert meta["format"] == STATE_FORMAT and meta["cluster"] == "prod" and meta["cluster_id"] == a.cluster_id
    assert meta["identity"] == {"endpoint_name": "k8s-api.example.internal", "endpoint_address": "192.168.10.10",
                                "endpoint_port": 6443, "network": "192.168.10.0/24"}
    assert a.cluster_id != b.cluster_id and len(a.cluster_id) == 32


def test_format_1_state_is_upgraded(sdir: Path, plan) -> None:
    ca_before = (sdir / "pki" / "ca.key").read_bytes()
    (sdir / "state.json").write_text('{"cluster": "prod", "format": 1}\n')
    notes: list[str] = []
    state = ensure_state(sdir, plan, notify=notes.append)
    assert any("upgraded to format 2" in n for n in notes)
    assert json.loads((sdir / "state.json").read_text())["cluster_id"] == state.cluster_id
    assert (sdir / "pki" / "ca.key").read_bytes() == ca_before


def test_reuse_does_not_rewrite_state_json(sdir: Path, plan) -> None:
    before = (sdir / "state.json").stat()
    ensure_state(sdir, plan)
    after = (sdir / "state.json").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


# --- permissions -------------------------------------------------------------------------------------------------

def test_loose_permissions_are_tightened_with_a_warning(sdir: Path, plan) -> None:
    (sdir / "pki" / "ca.key").chmod(0o666)
    (sdir / "pki" / "etcd").chmod(0o755)
    (sdir / "bootstrap-token").chmod(0o644)
    notes: list[str] = []
    ensure_state(sdir, plan, notify=notes.append)
    assert len(notes) == 1 and "pki/ca.key" in notes[0] and "pki/etcd/" in notes[0] and "bootstrap-token" in notes[0]
    for path in [sdir, *sdir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {oct(mode)}"
    notes.clear()
    ensure_state(sdir, plan, notify=notes.append)
    assert notes == []


def test_state_dir_modes_under_umask_000(tmp_path: Path, plan) -> None:
    old = os.umask(0)
    try:
        ensure_state(tmp_path / "deep" / "s", plan)
    finally:
        os.umask(old)
    for path in [tmp_path / "deep", *(tmp_path / "deep").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {oct(mode)}"


@pytest.mark.parametrize("version,group", [("1.34.2", "kubeadm:cluster-admins"), ("1.29.0", "kubeadm:cluster-admins"),
                                           ("1.28.15", "system:masters")])
def test_admin_certificate_group_follows_the_version(tmp_path: Path, base_plan: dict, version: str,
                                                     group: str) -> None:
    from cryptography.x509.oid import NameOID

    from imagegen.plan import parse_plan
    from imagegen.state import ensure_state

    base_plan["cluster"]["kubernetes_version"] = version
    state = ensure_state(tmp_path / "state", parse_plan(base_plan))
    orgs = [a.value for a in state.admin.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == [group]
