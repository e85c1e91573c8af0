"""The `imagegen` command: parses arguments, calls the library, prints. Exit 0 ok, 2 bad input, 1 failure."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagegen import __version__
from imagegen.errors import PlanError, UsageError
from imagegen.plan import Node, Plan, load_plan

EPILOG = """\
exit status: 0 success; 2 bad input (plan, state or output directory, arguments); 1 anything else;
130/143 interrupted by SIGINT/SIGTERM (temporary files removed). `diff --exit-code`: 1 when a render would
change something. Errors are one line per problem: "imagegen: FILE: message".
IMAGEGEN_DEBUG=1 shows the Python traceback of an unexpected error (exit 1) instead of one line.
"""

PROGRESS_FROM = 20  # nodes; smaller plans render in a blink and print only the summary


def default_state_dir(plan: Plan) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imagegen" / plan.cluster.name


def cmd_validate(args: argparse.Namespace) -> int:
    from imagegen.cli_operator import cmd_validate as validate

    return validate(args)


def cmd_show(args: argparse.Namespace) -> int:
    from imagegen.cli_operator import cmd_show as show

    return show(args)


def _note(message: str) -> None:
    print(f"imagegen: {message}", file=sys.stderr, flush=True)


def _jobs(text: str) -> int:
    """--jobs: a whole number from 1 to 256 (argparse turns the ValueError into a usage error, exit 2)."""
    value = int(text) if text.strip().isdigit() else 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of processes from 1 to 256")
    return value


def cmd_render(args: argparse.Namespace) -> int:
    from imagegen.cli_operator import cmd_diff, load_checked, render_summary
    from imagegen.progress import Progress
    from imagegen.render import RenderStats, iter_render
    from imagegen.state import check_state_dir, open_state
    from imagegen.writer import check_output_dir, check_separate, locked_output, write_tree

    if args.dry_run:
        return cmd_diff(args)
    plan = load_checked(args.plan)
    out = Path(args.out)
    state_dir = Path(args.state) if args.state else default_state_dir(plan)
    # Every refusal before anything is written: not the output's parent, not the state directory, not a key.
    check_separate(out, state_dir=state_dir, plan_file=Path(args.plan))
    check_output_dir(out)
    check_state_dir(state_dir, plan, accept_changed_identity=args.accept_changed_identity)
    bar = Progress(len(plan.nodes)) if not args.quiet and len(plan.nodes) >= PROGRESS_FROM else None

    def progress(node: Node, done: int, total: int) -> None:
        if bar is not None:
            bar.update(node.name, done)

    with locked_output(out, on_wait=_note) as leftovers:
        if leftovers:
            _note(f"removed {len(leftovers)} leftover(s) of interrupted renders beside {out}")
        with open_state(state_dir, plan, accept_changed_identity=args.accept_changed_identity,
                        notify=lambda m: _note(f"warning: {m}")) as state:
            # Streamed: each node's files are written and dropped, so memory stays flat with the cluster's size.
            stats = RenderStats()
            write_tree(out, stats.count(iter_render(plan, state, progress, processes=args.jobs)))
    if args.output == "json":
        import json

        print(json.dumps(render_summary(plan, stats, out, state_dir), indent=2))
    elif not args.quiet:
        print(f"rendered {plan.cluster.name}: {len(plan.nodes)} nodes, {stats.seeds} seed ISOs, "
              f"{stats.files} files, {stats.bytes / 1024:.0f} KiB -> {out}")
        for node in plan.nodes:
            print(f"  {node.name:<20} {node.role:<14} {node.ip!s:<15} {out}/seeds/{node.name}.iso")
        print(f"  admin kubeconfig: {out}/admin.conf   state: {state_dir}")
    return 0


def cmd_token_rotate(args: argparse.Namespace) -> int:
    from imagegen.state import rotate_token

    if not args.state and not args.plan:
        raise UsageError("token rotate: give the PLAN (its state directory is the default, as for render) or "
                         "--state DIR")
    state = args.state or str(default_state_dir(load_plan(args.plan)))
    token_id = rotate_token(Path(state), notify=lambda m: _note(f"warning: {m}"))
    print(f"new bootstrap token id {token_id} in {state}; render again to put it on the nodes")
    return 0


def cmd_token_apply(args: argparse.Namespace) -> int:
    from imagegen.state import inspect_state
    from imagegen.tokens import apply_token

    plan = load_plan(args.plan)
    state_dir = Path(args.state) if args.state else default_state_dir(plan)
    token = str(inspect_state(state_dir, plan).secrets["bootstrap-token"])
    ttl = args.ttl or plan.cluster.token_ttl
    token_id = apply_token(token, ttl, Path(args.kubeconfig), args.kubectl)
    print(f"bootstrap token {token_id} is in the cluster, valid for {ttl} from now "
          f"({'never expires' if ttl in ('0', '0s') else 'then it expires'}); nodes rendered with it can join")
    return 0


def add_core_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from imagegen.cli_operator import PLAN_HELP, add_output_flag

    v = sub.add_parser("validate", help="check a plan and report every problem")
    v.add_argument("plan", metavar="PLAN", help=PLAN_HELP)
    add_output_flag(v)
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("show", help="print a table of the plan's nodes, roles, addresses and versions")
    s.add_argument("plan", metavar="PLAN", help=PLAN_HELP)
    s.add_argument("--urls", action="store_true", help="every URL and image the nodes will fetch, by role, with "
                                                        "the mirror serving each image")
    add_output_flag(s)
    s.set_defaults(func=cmd_show)

    r = sub.add_parser("render", help="write per-node cloud-init, seed ISOs, admin.conf and manifest.json")
    r.add_argument("plan", metavar="PLAN", help=PLAN_HELP)
    r.add_argument("--out", required=True, metavar="DIR",
                   help="output directory, replaced as a whole: new, empty, or an earlier imagegen output holding "
                        "only what imagegen wrote")
    r.add_argument("--state", metavar="DIR", help="state directory with the cluster's CAs and tokens "
                                                  "(default: $XDG_STATE_HOME/imagegen/CLUSTER)")
    r.add_argument("--accept-changed-identity", action="store_true",
                   help="reuse a state made for this cluster's name with another endpoint or network, and bind "
                        "it to the plan's (the CAs and token stay the same)")
    r.add_argument("--quiet", action="store_true", help="print nothing on success")
    r.add_argument("--jobs", type=_jobs, metavar="N",
                   help="processes rendering a plan of 64 nodes or more (default: one per CPU this process may "
                        "use; 1 renders in this process alone, e.g. on a busy shared host); the output is the same")
    r.add_argument("--dry-run", action="store_true", help="write nothing; show what would change (as imagegen diff)")
    r.add_argument("--files", action="store_true", help="with --dry-run: unified diff of the non-secret files")
    r.add_argument("--exit-code", action="store_true", help="with --dry-run: exit 1 when something would change")
    add_output_flag(r)
    r.set_defaults(func=cmd_render)

    t = sub.add_parser("token", help="bootstrap token management")
    tsub = t.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    rot = tsub.add_parser("rotate", help="replace only the bootstrap token in a state directory")
    rot.add_argument("plan", nargs="?", metavar="PLAN", help="the plan; its default state directory is used "
                                                            "when --state is not given")
    rot.add_argument("--state", metavar="DIR", help="state directory (default: the plan's, as for render)")
    rot.set_defaults(func=cmd_token_rotate)
    app = tsub.add_parser("apply", help="create or refresh the state's bootstrap token in the running cluster",
                          description="Writes the token's Secret (kube-system/bootstrap-token-ID, as kubeadm does) "
                                      "with kubectl and the operator's admin.conf, valid for cluster.token_ttl "
                                      "(or --ttl) from now: run it before booting nodes rendered after the "
                                      "first token expired, e.g. after `token rotate` and a render.")
    app.add_argument("plan", metavar="PLAN", help="the cluster plan (its token_ttl, its default state directory)")
    app.add_argument("--state", metavar="DIR", help="state directory (default: the plan's, as for render)")
    app.add_argument("--kubeconfig", required=True, metavar="FILE", help="the admin.conf `imagegen render` wrote")
    app.add_argument("--kubectl", default="kubectl", metavar="BIN", help="kubectl to run (default: from PATH)")
    app.add_argument("--ttl", metavar="DURATION", help="lifetime from now, e.g. 2h (default: cluster.token_ttl; "
                                                      "0 never expires)")
    app.set_defaults(func=cmd_token_apply)


@dataclass(frozen=True)
class Command:
    """Subcommands one module adds: `module.add_parser(subparsers)` adds exactly `names`."""

    names: tuple[str, ...]
    module: str
    add_parser: str = "add_parser"
    # The pyproject extra whose packages the module may need beyond imagegen's own dependencies.
    extra: str | None = None


# Every subcommand, in --help order: the parser, --help and shell completion are built from this table. A missing
# third-party module leaves its commands listed but unavailable (exit 2 naming the module and the fix); a missing
# imagegen module is a bug and fails loudly.
COMMANDS: tuple[Command, ...] = (
    Command(("validate", "show", "render", "token"), "imagegen.cli", "add_core_parsers"),
    Command(("init", "explain", "diff", "sizes", "schema", "completion"), "imagegen.cli_operator", "add_parsers"),
    # Image and bundle builds are the VM workflow (`make vm-deps` installs '.[vm]').
    Command(("bundle",), "imagegen.bundle.cli", extra="vm"),
    Command(("image",), "imagegen.image.cli", extra="vm"),
    Command(("serve",), "imagegen.serve"),
    Command(("pxe",), "imagegen.pxe"),
    Command(("vmware",), "imagegen.vmwareovf"),
    Command(("mirror-auth",), "imagegen.mirrorauth"),
    Command(("certs",), "imagegen.certs"),
    Command(("kubeconfig",), "imagegen.kubeconfig"),
    Command(("node",), "imagegen.nodeops"),
)


def install_hint(extra: str | None) -> str:
    if extra:
        return f"pip install 'imagegen[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
    return "reinstall imagegen with its dependencies: pip install imagegen (in a checkout: pip install -e .)"


def _add_unavailable(sub: argparse._SubParsersAction, command: Command,  # type: ignore[type-arg]
                     missing: str) -> None:
    message = (f"needs the Python module {missing!r}, which is not installed; {install_hint(command.extra)}")

    def unavailable(args: argparse.Namespace) -> int:
        raise UsageError(f"{args.command}: {message}")

    for name in command.names:
        p = sub.add_parser(name, help=f"(unavailable: {message})", description=f"Unavailable: {message}.")
        # Whatever follows is accepted, so every invocation gets the message above rather than a usage error.
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=unavailable, _unavailable=True)


def add_command(sub: argparse._SubParsersAction, command: Command) -> None:  # type: ignore[type-arg]
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.partition(".")[0] == "imagegen":
            raise
        _add_unavailable(sub, command, exc.name.partition(".")[0])
        return
    getattr(module, command.add_parser)(sub)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imagegen", description="Kubernetes cluster plan -> self-configuring nodes.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"imagegen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        add_command(sub, command)
    _remember_parsers(p)
    return p


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Each subcommand's parser, so an unknown flag is reported with that subcommand's usage."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _remember_parsers(sub)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_unavailable", False):
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind (removing temporary files, releasing locks) and exit 128+signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    # Later signals are ignored while the first one unwinds, so cleanup is not cut short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return int(args.func(args))
    except PlanError as exc:
        if getattr(args, "output", "text") == "json":
            from imagegen.cli_operator import emit_json, problem_json

            emit_json(problem_json(exc))
        print(f"imagegen: {exc.render()}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"imagegen: {exc}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"imagegen: interrupted by {signal.Signals(signum).name}; temporary files removed",
              file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        # The reader went away (`imagegen ... | head`): not an error worth a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, exit 1
        if os.environ.get("IMAGEGEN_DEBUG"):
            raise
        print(f"imagegen: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
