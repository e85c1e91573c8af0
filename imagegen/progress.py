"""Render progress on standard error: one updating line on a terminal (count, rate, time left), and on anything
else (a pipe, a CI log) a plain line about every tenth of the way, so 300 nodes print about ten lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        # Timed from the first finished node, so the state's key generation before it does not skew the rate.
        self.first: tuple[float, int] | None = None
        self.step = max(1, -(-total // 10))
        self.width = 0

    def update(self, name: str, done: int) -> None:
        now = self.clock()
        if self.first is None:
            self.first = (now, done)
        elapsed = now - self.first[0]
        rate = (done - self.first[1]) / elapsed if elapsed > 0 else 0.0
        left = f"{(self.total - done) / rate:.0f} s left" if rate else "time left unknown"
        text = f"[{done}/{self.total}] {name}  {rate:.0f} nodes/s, {left}"
        if self.tty:
            pad = max(0, self.width - len(text))
            self.width = len(text)
            self.stream.write(f"\r{text}{' ' * pad}")
            if done == self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif done % self.step == 0 or done == self.total:
            self.stream.write(f"rendered {done}/{self.total} nodes ({rate:.0f} nodes/s)\n")
            self.stream.flush()
