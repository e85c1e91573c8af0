"""Samples host memory and the qemu processes' RSS during a run, to report the peaks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0]) * 1024
    return out


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


class MemorySampler:
    """`pids` returns the qemu processes of this run only: other runs on the same host must not count."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 2.0) -> None:
        self.pids = pids
        self.interval = interval
        info = _meminfo()
        self.baseline_used = info["MemTotal"] - info["MemAvailable"]
        self.peak_used = self.baseline_used
        self.peak_qemu_rss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            info = _meminfo()
            self.peak_used = max(self.peak_used, info["MemTotal"] - info["MemAvailable"])
            self.peak_qemu_rss = max(self.peak_qemu_rss, _rss(self.pids()))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, float]:
        mib = 1024 * 1024
        return {
            "host_used_before_mib": round(self.baseline_used / mib),
            "host_used_peak_mib": round(self.peak_used / mib),
            "host_used_peak_delta_mib": round((self.peak_used - self.baseline_used) / mib),
            "qemu_rss_peak_mib": round(self.peak_qemu_rss / mib),
            "samples": self.samples,
        }
