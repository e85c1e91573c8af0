"""`imagegen token apply`: the Secret kubeadm itself writes for a bootstrap token, handed to kubectl on stdin.
kubectl is a recording stand-in here (no cluster in `make test`); the real API server is in `make cluster-test`."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
import yaml

from imagegen.cli import main
from imagegen.errors import UsageError
from imagegen.tokens import NODE_TOKEN_GROUP, token_secret, ttl_seconds

from .conftest import ROOT

TOKEN = "abcdef.0123456789abcdef"


def test_secret_has_kubeadms_shape() -> None:
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    s = token_secret(TOKEN, "24h", now)
    assert s["type"] == "bootstrap.kubernetes.io/token"
    assert s["metadata"] == {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    d = s["stringData"]
    assert (d["token-id"], d["token-secret"]) == ("abcdef", "0123456789abcdef")
    assert d["usage-bootstrap-authentication"] == d["usage-bootstrap-signing"] == "true"
    assert d["auth-extra-groups"] == NODE_TOKEN_GROUP
    assert d["expiration"] == "2026-11-26T12:00:00Z"
    assert "expiration" not in token_secret(TOKEN, "0", now)["stringData"]


@pytest.mark.parametrize("ttl,seconds", [("24h", 86400), ("1h30m", 5400), ("90s", 90), ("0", 0)])
def test_ttl(ttl: str, seconds: int) -> None:
    assert ttl_seconds(ttl) == seconds


@pytest.mark.parametrize("ttl", ["", "1d", "24h\n", "-1h"])
def test_bad_ttl(ttl: str) -> None:
    with pytest.raises(UsageError):
        ttl_seconds(ttl)


def _fake_kubectl(tmp_path: Path, rc: int = 0) -> tuple[Path, Path]:
    record = tmp_path / "kubectl-calls.json"
    tool = tmp_path / "kubectl"
    tool.write_text(f"""#!{sys.executable}
import json, sys
stdin = sys.stdin.read()
with open({str(record)!r}, "w") as f:
    json.dump({{"argv": sys.argv[1:], "stdin": stdin}}, f)
if {rc}:
    sys.stderr.write("error: the server rejected " + stdin[:400])
sys.exit({rc})
""")
    tool.chmod(0o755)
    return tool, record


def test_cli_applies_the_states_token_on_stdin_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan, out, state = ROOT / "examples" / "ha.yaml", tmp_path / "out", tmp_path / "state"
    assert main(["render", str(plan), "--out", str(out), "--state", str(state), "--quiet"]) == 0
    tool, record = _fake_kubectl(tmp_path)
    assert main(["token", "apply", str(plan), "--state", str(state), "--kubeconfig", str(out / "admin.conf"),
                 "--kubectl", str(tool), "--ttl", "2h"]) == 0
    token = (state / "bootstrap-token").read_text().strip()
    call = json.loads(record.read_text())
    assert call["argv"] == ["--kubeconfig", str(out / "admin.conf"), "apply", "-f", "-"]
    secret = yaml.safe_load(call["stdin"])
    assert secret["stringData"]["token-secret"] == token.split(".")[1]
    printed = capsys.readouterr()
    assert token.split(".")[1] not in printed.out + printed.err and token.split(".")[0] in printed.out


def test_cli_failure_masks_the_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan, out, state = ROOT / "examples" / "ha.yaml", tmp_path / "out", tmp_path / "state"
    assert main(["render", str(plan), "--out", str(out), "--state", str(state), "--quiet"]) == 0
    tool, _ = _fake_kubectl(tmp_path, rc=1)
    assert main(["token", "apply", str(plan), "--state", str(state), "--kubeconfig", str(out / "admin.conf"),
                 "--kubectl", str(tool)]) == 1
    err = capsys.readouterr().err
    token = (state / "bootstrap-token").read_text().strip()
    assert "kubectl apply of the bootstrap token failed" in err and token.split(".")[1] not in err


def test_cli_missing_kubeconfig_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan, out, state = ROOT / "examples" / "ha.yaml", tmp_path / "out", tmp_path / "state"
    assert main(["render", str(plan), "--out", str(out), "--state", str(state), "--quiet"]) == 0
    assert main(["token", "apply", str(plan), "--state", str(state), "--kubeconfig", str(tmp_path / "nope")]) == 2
    assert "not a file" in capsys.readouterr().err


def test_apply_retries_a_busy_api_server_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cluster-test: `token apply` met "Unable to connect to the server: context deadline exceeded" while a control
    plane under load answered late. Such errors get a few tries with backoff; a rejection is reported at once."""
    from imagegen import tokens

    monkeypatch.setattr(tokens, "sleep", lambda _s: None)
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text("apiVersion: v1\n")
    count = tmp_path / "count"
    tool = tmp_path / "kubectl"
    tool.write_text(f"""#!/bin/bash
cat >/dev/null
n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n >{count}
[ $n -ge 3 ] && exit 0
echo "Unable to connect to the server: context deadline exceeded (Client.Timeout exceeded)" >&2; exit 1
""")
    tool.chmod(0o755)
    token = "abcdef.0123456789abcdef"
    assert tokens.apply_token(token, "24h", kubeconfig, kubectl=str(tool)) == "abcdef"
    assert count.read_text().strip() == "3"
    count.unlink()
    tool.write_text(f"#!/bin/bash\ncat >/dev/null\necho 1 >>{count}\necho 'error: forbidden' >&2\nexit 1\n")
    with pytest.raises(RuntimeError, match="forbidden"):
        tokens.apply_token(token, "24h", kubeconfig, kubectl=str(tool))
    assert count.read_text().split() == ["1"]
