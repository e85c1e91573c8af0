"""Serial console markers: what the guest prints, recognised in the libvirt serial log (pure scanner + a tail).

The first-boot logic prints IMAGEGEN-* markers to /dev/console (ttyS0 in imagegen images); the harness also
notes the boot stages that are visible on the console, for the timeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# (kind, pattern). Order only matters for the timeline legend; each kind is recorded once per boot.
MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("grub", re.compile(r"GNU GRUB|Booting `")),
    ("kernel", re.compile(r"Linux version \d")),
    ("systemd", re.compile(r"Welcome to .*Debian|systemd\[1\]: ")),
    ("cloud-init-local", re.compile(r"running 'init-local'")),
    ("cloud-init-network", re.compile(r"running 'init' at")),
    ("cloud-init-config", re.compile(r"running 'modules:config'")),
    ("cloud-init-final", re.compile(r"running 'modules:final'")),
    ("prep-ok", re.compile(r"IMAGEGEN-PREP-OK node=(?P<node>\S+)")),
    ("cloud-init-done", re.compile(r"IMAGEGEN-CLOUD-INIT-DONE node=(?P<node>\S+)")),
    ("bootstrap-ok", re.compile(
        r"IMAGEGEN-BOOTSTRAP-OK node=(?P<node>\S+) role=(?P<role>\S+) seconds=(?P<seconds>\d+)")),
    ("bootstrap-failed", re.compile(
        r"IMAGEGEN-BOOTSTRAP-FAILED node=(?P<node>\S+) step=(?P<step>\S+)(?: reason=(?P<reason>.*))?")),
)
# Terminal control sequences (GRUB's menu, systemd's colours) are dropped before matching and reporting.
ANSI = re.compile(r"\x1b(\[[0-9;?=]*[A-Za-z]|[()][A-Z0-9]|[=>])")
# Seen on the console, these end the wait for a node: nothing good will follow.
FATAL = re.compile(r"Kernel panic|You are in emergency mode|Give root password for maintenance|"
                   r"Failed to start .*[Cc]loud-init|grub rescue>")


@dataclass(frozen=True)
class Marker:
    kind: str
    at: float  # seconds since the domain started, as observed by the harness
    line: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class MarkerScanner:
    """Feed console text in chunks; collects the first occurrence of each marker kind and fatal lines."""

    markers: dict[str, Marker] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)
    _partial: str = ""

    def feed(self, text: str, at: float) -> list[Marker]:
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()  # an unterminated line waits for the rest
        new: list[Marker] = []
        for raw in lines:
            line = ANSI.sub("", raw).rstrip("\r")
            for kind, pattern in MARKERS:
                if kind in self.markers:
                    continue
                m = pattern.search(line)
                if m:
                    marker = Marker(kind, round(at, 1), line.strip()[-300:],
                                    {k: v for k, v in m.groupdict().items() if v is not None})
                    self.markers[kind] = marker
                    new.append(marker)
            if FATAL.search(line):
                self.fatal.append(line.strip()[-300:])
        return new


class ConsoleTail:
    """Reads what was appended to a serial log since the last call (virtlogd writes it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read_new(self) -> str:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        self.offset += len(data)
        return data.decode("utf-8", errors="replace")
