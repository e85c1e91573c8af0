"""harness.guest.pull_logs: what a failed run's teardown pulls from each node, and how long an unreachable node
keeps it (no VM: an Ssh stand-in answering as ssh does)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "vm-tests"))
from harness import guest  # noqa: E402
from harness.ssh import Result  # noqa: E402

COMMANDS = {"a.log": "cat a", "b.log": "cat b", "c.log": "cat c"}


@dataclass
class FakeSsh:
    host: str
    answers: list[Result]
    asked: list[str] = field(default_factory=list)

    def run(self, command: str, *, timeout: float = 120, connect_timeout: int = 10) -> Result:
        self.asked.append(command)
        return self.answers[min(len(self.asked), len(self.answers)) - 1]


def test_an_unreachable_node_is_asked_once(tmp_path: Path) -> None:
    ssh = FakeSsh("10.79.0.11", [Result(255, "", "ssh: connect to host 10.79.0.11 port 22: No route to host")])
    guest.pull_logs(ssh, tmp_path, COMMANDS, timeout=60)  # type: ignore[arg-type]
    assert ssh.asked == ["cat a"]
    assert "No route to host" in (tmp_path / "a.log").read_text()
    for name in ("b.log", "c.log"):
        assert (tmp_path / name).read_text() == ("[not pulled: SSH to 10.79.0.11 failed: ssh: connect to host "
                                                 "10.79.0.11 port 22: No route to host]")


def test_a_reachable_node_gives_every_file_even_when_a_command_fails(tmp_path: Path) -> None:
    ssh = FakeSsh("n", [Result(0, "A", ""), Result(1, "", "no such file"), Result(0, "C", "")])
    guest.pull_logs(ssh, tmp_path, COMMANDS, timeout=60)  # type: ignore[arg-type]
    assert ssh.asked == ["cat a", "cat b", "cat c"]
    assert [(tmp_path / n).read_text() for n in COMMANDS] == ["A", "\n[exit 1] no such file", "C"]
