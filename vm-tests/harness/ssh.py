"""In-guest commands over SSH with a key made for this run only (never the operator's own keys)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def make_key(directory: Path) -> tuple[Path, str]:
    """(private key path, public key line). The private key is 0600 and stays in the run directory."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "imagegen-vm-test", "-f", str(key)],
                       check=True)
    key.chmod(0o600)
    return key, (directory / "id_ed25519.pub").read_text().strip()


@dataclass(frozen=True)
class Ssh:
    host: str
    user: str
    key: Path

    def _base(self, timeout: int) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", f"{self.user}@{self.host}"]

    def run(self, command: str, *, timeout: float = 120, connect_timeout: int = 10) -> Result:
        try:
            done = subprocess.run([*self._base(connect_timeout), command], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Result(124, "", f"timed out after {timeout:.0f} s: {command}")
        return Result(done.returncode, done.stdout, done.stderr)

    def wait_ready(self, deadline: float) -> bool:
        """True once a trivial command succeeds before the monotonic `deadline`."""
        while time.monotonic() < deadline:
            if self.run("true", timeout=20, connect_timeout=5).ok:
                return True
            time.sleep(3)
        return False

    def wait_down(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if not self.run("true", timeout=10, connect_timeout=3).ok:
                return True
            time.sleep(1)
        return False
