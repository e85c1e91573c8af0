"""Import every image of a bundle into a private, throw-away containerd with `ctr images import`.

    .venv/bin/python vm-tests/bundle/check_import.py [BUNDLE_DIR]   (default: the current test bundle)

Proves the docker-archives are accepted by the real consumer the nodes use, without touching
any system containerd: the daemon gets its own root, state and socket under a temporary
directory and is stopped (by its PID) afterwards. Needs root and Debian's `containerd` package.
Exit 0 when every tag in manifest.json is present and fully unpacked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_BUNDLE = Path.home() / ".cache" / "imagegen" / "bundle" / "current" / "bundle"


def main() -> int:
    bundle = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_BUNDLE
    manifest = json.loads((bundle / "manifest.json").read_text())
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        print("error: containerd/ctr not installed (apt-get install containerd)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="imagegen-ctr-"))
    sock = work / "containerd.sock"
    (work / "config.toml").write_text(
        f'version = 2\nroot = "{work}/root"\nstate = "{work}/state"\n[grpc]\n  address = "{sock}"\n'
    )
    log = (work / "containerd.log").open("w")
    daemon = subprocess.Popen(["containerd", "--config", str(work / "config.toml")], stdout=log, stderr=log)
    ctr = ["ctr", "--address", str(sock), "-n", "k8s.io"]
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
        problems = []
        for image in manifest["images"]:
            for tag in image["tags"]:
                line = next((ln for ln in listing.splitlines() if ln.startswith(tag + " ")), "")
                if "complete" not in line or not line.rstrip().endswith("true"):
                    problems.append(f"{tag}: not imported and unpacked ({line.strip() or 'absent'})")
        for problem in problems:
            print(f"FAIL {problem}")
        tags = sum(len(i["tags"]) for i in manifest["images"])
        print(f"{'FAILED' if problems else 'ok'}: {len(manifest['images'])} archives, {tags} tags "
              f"imported into containerd in {seconds:.1f} s")
        return 1 if problems else 0
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        subprocess.run(["umount", "-R", str(work / "root")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
