"""`imagegen serve`: each node's data only to its own address, nothing outside the node data, an iPXE script per
MAC, refusal of a directory that is not an imagegen output, and many nodes at once. The plan's nodes live on
127.0.0.0/24 so that this machine's loopback can send from each node's own address."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from imagegen import serve
from imagegen.cli import main

from .conftest import ROOT

N_WORKERS = 40


def logged(lines: list[str], text: str, wait_s: float = 10) -> bool:
    """Whether a request-log line holds `text`, waiting a little: the handler thread logs after the response's last
    byte went out, so a client can hold the whole answer before the line exists (a CI run failed on exactly that)."""
    deadline = time.monotonic() + wait_s
    while not any(text in line for line in lines):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    plan = yaml.safe_load((ROOT / "examples" / "ha.yaml").read_text())
    plan["network"] = {"cidr": "127.0.0.0/24", "gateway": "127.0.0.1", "dns": ["127.0.0.1"]}
    plan["endpoint"]["vip"] = "127.0.0.10"
    plan["cluster"]["pod_cidr"] = "10.244.0.0/16"
    lbs = [n for n in plan["nodes"] if n["role"] == "load-balancer"]
    cps = [n for n in plan["nodes"] if n["role"] == "control-plane"]
    plan["registry"] = None
    plan["nodes"] = lbs + cps + [
        {"name": f"wk-{i}", "role": "worker", "ip": f"127.0.0.{100 + i}", "mac": f"52:54:00:00:01:{i:02x}"}
        for i in range(N_WORKERS)]
    for i, n in enumerate(lbs + cps):
        n["ip"] = f"127.0.0.{20 + i}"
    plan["cluster"]["registry_mirrors"] = []
    plan.pop("registry")
    path = root / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    assert main(["render", str(path), "--out", str(root / "out"), "--state", str(root / "state"), "--quiet"]) == 0
    return root / "out"


@pytest.fixture(scope="module")
def server(out: Path):
    lines: list[str] = []
    srv = serve.make_server(serve.load_output(out), ("127.0.0.1", 0), url="http://127.0.0.1:8080",
                            log=lines.append)
    serve.serve_in_thread(srv)
    yield srv, lines
    srv.shutdown()
    srv.server_close()


def _get(srv, path: str, source: str = "127.0.0.1") -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10, source_address=(source, 0))
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, resp.getheader("Content-Type") or ""


def test_node_gets_its_own_files(server, out: Path) -> None:
    srv, _ = server
    for f in serve.NODE_FILES:
        status, body, ctype = _get(srv, f"/nodes/cp-1/{f}", source="127.0.0.22")
        assert status == 200 and ctype.startswith("text/plain")
        expected = out / "nodes" / "cp-1" / f
        assert body == (expected.read_bytes() if expected.exists() else b"")
    status, body, _ = _get(srv, "/mac/52-54-00-10-00-11/user-data", source="127.0.0.22")
    assert status == 200 and body == (out / "nodes" / "cp-1" / "user-data").read_bytes()


def test_other_addresses_get_403_and_no_secret(server, out: Path) -> None:
    srv, lines = server
    for source in ("127.0.0.1", "127.0.0.23", "127.0.0.101"):  # the server itself, another cp, a worker
        status, body, _ = _get(srv, "/nodes/cp-1/user-data", source=source)
        assert status == 403 and b"PRIVATE KEY" not in body
    assert logged(lines, "'/nodes/cp-1/user-data' 403")
    assert not any("PRIVATE" in line for line in lines)


@pytest.mark.parametrize("path", ["/", "/nodes/", "/nodes/cp-1/", "/nodes/cp-1/../../state/pki/ca.key",
                                  "/nodes/..%2f..%2fadmin.conf/user-data", "/admin.conf", "/manifest.json",
                                  "/seeds/cp-1.iso", "/nodes/nobody/user-data", "/ipxe/52:54:00:99:99:99",
                                  "/boot/vmlinuz", "/nodes/cp-1/guestinfo.vmx"])
def test_anything_else_is_404(server, path: str) -> None:
    srv, _ = server
    status, body, _ = _get(srv, path, source="127.0.0.22")
    assert status == 404 and body == b"not found\n"


def test_ipxe_script_per_mac(server) -> None:
    srv, _ = server
    status, body, _ = _get(srv, "/ipxe/52:54:00:00:01:05", source="127.0.0.105")
    script = body.decode()
    assert status == 200 and script.startswith("#!ipxe\n")
    assert "ds=nocloud-net;s=http://127.0.0.1:8080/nodes/wk-5/ network-config=" in script
    assert "kernel http://127.0.0.1:8080/boot/vmlinuz" in script and script.rstrip().endswith("boot")
    assert _get(srv, "/ipxe/52:54:00:00:01:05", source="127.0.0.106")[0] == 403


def test_many_nodes_at_once(server, out: Path) -> None:
    """Every worker fetching its three seed files at the same time, 5 rounds: all answered, none mixed up."""
    srv, _ = server

    def fetch(i: int) -> bool:
        ok = True
        for f in ("meta-data", "user-data", "network-config"):
            status, body, _ = _get(srv, f"/nodes/wk-{i}/{f}", source=f"127.0.0.{100 + i}")
            ok &= status == 200 and body == (out / "nodes" / f"wk-{i}" / f).read_bytes()
        return ok

    with ThreadPoolExecutor(max_workers=N_WORKERS) as pool:
        assert all(pool.map(fetch, list(range(N_WORKERS)) * 5))


def test_refuses_a_directory_that_is_not_an_output(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"nodes": []}')
    result = subprocess.run([sys.executable, "-m", "imagegen", "serve", str(tmp_path), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "is not an imagegen render output" in result.stderr


def test_wildcard_listen_needs_url(out: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "imagegen", "serve", str(out)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "--url" in result.stderr


# --- network install (a --boot-dir made by `imagegen image netboot`) ---------------------------------------------
@pytest.fixture
def install_server(out: Path, tmp_path: Path):
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in ("vmlinuz", "initrd.img", "installer.cpio.gz"):
        (boot / name).write_bytes(name.encode())
    image = bytes(range(256)) * (3 * serve.BOOT_CHUNK // 256 + 7)  # several chunks and a partial one
    (boot / "node.raw.gz").write_bytes(image)
    lines: list[str] = []
    srv = serve.make_server(serve.load_output(out), ("127.0.0.1", 0), url="http://127.0.0.1:8080", boot_dir=boot,
                            log=lines.append)
    serve.serve_in_thread(srv)
    yield srv, lines, image
    srv.shutdown()
    srv.server_close()


def _post(srv, path: str, source: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10, source_address=(source, 0))
    conn.request("POST", path, body=b"node=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_chain_script_for_one_boot_file_name(server) -> None:
    srv, _ = server
    for source in ("127.0.0.1", "127.0.0.105"):  # holds no node data: anyone may have it
        status, body, _ = _get(srv, "/ipxe/boot", source=source)
        assert status == 200 and body == b"#!ipxe\n# imagegen: chain to this machine's own script\n" \
                                         b"chain http://127.0.0.1:8080/ipxe/${mac}\n"


def test_installer_script_when_the_boot_dir_has_one(install_server) -> None:
    srv, _, _ = install_server
    status, body, _ = _get(srv, "/ipxe/52:54:00:00:01:05", source="127.0.0.105")
    assert status == 200 and body.decode().splitlines()[2:] == [
        "kernel http://127.0.0.1:8080/boot/vmlinuz initrd=initrd.img initrd=installer.cpio.gz "
        "imagegen.url=http://127.0.0.1:8080 imagegen.mac=52:54:00:00:01:05 console=ttyS0",
        "initrd http://127.0.0.1:8080/boot/initrd.img", "initrd http://127.0.0.1:8080/boot/installer.cpio.gz", "boot"]
    assert b"ds=nocloud" not in body and b"network-config=" not in body  # the seed goes to the disk instead


def test_disk_image_is_streamed_in_chunks(install_server, monkeypatch: pytest.MonkeyPatch) -> None:
    srv, lines, image = install_server
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read whole: {self}"))
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.request("GET", "/boot/node.raw.gz")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == str(len(image))
    assert resp.getheader("Content-Type") == "application/octet-stream"
    got = b"".join(iter(lambda: resp.read(100_000), b""))
    conn.close()
    assert got == image
    assert logged(lines, f"'/boot/node.raw.gz' 200 {len(image)}")


def test_route_gives_boot_files_as_paths(tmp_path: Path) -> None:
    (tmp_path / "node.raw.gz").write_bytes(b"x")
    r = serve.route(serve.ServedOutput({}, {}), "/boot/node.raw.gz", url="u", boot_dir=tmp_path)
    assert r.status == 200 and r.file == tmp_path / "node.raw.gz" and r.body == b""


def test_installed_node_is_sent_to_its_disk_only_when_it_says_so(install_server) -> None:
    srv, lines, _ = install_server
    mac, own, other = "52:54:00:00:01:06", "127.0.0.106", "127.0.0.107"
    assert _post(srv, f"/mac/{mac}/installed", other) == 403  # another address cannot end a node's install
    assert b"installer.cpio.gz" in _get(srv, f"/ipxe/{mac}", source=own)[1]
    assert _post(srv, "/mac/52:54:00:99:99:99/installed", own) == 404
    assert _get(srv, f"/mac/{mac}/installed", source=own)[0] == 404  # POST only
    assert _post(srv, f"/mac/{mac}/installed", own) == 200
    status, body, _ = _get(srv, f"/ipxe/{mac}", source=own)
    assert status == 200 and body.decode().splitlines()[-1] == "exit"
    assert b"installer" in _get(srv, "/ipxe/52:54:00:00:01:07", source=other)[1]  # other nodes unaffected
    assert logged(lines, f"{own} POST '/mac/{mac}/installed' 200")


def test_percent_encoded_mac_from_ipxe(server) -> None:
    """iPXE's `chain …/ipxe/${mac}` sends the colons as %3A (seen in the first vm-pxe run: 404)."""
    srv, _ = server
    status, body, _ = _get(srv, "/ipxe/52%3A54%3A00%3A00%3A01%3A05", source="127.0.0.105")
    assert status == 200 and b"# imagegen: wk-5 (52:54:00:00:01:05)" in body
    assert _get(srv, "/boot/..%2F..%2Fmanifest.json", source="127.0.0.105")[0] == 404
