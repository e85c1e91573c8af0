"""The run report: JSON for machines, an SVG timeline for people, and the run directory's name at the end."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.timeline import Row, render_timeline


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

    def write(self, run_dir: Path) -> tuple[Path, Path]:
        report = run_dir / "report.json"
        report.write_text(json.dumps(asdict(self), indent=2) + "\n")
        rows = [Row(n.name, n.role, tuple(sorted(n.events, key=lambda e: e[1])), n.ok) for n in self.nodes]
        svg = run_dir / "timeline.svg"
        svg.write_text(render_timeline(rows, f"imagegen {self.plan} run {self.run_id} ({self.accel}): "
                                             f"{self.result}"))
        return report, svg
