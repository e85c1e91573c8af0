"""One VM test run from start to report: the run directory, the lab (network, firewall rule, domains, overlays),
memory sampling, and a teardown that always runs and always writes report.json and timeline.svg.

    with Session(suite="vm-smoke", run_name="smoke", runs=..., plan=...) as session:
        ...  # build, render, session.open_lab(accel), session.create_network(plan, "igvm"), boot, check
    return session.code

An exception or Ctrl-C/SIGTERM/SIGHUP inside the block ends the run, not the teardown: the exception becomes the
exit status (130 interrupted, 2 bad input, 1 failed) and the report's result. Teardown order: the suite's `collect`
hook (guest logs while the domains still run), the nodes into the report, the services the suite registered with
`on_teardown` stopped (the lab's package repositories and registry), the lab removed (domains, firewall rule,
network, overlays) unless `keep`, the `discard` directories of the run removed, the report written, the summary
printed. libvirt is reached only through `connect` and processes only through `run`, so a test can pass fakes.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from harness.lab import Lab, LabError, Runner
from harness.memory import MemorySampler
from harness.report import RunReport
from harness.ssh import Ssh
from harness.xml import HostEntry, NetworkSpec
from imagegen.errors import UsageError
from imagegen.plan import Plan


class Failed(Exception):
    """The run failed in a way the suite explains (a deadline, a node that never came up): no traceback."""


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _default_connect(log: list[str]) -> Any:
    from harness.daemons import connect  # imports libvirt, which unit tests of the session do not need

    return connect(log)


class Session:
    def __init__(self, *, suite: str, run_name: str, runs: Path, plan: Path, keep: bool = False,
                 discard: tuple[str, ...] = ("state",), collect: Callable[[Session], None] | None = None,
                 connect: Callable[[list[str]], Any] = _default_connect, run: Runner = subprocess.run) -> None:
        """`suite` names the run in its first and closing lines; the run directory is runs/<run_name>-<run id>.
        `discard`: run directories removed at the end (the test cluster's CA keys are not worth keeping).
        `collect(session)`: runs first in teardown while the lab exists (guest logs, a last console poll).
        `keep`: leave the domains, network and firewall rule in place (debugging)."""
        self.suite = suite
        self.run_name = run_name
        self.runs = runs
        self.plan_path = plan
        self.keep = keep
        self.discard = discard
        self.collect = collect
        self._connect = connect
        self._run = run
        self.run_id = ""
        self.run_dir = runs
        self.report = RunReport(run_id="", plan=str(plan), image="", accel="", started_at="")
        self.lab: Lab | None = None
        self.ssh_of: dict[str, Ssh] = {}  # filled by the suite once the nodes exist; `collect` uses it
        self.code = 1
        self._memory: MemorySampler | None = None
        self._wall0 = 0.0
        self._handlers: dict[signal.Signals, Any] = {}
        self._stops: list[Callable[[], None]] = []

    # --- setup ---------------------------------------------------------------------------------------------
    def __enter__(self) -> Session:
        self._wall0 = time.monotonic()
        self.run_id = time.strftime("%m%d%H%M%S") + secrets.token_hex(2)
        self.run_dir = self.runs / f"{self.run_name}-{self.run_id}"
        self.run_dir.mkdir(parents=True)
        self.run_dir.chmod(0o700)  # the run's SSH key, the rendered seeds' secrets, admin.conf
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._handlers[sig] = signal.getsignal(sig)
        # Ctrl-C must always interrupt, even when started from a shell that ignores SIGINT for background jobs.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _sigterm)
        signal.signal(signal.SIGHUP, _sigterm)
        self.report = RunReport(run_id=self.run_id, plan=str(self.plan_path), image="", accel="",
                                started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        print(f"{self.suite} run {self.run_id}: {self.run_dir}", flush=True)
        return self

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Seconds the block took, into report.phases[name]; nothing when it raised."""
        t = time.monotonic()
        yield
        self.report.phases[name] = round(time.monotonic() - t, 1)

    def open_lab(self, accel: str) -> Lab:
        """Connect to libvirt (starting its daemons where needed) and start sampling memory."""
        self.report.accel = accel
        conn = self._connect(self.report.setup_log)
        self.lab = Lab(conn, self.run_dir, self.run_id, accel, self.report.setup_log, run=self._run)
        self._memory = MemorySampler(self.lab.qemu_pids)
        self._memory.__enter__()
        return self.lab

    def create_network(self, plan: Plan, bridge_prefix: str) -> None:
        """The plan's network as an isolated libvirt network with a DHCP reservation per plan node."""
        assert self.lab is not None, "open_lab first"
        self.lab.create_network(NetworkSpec(
            name=f"imagegen-{self.run_id}", bridge=f"{bridge_prefix}{self.run_id[-6:]}",
            cidr=str(plan.network.cidr), gateway=str(plan.network.gateway),
            hosts=tuple(HostEntry(n.mac, str(n.ip), n.name) for n in plan.nodes)))

    def on_teardown(self, stop: Callable[[], None]) -> None:
        """`stop` runs in teardown, after `collect` and before the lab is removed: a service the suite started on
        the lab network (LabRepos on the bridge's gateway address)."""
        self._stops.append(stop)

    # --- teardown ------------------------------------------------------------------------------------------
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if self._memory is not None:
            self._memory.__exit__(None, None, None)
            self.report.memory = self._memory.summary()
        handled = exc is None or isinstance(exc, (KeyboardInterrupt, Exception))
        if exc is None:
            self.code = self.report.conclude()
        elif handled:  # a crashed harness must still clean up and report
            self.code = self.report.record_exception(exc, usage=(UsageError,), expected=(Failed, LabError))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        try:
            report_path, svg = self._teardown()
        finally:
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)
        if handled:
            print(self.report.summary(self.suite, report_path, svg, self.run_dir), flush=True)
        return handled

    def _teardown(self) -> tuple[Path, Path]:
        lab = self.lab
        if lab is not None:
            if self.collect is not None:
                self.collect(self)
            self.report.add_nodes([*lab.removed, *lab.nodes.values()])  # removed: day 2's dead machines
        stop_problems: list[str] = []
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception as exc:  # one service failing to stop must not keep the lab from being removed
                stop_problems.append(f"stopping {getattr(stop, '__qualname__', stop)}: {exc}")
        self.report.cleanup_problems = stop_problems
        if lab is not None:
            if self.keep:
                print("--keep: VMs left running; remove them with virsh destroy/undefine", flush=True)
            else:
                self.report.cleanup_problems = [*stop_problems, *lab.close()]
        for name in self.discard:
            shutil.rmtree(self.run_dir / name, ignore_errors=True)
        self.report.wall_seconds = round(time.monotonic() - self._wall0, 1)
        return self.report.write(self.run_dir)


class SessionView:
    """What every suite's step context reads from its Session: mixed into those dataclasses (which declare
    `session: Session`), so the properties are written once."""

    session: Session

    @property
    def lab(self) -> Lab:
        assert self.session.lab is not None, "the lab is open before the steps run"
        return self.session.lab

    @property
    def report(self) -> RunReport:
        return self.session.report

    @property
    def run_dir(self) -> Path:
        return self.session.run_dir

    @property
    def ssh_of(self) -> dict[str, Ssh]:
        return self.session.ssh_of
