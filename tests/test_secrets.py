"""Secrets go only to the nodes that need them, and only into 0600 files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from imagegen.cli import main

from .conftest import Rendered, plan_ids


def _node_bytes(r: Rendered, node: str) -> bytes:
    """Everything a node receives: its raw output files and seed ISO, and the files cloud-init writes from them
    (PEM blocks are indented inside user-data, so they are searched decoded too)."""
    raw = b"".join(a.data for p, a in r.artifacts.items()
                   if p.startswith(f"nodes/{node}/") or p == f"seeds/{node}.iso")
    written = "".join(f["content"] for f in r.user_data(node)["write_files"]).encode()
    return raw + written


@pytest.mark.parametrize("plan_id", plan_ids())
def test_secret_placement(rendered: dict[str, Rendered], plan_id: str) -> None:
    r = rendered[plan_id]
    s = r.state
    ca_keys = [s.ca.key_pem, s.front_proxy_ca.key_pem, s.etcd_ca.key_pem, s.sa_key]
    token_secret = s.bootstrap_token.split(".")[1].encode()
    for node in r.plan.nodes:
        data = _node_bytes(r, node.name)
        has_ca_keys = [k in data for k in ca_keys]
        assert all(has_ca_keys) if node.role == "control-plane" else not any(has_ca_keys), node.name
        assert (token_secret in data) == node.is_kubernetes, node.name
        assert (s.certificate_key.encode() in data) == (node == r.plan.first_control_plane), node.name
        if s.vrrp_password:
            assert (f"auth_pass {s.vrrp_password}".encode() in data) == (node.role == "load-balancer"), node.name
        for pw in (s.harbor_admin_password, s.harbor_db_password):
            if pw:
                assert (pw.encode() in data) == (node.role == "registry"), node.name
        if s.registry_cert:
            assert (s.registry_cert.key_pem in data) == (node.role == "registry"), node.name
        assert s.admin.key_pem not in data, node.name
        if node.role == "worker":
            assert s.discovery_hash.encode() in data


@pytest.mark.parametrize("plan_id", plan_ids())
def test_secret_files_are_0600_on_the_node(rendered: dict[str, Rendered], plan_id: str) -> None:
    r = rendered[plan_id]
    secrets = [r.state.bootstrap_token, r.state.certificate_key, r.state.vrrp_password or "\0",
               r.state.harbor_db_password or "\0", "PRIVATE KEY"]
    for node in r.plan.nodes:
        for f in r.user_data(node.name)["write_files"]:
            if any(sec in f["content"] for sec in secrets):
                assert f["permissions"] == "0600", (node.name, f["path"])


def test_output_modes_and_no_secret_on_console(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import ROOT

    out, state = tmp_path / "out", tmp_path / "state"
    assert main(["render", str(ROOT / "examples" / "ha.yaml"), "--out", str(out), "--state", str(state)]) == 0
    printed = capsys.readouterr()
    token = (state / "bootstrap-token").read_text().strip()
    assert token.split(".")[1] not in printed.out + printed.err
    assert (state / "certificate-key").read_text().strip() not in printed.out + printed.err
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    for path, mode in modes.items():
        # guestinfo carries the user-data gzip+base64 encoded: as secret as the user-data.
        secret = path.endswith(("user-data", "user-data.gz", ".iso", "guestinfo.vmx", "govc-vm-change.sh")) \
            or path == "admin.conf"
        assert mode == (0o600 if secret else 0o644), (path, oct(mode))


@pytest.mark.parametrize("plan_id", plan_ids())
def test_every_secret_reaches_only_roles_whose_profile_names_its_group(rendered: dict[str, Rendered],
                                                                       plan_id: str) -> None:
    """Driven by imagegen.secretpolicy's tables: any value of a group on a node means its profile names the group."""
    from imagegen import secretpolicy
    from imagegen.profiles import load_profile

    r = rendered[plan_id]
    values: dict[secretpolicy.SecretGroup, list[bytes]] = {g: [] for g in secretpolicy.SecretGroup}
    for item in secretpolicy.STATE_ITEMS.values():
        data = item.read(r.state)
        if item.group is not None and data:
            values[item.group].append(data)
    for group, readers in secretpolicy.TEMPLATE_VALUES.items():
        values[group] += [v.encode() for read in readers.values() if (v := read(r.state))]
    for node in r.plan.nodes:
        data = _node_bytes(r, node.name)
        allowed = set(load_profile(node.role).secrets)
        for group, secrets in values.items():
            if any(s in data for s in secrets):
                assert group.value in allowed, (node.name, group.value)
