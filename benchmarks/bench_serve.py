"""Request rate of `imagegen serve` from this machine's loopback: N nodes (on 127.0.0.0/16, so each client sends
from its node's own address) fetch meta-data, user-data and network-config concurrently, R rounds.
Prints requests per second and the slowest request. Run: `.venv/bin/python benchmarks/bench_serve.py`."""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagegen import serve  # noqa: E402
from imagegen.cli import main  # noqa: E402


def plan(nodes: int) -> dict:
    items = [{"name": "cp-1", "role": "control-plane", "ip": "127.0.1.1", "mac": "52:54:00:01:00:01"}]
    items += [{"name": f"wk-{i}", "role": "worker", "ip": f"127.0.{2 + i // 250}.{1 + i % 250}",
               "mac": f"52:54:00:02:{i >> 8:02x}:{i & 255:02x}"} for i in range(nodes - 1)]
    return {"cluster": {"name": "bench", "kubernetes_version": "1.34.2"},
            "endpoint": {"mode": "single"}, "network": {"cidr": "127.0.0.0/16", "gateway": "127.0.0.1"},
            "nodes": items}


def main_bench() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=32)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "plan.yaml").write_text(yaml.safe_dump(plan(a.nodes)))
        assert main(["render", str(root / "plan.yaml"), "--out", str(root / "out"), "--state", str(root / "st"),
                     "--quiet"]) == 0
        output = serve.load_output(root / "out")
        srv = serve.make_server(output, ("127.0.0.1", 0), url="http://127.0.0.1", log=lambda _line: None)
        serve.serve_in_thread(srv)
        port = srv.server_address[1]
        jobs = [(n.name, n.ip, f) for _ in range(a.rounds) for n in output.nodes.values()
                for f in ("meta-data", "user-data", "network-config")]

        def fetch(job: tuple[str, str, str]) -> float:
            name, ip, f = job
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(ip, 0))
            conn.request("GET", f"/nodes/{name}/{f}")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status != 200:
                raise RuntimeError(f"{name}/{f}: {resp.status}")
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=a.clients) as pool:
            times = list(pool.map(fetch, jobs))
        wall = time.perf_counter() - started
        srv.shutdown()
        srv.server_close()
    print(f"serve: {len(jobs)} requests from {a.nodes} node addresses, {a.clients} at a time: "
          f"{len(jobs) / wall:.0f} requests/s, slowest {max(times) * 1000:.0f} ms, all 200")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
