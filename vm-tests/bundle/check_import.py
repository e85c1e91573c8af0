"""Import every image of a bundle into a private, throw-away containerd and look at it through the bundle's crictl.

    .venv/bin/python vm-tests/bundle/check_import.py [BUNDLE_DIR] [--plan PLAN]

BUNDLE_DIR defaults to the current test bundle, PLAN to vm-tests/plans/cluster.yaml. The daemon runs with the
containerd config.toml imagegen renders for that plan's first worker (plus its own root, state and socket under a
temporary directory, and restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE), never touching any system
containerd, and is stopped (by its PID) afterwards. Then, as a node does: `ctr -n k8s.io images import` of every
archive, and the bundle's own bin/crictl (what kubeadm's preflight and the harness use) must see every tag through
the CRI, report the plan's pause image as sandbox image and SystemdCgroup true. Needs root, and Debian's
containerd: installed, or else bookworm's 1.6 (what the nodes run) as `make deps` unpacks it under
~/.cache/imagegen/containerd/bookworm.
Exit 0 when all of that holds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from imagegen import kubeadm  # noqa: E402
from imagegen.plan import load_plan  # noqa: E402
from imagegen.render import render_cluster  # noqa: E402
from imagegen.state import ensure_state  # noqa: E402

DEFAULT_BUNDLE = Path.home() / ".cache" / "imagegen" / "bundle" / "current" / "bundle"
DEFAULT_PLAN = REPO / "vm-tests" / "plans" / "cluster.yaml"
CRI = '[plugins."io.containerd.grpc.v1.cri"]\n'
UNPACKED = Path.home() / ".cache" / "imagegen" / "containerd" / "bookworm" / "root" / "usr" / "bin"


def containerd_bin() -> Path | None:
    """The installed containerd's directory, else the unpacked bookworm one (never installed on the host)."""
    found = shutil.which("containerd")
    if found and shutil.which("ctr"):
        return Path(found).parent
    return UNPACKED if (UNPACKED / "containerd").exists() and (UNPACKED / "ctr").exists() else None


def rendered_config(plan_path: Path, work: Path) -> tuple[str, str]:
    """(config.toml of the plan's first worker, the plan's pause image)."""
    plan = load_plan(plan_path)
    artifacts = render_cluster(plan, ensure_state(work / "state", plan))
    worker = next(n for n in plan.nodes if n.role == "worker")
    doc = yaml.safe_load(artifacts[f"nodes/{worker.name}/user-data"].data)
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    if "/etc/containerd/config.toml" not in files:
        raise SystemExit(f"{plan_path}: no containerd config.toml rendered (container_runtime is not containerd)")
    return files["/etc/containerd/config.toml"], kubeadm.pause_image(plan)


def private_config(rendered: str, work: Path, sock: Path) -> str:
    if CRI not in rendered:
        raise SystemExit("rendered config.toml has no CRI plugin table")
    body = rendered.replace(CRI, CRI + "  restrict_oom_score_adj = true\n", 1)
    top = f'root = "{work}/root"\nstate = "{work}/state"\n'
    return top + body + f'\n[grpc]\n  address = "{sock}"\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--plan", type=Path, default=DEFAULT_PLAN)
    args = parser.parse_args()
    bundle: Path = args.bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    bindir = containerd_bin()
    if bindir is None:
        print("error: no containerd: apt-get install containerd, or `make deps` to unpack Debian's", file=sys.stderr)
        return 2
    crictl = bundle / "bin" / "crictl"
    if not crictl.exists():
        print(f"error: {crictl} missing: the bundle cannot serve containerd nodes", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="imagegen-ctr-"))
    sock = work / "containerd.sock"
    rendered, pause = rendered_config(args.plan, work)
    (work / "config.toml").write_text(private_config(rendered, work, sock))
    log = (work / "containerd.log").open("w")
    daemon = subprocess.Popen([str(bindir / "containerd"), "--config", str(work / "config.toml")],
                              stdout=log, stderr=log)
    ctr = [str(bindir / "ctr"), "--address", str(sock), "-n", "k8s.io"]
    cri = [str(crictl), "--runtime-endpoint", f"unix://{sock}", "--image-endpoint", f"unix://{sock}",
           "--timeout", "30s"]
    problems: list[str] = []
    try:
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.2)
        start = time.monotonic()
        for image in manifest["images"]:
            subprocess.run([*ctr, "images", "import", str(bundle / image["file"])], check=True,
                           capture_output=True, text=True)
        seconds = time.monotonic() - start
        listing = subprocess.run([*ctr, "images", "check"], check=True, capture_output=True, text=True).stdout
        for image in manifest["images"]:
            for tag in image["tags"]:
                line = next((ln for ln in listing.splitlines() if ln.startswith(tag + " ")), "")
                if "complete" not in line or not line.rstrip().endswith("true"):
                    problems.append(f"{tag}: not imported and unpacked ({line.strip() or 'absent'})")
        # Through the CRI, with the bundle's crictl: what kubelet and kubeadm's preflight see.
        seen = json.loads(subprocess.run([*cri, "images", "-o", "json"], check=True, capture_output=True,
                                         text=True).stdout)
        cri_tags = {t for img in seen.get("images", []) for t in img.get("repoTags") or []}
        problems += [f"{t}: not visible through the CRI (crictl images)" for i in manifest["images"]
                     for t in i["tags"] if t not in cri_tags]
        info = json.loads(subprocess.run([*cri, "info"], check=True, capture_output=True, text=True).stdout)
        config = info.get("config", {})
        sandbox = config.get("sandboxImage")
        systemd = config.get("containerd", {}).get("runtimes", {}).get("runc", {}).get("options", {}).get(
            "SystemdCgroup")
        config_path = config.get("registry", {}).get("configPath")
        if sandbox != pause:
            problems.append(f"crictl info sandboxImage {sandbox!r}, want the plan's {pause}")
        if systemd is not True:
            problems.append(f"crictl info runc SystemdCgroup {systemd!r}, want true")
        if pause not in cri_tags:
            problems.append(f"the sandbox image {pause} is not in the bundle")
        version = subprocess.run([*cri, "version"], capture_output=True, text=True, check=False).stdout
        for problem in problems:
            print(f"FAIL {problem}")
        tags = sum(len(i["tags"]) for i in manifest["images"])
        print(f"{'FAILED' if problems else 'ok'}: {len(manifest['images'])} archives, {tags} tags imported into "
              f"containerd in {seconds:.1f} s; crictl sees {len(cri_tags)} tags; sandboxImage {sandbox}, "
              f"SystemdCgroup {systemd}, registry configPath {config_path}; containerd from {bindir}; "
              f"{' '.join(version.split())}")
        return 1 if problems else 0
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        subprocess.run(["umount", "-R", str(work / "root")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
