"""Rendered hosts.toml files read by containerd's own resolver (`config.ConfigureHosts`, the code CRI pulls use):
Debian's containerd 1.6 (bookworm), 1.7 (trixie) and 2.x (sid), unpacked by tools/install-test-deps.sh.

A throwaway containerd daemon (its own root, state and socket under /tmp, CRI disabled) serves `ctr images pull
--hosts-dir`, which resolves through the rendered certs.d. The mirrors are two local servers that log every request
and answer 404, so containerd tries each host in order and then the registry itself, an unused loopback port
(refused at once: no request leaves the machine). Checked: the order of the endpoints, `override_path` (Harbor's
`/v2/<project>` layout), `ca` (an HTTPS mirror whose certificate only the plan's CA file vouches for is reached;
without it, it is not) and `skip_verify`."""

from __future__ import annotations

import copy
import datetime
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagegen.plan import parse_plan
from imagegen.render import render_cluster
from imagegen.state import ensure_state
from tests.conftest import CACHE, ROOT, Rendered

SUITES = ("bookworm", "trixie", "sid")  # containerd 1.6, 1.7, 2.x
CERTS_D = "/etc/containerd/certs.d"
DAEMON_CONFIG = """version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
"""


def _binary(suite: str, name: str) -> Path:
    path = CACHE / "containerd" / suite / "root" / "usr" / "bin" / name
    if not path.exists():
        pytest.fail(f"containerd ({suite}) is not unpacked under {path.parent}: run `make deps`")
    return path


def _pki(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signs: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mirror test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mirror")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (tmp / "ca.pem", tmp / "server.pem", tmp / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Log(BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.requests.append(self.path.split("?")[0])
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


def _server(tls: tuple[Path, Path] | None) -> tuple[ThreadingHTTPServer, list[str]]:
    log: list[str] = []
    handler = type("Handler", (_Log,), {"requests": log})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, log


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base_plan = yaml.safe_load((ROOT / "examples" / "ha.yaml").read_text())
    tmp = tmp_path_factory.mktemp("hosts")
    ca, cert, key = _pki(tmp)
    https, https_log = _server((cert, key))
    http, http_log = _server(None)
    a, b = f"https://127.0.0.1:{https.server_port}", f"http://127.0.0.1:{http.server_port}"
    data = copy.deepcopy(base_plan)
    data["cluster"]["mirrors"] = {
        # Registries on loopback ports nothing listens on: containerd's last try is refused at once.
        "127.0.0.1:1": {"endpoints": [a, f"{b}/v2/proxy"], "ca_file": str(ca)},
        "127.0.0.2:1": {"endpoints": [a], "skip_verify": True},
        "127.0.0.3:1": {"endpoints": [a]},
    }
    plan = parse_plan(data)
    state = ensure_state(tmp / "state", plan)
    r = Rendered(plan, state, render_cluster(plan, state))
    certs = tmp / "certs.d"
    for path, entry in r.files("worker-1").items():
        if path.startswith(CERTS_D + "/"):
            target = certs / path[len(CERTS_D) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            # `ca` names the node's /etc/containerd/certs.d: re-rooted at this test's directory.
            target.write_text(entry["content"].replace(CERTS_D, str(certs)))
    yield {"certs": certs, "https_log": https_log, "http_log": http_log}
    https.shutdown()
    http.shutdown()


@pytest.fixture(params=SUITES)
def daemon(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(suite, socket) of a containerd daemon of its own, stopped (by its pid) afterwards."""
    suite = request.param
    binary = _binary(suite, "containerd")
    base = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))  # a short path: sockets hold 108 bytes
    (base / "config.toml").write_text(DAEMON_CONFIG)
    sock = str(base / "c.sock")
    log = open(base / "daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["nice", "-n", "19", str(binary), "--config", str(base / "config.toml"),
                             "--root", str(base / "root"), "--state", str(base / "state"), "--address", sock],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd ({suite}) did not start: {(base / 'daemon.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield suite, sock
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _pull(suite: str, sock: str, certs: Path, image: str) -> str:
    result = subprocess.run(["nice", "-n", "19", str(_binary(suite, "ctr")), "--address", sock, "images", "pull",
                             "--hosts-dir", str(certs), image], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0  # every host answers 404 or refuses: nothing is pulled
    return result.stdout + result.stderr


def test_containerd_resolves_through_rendered_hosts(setup: dict, daemon: tuple[str, str]) -> None:
    suite, sock = daemon
    https_log, http_log = setup["https_log"], setup["http_log"]
    https_log.clear()
    http_log.clear()
    output = _pull(suite, sock, setup["certs"], f"127.0.0.1:1/{suite}/ca/busybox:latest")
    manifest = f"/{suite}/ca/busybox/manifests/latest"
    # ca: the HTTPS mirror is trusted through mirror-ca.crt; then override_path keeps /v2/proxy as the API root.
    assert f"/v2{manifest}" in https_log, (https_log, output)
    assert f"/v2/proxy{manifest}" in http_log, (http_log, output)
    assert "127.0.0.1:1" in output  # the registry itself, last (refused)

    _pull(suite, sock, setup["certs"], f"127.0.0.2:1/{suite}/skip/busybox:latest")
    assert f"/v2/{suite}/skip/busybox/manifests/latest" in https_log, https_log  # skip_verify

    output = _pull(suite, sock, setup["certs"], f"127.0.0.3:1/{suite}/none/busybox:latest")
    assert not [p for p in https_log if "/none/" in p], https_log  # no CA, no skip_verify: TLS refused
    assert "certificate" in output or "x509" in output, output
