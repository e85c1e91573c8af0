"""The `imagegen` command: parses arguments, calls the library, prints. Exit 0 ok, 2 bad input, 1 failure."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from imagegen import __version__
from imagegen.errors import PlanError, UsageError
from imagegen.plan import Node, Plan, load_plan

PROGRESS_FROM = 20  # nodes; smaller plans render in a blink and print only the summary


def default_state_dir(plan: Plan) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imagegen" / plan.cluster.name


def cmd_validate(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    print(f"{args.plan}: ok ({plan.cluster.name}, Kubernetes {plan.cluster.kubernetes_version}, "
          f"{len(plan.nodes)} nodes)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from imagegen.show import plan_table

    print(plan_table(load_plan(args.plan)))
    return 0


def _note(message: str) -> None:
    print(f"imagegen: {message}", file=sys.stderr, flush=True)


def cmd_render(args: argparse.Namespace) -> int:
    from imagegen.render import render_cluster
    from imagegen.state import check_state_dir, open_state
    from imagegen.writer import check_output_dir, check_separate, locked_output, write_tree

    plan = load_plan(args.plan)
    out = Path(args.out)
    state_dir = Path(args.state) if args.state else default_state_dir(plan)
    # Every refusal before anything is written: not the output's parent, not the state directory, not a key.
    check_separate(out, state_dir=state_dir, plan_file=Path(args.plan))
    check_output_dir(out)
    check_state_dir(state_dir, plan, accept_changed_identity=args.accept_changed_identity)
    show_progress = not args.quiet and len(plan.nodes) >= PROGRESS_FROM

    def progress(node: Node, done: int, total: int) -> None:
        if show_progress:
            print(f"[{done}/{total}] {node.name} ({node.role})", file=sys.stderr, flush=True)

    with locked_output(out, on_wait=_note) as leftovers:
        if leftovers:
            _note(f"removed {len(leftovers)} leftover(s) of interrupted renders beside {out}")
        with open_state(state_dir, plan, accept_changed_identity=args.accept_changed_identity,
                        notify=lambda m: _note(f"warning: {m}")) as state:
            artifacts = render_cluster(plan, state, progress)
            write_tree(out, artifacts)
    if not args.quiet:
        seeds = sum(1 for p in artifacts if p.startswith("seeds/"))
        size = sum(len(a.data) for a in artifacts.values())
        print(f"rendered {plan.cluster.name}: {len(plan.nodes)} nodes, {seeds} seed ISOs, "
              f"{len(artifacts)} files, {size / 1024:.0f} KiB -> {out}")
        for node in plan.nodes:
            print(f"  {node.name:<20} {node.role:<14} {node.ip!s:<15} {out}/seeds/{node.name}.iso")
        print(f"  admin kubeconfig: {out}/admin.conf   state: {state_dir}")
    return 0


def cmd_token_rotate(args: argparse.Namespace) -> int:
    from imagegen.state import rotate_token

    token_id = rotate_token(Path(args.state), notify=lambda m: _note(f"warning: {m}"))
    print(f"new bootstrap token id {token_id} in {args.state}; render again to put it on the nodes")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imagegen", description="Kubernetes cluster plan -> self-configuring nodes.")
    p.add_argument("--version", action="version", version=f"imagegen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check a plan and report every problem")
    v.add_argument("plan")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("show", help="print a table of the plan's nodes, roles, addresses and versions")
    s.add_argument("plan")
    s.set_defaults(func=cmd_show)

    r = sub.add_parser("render", help="write per-node cloud-init, seed ISOs, admin.conf and manifest.json")
    r.add_argument("plan")
    r.add_argument("--out", required=True, help="output directory, replaced as a whole: new, empty, or an earlier "
                                                  "imagegen output holding only what imagegen wrote")
    r.add_argument("--state", help="state directory with the cluster's CAs and tokens "
                                   "(default: $XDG_STATE_HOME/imagegen/CLUSTER)")
    r.add_argument("--accept-changed-identity", action="store_true",
                   help="reuse a state made for this cluster's name with another endpoint or network, and bind "
                        "it to the plan's (the CAs and token stay the same)")
    r.add_argument("--quiet", action="store_true", help="print nothing on success")
    r.set_defaults(func=cmd_render)

    t = sub.add_parser("token", help="bootstrap token management")
    tsub = t.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    rot = tsub.add_parser("rotate", help="replace only the bootstrap token in a state directory")
    rot.add_argument("--state", required=True)
    rot.set_defaults(func=cmd_token_rotate)

    for module in ("imagegen.image.cli", "imagegen.bundle.cli"):
        try:
            __import__(module)
        except ImportError:
            continue
        sys.modules[module].add_parser(sub)  # type: ignore[attr-defined]
    return p


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
    args = parser.parse_args(argv)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return int(args.func(args))
    except PlanError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"imagegen: {exc}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"imagegen: interrupted by {signal.Signals(signum).name}; temporary files removed",
              file=sys.stderr)
        return 128 + signum
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
