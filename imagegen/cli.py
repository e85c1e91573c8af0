"""The `imagegen` command: parses arguments, calls the library, prints. Exit 0 ok, 2 bad input, 1 failure."""

from __future__ import annotations

import argparse
import os
import sys
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


def cmd_render(args: argparse.Namespace) -> int:
    from imagegen.render import render_cluster
    from imagegen.state import ensure_state
    from imagegen.writer import check_output_dir, write_tree

    plan = load_plan(args.plan)
    out = Path(args.out)
    check_output_dir(out)
    state_dir = Path(args.state) if args.state else default_state_dir(plan)
    state = ensure_state(state_dir, plan)
    show_progress = not args.quiet and len(plan.nodes) >= PROGRESS_FROM

    def progress(node: Node, done: int, total: int) -> None:
        if show_progress:
            print(f"[{done}/{total}] {node.name} ({node.role})", file=sys.stderr, flush=True)

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

    token_id = rotate_token(Path(args.state))
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
    r.add_argument("--out", required=True, help="output directory (replaced as a whole)")
    r.add_argument("--state", help="state directory with the cluster's CAs and tokens "
                                   "(default: $XDG_STATE_HOME/imagegen/CLUSTER)")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PlanError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"imagegen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, exit 1
        if os.environ.get("IMAGEGEN_DEBUG"):
            raise
        print(f"imagegen: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
