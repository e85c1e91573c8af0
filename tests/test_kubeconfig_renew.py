"""`imagegen kubeconfig renew` and `imagegen certs --out`, on real PKI: a state and output made by a render."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from imagegen import pki
from imagegen.cli import main
from imagegen.kubeconfig import client_certificate
from imagegen.plan import load_plan

from .conftest import ROOT

PLAN = ROOT / "examples" / "ha.yaml"


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[Path, Path]:
    out, state = tmp_path / "out", tmp_path / "state"
    assert main(["render", str(PLAN), "--out", str(out), "--state", str(state), "--quiet"]) == 0
    return out, state


def _renew(out: Path, state: Path) -> int:
    return main(["kubeconfig", "renew", str(PLAN), "--state", str(state), "--out", str(out)])


def test_renew_issues_a_new_certificate_everywhere(rendered: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, state = rendered
    old = client_certificate((out / "admin.conf").read_bytes())
    capsys.readouterr()
    assert _renew(out, state) == 0
    printed = capsys.readouterr()
    conf = yaml.safe_load((out / "admin.conf").read_bytes())
    new = client_certificate((out / "admin.conf").read_bytes())
    assert new.serial_number != old.serial_number
    assert stat.S_IMODE((out / "admin.conf").stat().st_mode) == 0o600
    # Signed by the state's CA, in the group the plan's version gives the operator, the key beside it.
    ca = x509.load_pem_x509_certificate((state / "pki" / "ca.crt").read_bytes())
    new.verify_directly_issued_by(ca)
    group = load_plan(PLAN).cluster.rules.admin_group
    assert new.subject.rfc4514_string() == f"CN=kubernetes-admin,O={group}"
    key_pem = base64.b64decode(conf["users"][0]["user"]["client-key-data"])
    issuer = pki.KeyPair((state / "pki" / "ca.crt").read_bytes(), (state / "pki" / "ca.key").read_bytes())
    pki.verify_pair(pki.KeyPair(new.public_bytes(pki.serialization.Encoding.PEM), key_pem), ca=False, issuer=issuer)
    # The state holds the same pair, so the next render writes the same admin.conf.
    assert (state / "pki" / "admin.key").read_bytes() == key_pem
    assert x509.load_pem_x509_certificate((state / "pki" / "admin.crt").read_bytes()) == new
    manifest = json.loads((out / "manifest.json").read_bytes())
    assert manifest["files"]["admin.conf"] == hashlib.sha256((out / "admin.conf").read_bytes()).hexdigest()
    assert main(["diff", str(PLAN), "--out", str(out), "--state", str(state), "--exit-code"]) == 0
    before = (out / "admin.conf").read_bytes(), (out / "manifest.json").read_bytes()
    assert main(["render", str(PLAN), "--out", str(out), "--state", str(state), "--quiet"]) == 0
    assert ((out / "admin.conf").read_bytes(), (out / "manifest.json").read_bytes()) == before
    # No secret on the console, nothing left beside the output or in the state.
    for secret in (key_pem.decode().splitlines()[1], conf["users"][0]["user"]["client-key-data"][40:100]):
        assert secret not in printed.out + printed.err
    assert sorted(p.name for p in out.parent.iterdir()) == ["out", "state"]
    assert not [p for p in state.rglob("*") if "imagegen-tmp" in p.name]


def test_renew_replaces_an_expired_certificate(rendered: tuple[Path, Path]) -> None:
    out, state = rendered
    ca = pki.KeyPair((state / "pki" / "ca.crt").read_bytes(), (state / "pki" / "ca.key").read_bytes())
    expired = pki.new_leaf(ca, "kubernetes-admin", org="kubeadm:cluster-admins", client=True,
                           now=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
    (state / "pki" / "admin.crt").write_bytes(expired.cert_pem)
    (state / "pki" / "admin.key").write_bytes(expired.key_pem)
    assert main(["certs", str(PLAN), "--state", str(state)]) == 2  # the state refuses an expired pair
    assert _renew(out, state) == 0
    assert client_certificate((out / "admin.conf").read_bytes()).not_valid_after_utc > dt.datetime.now(dt.UTC)
    assert main(["certs", str(PLAN), "--state", str(state)]) == 0


def test_a_failure_keeps_the_old_pair(rendered: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    out, state = rendered
    files = [state / "pki" / "admin.crt", state / "pki" / "admin.key", out / "admin.conf", out / "manifest.json"]
    before = [p.read_bytes() for p in files]

    def broken(*args: object, **kw: object) -> pki.KeyPair:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pki, "new_leaf", broken)
    assert _renew(out, state) == 1
    assert [p.read_bytes() for p in files] == before
    assert not [p for p in state.rglob("*") if "imagegen-tmp" in p.name]


def test_renew_needs_a_render_output_and_a_state(tmp_path: Path, rendered: tuple[Path, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out, state = rendered
    assert _renew(tmp_path / "nothing", state) == 2
    assert "render first" in capsys.readouterr().err
    assert _renew(out, tmp_path / "nostate") == 2
    assert "no imagegen state" in capsys.readouterr().err
    (out / "stray.txt").write_text("mine")
    assert _renew(out, state) == 2  # not an output imagegen may write into
    assert "did not write" in capsys.readouterr().err


def test_certs_reports_the_outputs_admin_conf(rendered: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, state = rendered
    capsys.readouterr()
    assert main(["certs", str(PLAN), "--state", str(state), "--out", str(out), "-o", "json"]) == 0
    items = {c["certificate"]: c for c in json.loads(capsys.readouterr().out)}
    assert items["admin.conf in --out"]["subject"].startswith("CN=kubernetes-admin")
    assert 360 <= items["admin.conf in --out"]["days_left"] <= 365
    assert main(["certs", str(PLAN), "--state", str(state), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "admin.conf in --out" in text and "imagegen kubeconfig renew" in text
    assert "PRIVATE KEY" not in text and "client-key-data" not in text
    (out / "admin.conf").write_text("apiVersion: v1\nusers: []\n")
    assert main(["certs", str(PLAN), "--state", str(state), "--out", str(out)]) == 2
    assert "no readable client-certificate-data" in capsys.readouterr().err
