"""Render progress on standard error: one updating line on a terminal (count, rate, time left), and on anything
else (a pipe, a CI log) a plain line about every tenth of the way, so 300 nodes print about ten lines."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, *, tty: bool | None = None,
                 clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.start = clock()
        self.step = max(1, total // 10)
        self.width = 0

    def update(self, name: str, done: int) -> None:
        elapsed = max(self.clock() - self.start, 1e-6)
        rate = done / elapsed
        left = (self.total - done) / rate if rate else 0.0
        text = f"[{done}/{self.total}] {name}  {rate:.0f} nodes/s, {left:.0f} s left"
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
