"""The run report: JSON for machines, an SVG timeline for people, and the run directory's name at the end."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.timeline import Row, render_timeline

if TYPE_CHECKING:
    from harness.lab import Node


# The markers whose guest CPU seconds the closing summary prints (all of them are in report.json).
CPU_SUMMARY_MARKERS = ("cloud-init-local", "cloud-init-done", "prep-ok", "bootstrap-ok", "bootstrap-failed", "ready")


@dataclass
class Check:
    node: str
    name: str
    ok: bool
    detail: str
    seconds: float
    expected_failure: bool = False


@dataclass
class NodeReport:
    name: str
    role: str
    ip: str
    markers: dict[str, float] = field(default_factory=dict)
    events: list[tuple[str, float]] = field(default_factory=list)
    marker_lines: dict[str, str] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)
    ok: bool = True
    # marker (and 'ready': the Node Ready through the API) -> guest CPU seconds when first seen
    cpu_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class RunReport:
    run_id: str
    plan: str
    image: str
    accel: str
    started_at: str
    result: str = "running"  # passed | failed | interrupted
    error: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    nodes: list[NodeReport] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)
    setup_log: list[str] = field(default_factory=list)
    cleanup_problems: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def conclude(self) -> int:
        """Result from the checks once the run got through them: exit status 0 passed, 1 failed."""
        failed = self.failed_checks()
        self.result = "passed" if not failed else "failed"
        if failed:
            self.error = f"{len(failed)} check(s) failed: " + "; ".join(f"{c.node}: {c.name}" for c in failed)
        return 0 if not failed else 1

    def record_exception(self, exc: BaseException, usage: tuple[type[BaseException], ...],
                         expected: tuple[type[BaseException], ...]) -> int:
        """Result of a run that stopped early: 130 interrupted, 2 bad input, 1 failure (a traceback for a crash)."""
        if isinstance(exc, KeyboardInterrupt):
            self.result, self.error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
            return 130
        self.result = "failed"
        if isinstance(exc, usage):
            self.error = str(exc)
            return 2
        if isinstance(exc, expected):
            self.error = str(exc)
            return 1
        self.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exception(exc)
        return 1

    def add_nodes(self, nodes: Iterable[Node]) -> None:
        """A NodeReport per lab node: console markers, harness events, and whether all its checks passed."""
        for node in nodes:
            markers = node.scanner.markers.values()
            self.nodes.append(NodeReport(
                name=node.name, role=node.role, ip=node.ip,
                markers={m.kind: m.at for m in markers},
                events=sorted(node.timeline_events(), key=lambda e: e[1]),
                marker_lines={m.kind: m.line for m in markers},
                fatal=node.scanner.fatal,
                ok=not any(c.node == node.name and not c.ok for c in self.checks),
                cpu_seconds=dict(node.cpu)))

    def summary(self, suite: str, report_path: Path, svg: Path, run_dir: Path) -> str:
        """The closing lines a suite prints: result, cleanup problems, where the evidence is."""
        lines = [f"\n{suite} {self.result} in {self.wall_seconds:.0f} s" + (f": {self.error}" if self.error else "")]
        if self.cleanup_problems:
            lines.append("cleanup problems: " + "; ".join(self.cleanup_problems))
        for n in self.nodes:
            if n.cpu_seconds:
                steps = ", ".join(f"{kind} {cpu:.0f}" for kind, cpu in
                                  sorted(n.cpu_seconds.items(), key=lambda item: item[1])
                                  if kind in CPU_SUMMARY_MARKERS)
                lines.append(f"guest CPU seconds {n.name}: {steps}")
        lines.append(f"report: {report_path}\ntimeline: {svg}\nrun directory: {run_dir}")
        return "\n".join(lines)

    def write(self, run_dir: Path) -> tuple[Path, Path]:
        report = run_dir / "report.json"
        report.write_text(json.dumps(asdict(self), indent=2) + "\n")
        rows = [Row(n.name, n.role, tuple(sorted(n.events, key=lambda e: e[1])), n.ok) for n in self.nodes]
        svg = run_dir / "timeline.svg"
        svg.write_text(render_timeline(rows, f"imagegen {self.plan} run {self.run_id} ({self.accel}): "
                                             f"{self.result}"))
        return report, svg
