"""The operator's commands: `init`, `explain`, `diff`, `schema`, `completion`, and the `-o json` forms of
`validate`, `show` and `render`. Parsing and printing only; the work is in initplan, explain, diffing, planschema
and completion. JSON keys are stable (README, "Output for scripts")."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagegen.errors import PlanError, UsageError
from imagegen.plan import Plan, load_plan

if TYPE_CHECKING:
    from imagegen.render import RenderStats

OUTPUT_FORMATS = ("text", "json")
PLAN_HELP = "the cluster plan (YAML); '-' reads it from standard input"


def add_output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text",
                   help="text for people (default) or json for scripts (stable keys, see the README)")


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def plan_warnings(plan: Plan) -> list[str]:
    """What may work but is outside what imagegen knows: a patch newer than the version table, and version pairs
    (runtime, CNI) outside profiles/compat/version-pairs.yaml. Warnings, not errors: exit status stays 0."""
    from imagegen.compat import compat_problems
    from imagegen.errors import Problem
    from imagegen.versiontable import version_table

    out = []
    warning = version_table().warning(plan.cluster.kubernetes_version)
    if warning:
        out.append(warning)
    out += [str(Problem(*p)) for p in compat_problems(plan)]
    return out


def warn_unknown_version(plan: Plan) -> None:
    for warning in plan_warnings(plan):
        print(f"imagegen: warning: {warning}", file=sys.stderr)


def load_checked(path: str) -> Plan:
    plan = load_plan(path)
    warn_unknown_version(plan)
    return plan


# -- validate / show / render JSON ------------------------------------------------------------------------------

def problem_json(exc: PlanError) -> dict[str, Any]:
    from imagegen.errors import MISSING

    return {"plan": exc.source, "valid": False,
            "problems": [{"field": p.field, "value": None if p.value is MISSING else _jsonable(p.value),
                          "message": p.message, "fix": p.fix} for p in exc.problems]}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def plan_json(plan: Plan) -> dict[str, Any]:
    c, e = plan.cluster, plan.endpoint
    return {
        "cluster": c.name, "kubernetes_version": str(c.kubernetes_version),
        "kubeadm_api": c.rules.kubeadm_api_version, "container_runtime": c.container_runtime, "cni": c.cni,
        "kube_proxy_mode": c.kube_proxy_mode, "distro": c.distro,
        "endpoint": {"mode": e.mode, "name": e.name, "address": str(plan.endpoint_address), "port": e.port},
        "networks": {"nodes": str(plan.network.cidr), "gateway": str(plan.network.gateway),
                     "pods": str(c.pod_cidr), "services": str(c.service_cidr)},
        "nodes": [{"name": n.name, "role": n.role, "ip": str(n.ip), "mac": n.mac,
                   "kubernetes": str(c.kubernetes_version) if n.is_kubernetes else None} for n in plan.nodes],
    }


def cmd_validate(args: argparse.Namespace) -> int:
    if args.output != "json":
        plan = load_checked(args.plan)
        print(f"{args.plan}: ok ({plan.cluster.name}, Kubernetes {plan.cluster.kubernetes_version}, "
              f"{len(plan.nodes)} nodes)")
        return 0
    try:
        plan = load_checked(args.plan)
    except PlanError as exc:
        emit_json(problem_json(exc))
        print(f"imagegen: {exc.render()}", file=sys.stderr)
        return 2
    emit_json({"plan": args.plan, "valid": True, "problems": [], "warnings": plan_warnings(plan),
               **plan_json(plan)})
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    plan = load_checked(args.plan)
    if getattr(args, "urls", False):
        from imagegen.fetches import fetches_by_role, fetches_text

        data = fetches_by_role(plan)
        emit_json(data) if args.output == "json" else print(fetches_text(data))
        return 0
    if args.output == "json":
        emit_json(plan_json(plan))
    else:
        from imagegen.show import plan_table

        print(plan_table(plan))
    return 0


def cmd_sizes(args: argparse.Namespace) -> int:
    """Per node of a render output: user-data raw and gzip sizes and the platforms each fits."""
    from imagegen import userdata

    out = Path(args.out)
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        reports = []
        for n in manifest["nodes"]:
            base = out / "nodes" / n["name"]
            reports.append(userdata.report(n["name"], n["role"], (base / "user-data").read_bytes(),
                                           (base / "user-data.gz").read_bytes()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{out}: not a render output with user-data.gz files ({exc}); render it first") from None
    if args.output == "json":
        emit_json({"out": str(out), "nodes": reports})
    else:
        print(userdata.sizes_text(reports))
    return 0


def render_summary(plan: Plan, stats: RenderStats, out: Path, state_dir: Path) -> dict[str, Any]:
    return {
        "cluster": plan.cluster.name, "out": str(out), "state": str(state_dir),
        "files": stats.files, "bytes": stats.bytes, "seeds": stats.seeds,
        "admin_kubeconfig": str(out / "admin.conf"),
        "nodes": [{"name": n.name, "role": n.role, "ip": str(n.ip), "seed": str(out / "seeds" / f"{n.name}.iso")}
                  for n in plan.nodes],
    }


# -- init -------------------------------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    from imagegen.initplan import InitOptions, defaults_text, plan_text, read_ssh_key

    if args.print_defaults:
        sys.stdout.write(defaults_text())
        return 0
    keys: tuple[str, ...] = ()
    for path in args.ssh_key or ():
        keys += read_ssh_key(path)
    options = InitOptions(
        name=args.name, control_planes=args.control_planes, workers=args.workers,
        load_balancers=args.load_balancers, endpoint=args.endpoint, vip=args.vip,
        endpoint_name=args.endpoint_name or "", network=args.network, gateway=args.gateway,
        dns=tuple(args.dns or ()), first_ip=args.first_ip, ssh_keys=keys,
        kubernetes_version=args.kubernetes_version or "", runtime=args.runtime, cni=args.cni, distro=args.distro,
        image_repository=args.image_repository or "", registry_mirrors=tuple(args.registry_mirror or ()),
        package_repository=args.package_repository or "", cni_manifest=args.cni_manifest or "",
        kube_vip_image=args.kube_vip_image or "")
    try:
        text = plan_text(options)
    except PlanError as exc:
        raise UsageError("the answers make an invalid plan:\n" + "\n".join(f"  - {p}" for p in exc.problems)
                         ) from None
    if args.file in (None, "-"):
        sys.stdout.write(text)
        return 0
    target = Path(args.file)
    if target.exists() and not args.force:
        raise UsageError(f"{target}: exists; pass --force to replace it, or choose another file")
    try:
        target.write_text(text)
    except OSError as exc:
        raise UsageError(f"{target}: cannot be written ({exc.strerror})") from None
    print(f"wrote {target}: check it with 'imagegen validate {target}', render with "
          f"'imagegen render {target} --out DIR'", file=sys.stderr)
    return 0


# -- explain / diff / schema / completion -----------------------------------------------------------------------

def cmd_explain(args: argparse.Namespace) -> int:
    from imagegen.explain import explain_node, explain_text

    plan = load_checked(args.plan)
    try:
        data = explain_node(plan, args.node)
    except LookupError:
        names = ", ".join(n.name for n in plan.nodes)
        raise UsageError(f"{args.plan}: no node named '{args.node}'; the plan's nodes: {names}") from None
    if args.output == "json":
        emit_json(data)
    else:
        print(explain_text(data))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from imagegen.cli import default_state_dir
    from imagegen.diffing import diff_output, diff_text
    from imagegen.writer import check_output_dir, check_separate

    plan = load_checked(args.plan)
    state_dir = Path(args.state) if args.state else default_state_dir(plan)
    # What render would refuse, diff refuses too (exit 2): both only read.
    check_separate(Path(args.out), state_dir=state_dir, plan_file=Path(args.plan))
    check_output_dir(Path(args.out))
    result = diff_output(plan, Path(args.out), state_dir,
                         accept_changed_identity=getattr(args, "accept_changed_identity", False),
                         files=getattr(args, "files", False))
    if args.output == "json":
        emit_json(result.as_json())
    else:
        print(diff_text(result))
    return 1 if getattr(args, "exit_code", False) and result.changed else 0


def cmd_schema(args: argparse.Namespace) -> int:
    from imagegen.planschema import generated_text

    sys.stdout.write(generated_text())
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from imagegen.cli import build_parser
    from imagegen.completion import SHELLS

    sys.stdout.write(SHELLS[args.shell](build_parser()))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    i = sub.add_parser("init", help="write a commented starting plan from a few answers",
                       description="Write a plan that validates and renders as written. Addresses are laid out "
                                   "from --first-ip: load balancers, control planes, workers; MACs are derived "
                                   "from the addresses (replace them with your NICs').")
    i.add_argument("file", nargs="?", metavar="PLAN", help="file to write (default: standard output)")
    i.add_argument("--force", action="store_true", help="replace an existing PLAN")
    i.add_argument("--print-defaults", action="store_true", help="print every optional field with its default")
    i.add_argument("--name", default="cluster", help="cluster name (default: cluster)")
    i.add_argument("--control-planes", type=int, default=1, metavar="N", help="default 1")
    i.add_argument("--workers", type=int, default=2, metavar="N", help="default 2")
    i.add_argument("--load-balancers", type=int, metavar="N", help="default 2 with --endpoint load-balancer")
    i.add_argument("--endpoint", choices=("load-balancer", "kube-vip", "single"),
                   help="default: single with one control plane, else kube-vip")
    i.add_argument("--vip", metavar="IP", help="API endpoint address (default: the network's 10th address)")
    i.add_argument("--endpoint-name", metavar="DNS", help="API endpoint name (default CLUSTER-api)")
    i.add_argument("--network", default="192.168.10.0/24", metavar="CIDR", help="node network (default "
                                                                                 "192.168.10.0/24)")
    i.add_argument("--gateway", metavar="IP", help="default: the network's first address")
    i.add_argument("--dns", action="append", metavar="IP", help="DNS server, repeatable (default: the gateway)")
    i.add_argument("--first-ip", metavar="IP", help="first node address (default: the network's 11th)")
    i.add_argument("--ssh-key", action="append", metavar="FILE", help="public key file, repeatable "
                                                                      "(e.g. ~/.ssh/id_ed25519.pub)")
    i.add_argument("--kubernetes-version", metavar="V", help="1.33 (newest known patch) or 1.33.7 (default: "
                                                             "the newest in the table)")
    i.add_argument("--runtime", choices=("containerd", "docker"), default="containerd")
    i.add_argument("--cni", choices=("calico", "flannel", "host-gw"), default="calico")
    i.add_argument("--distro", choices=("debian-12", "ubuntu-22.04", "ubuntu-24.04"), default="ubuntu-24.04")
    i.add_argument("--image-repository", metavar="REPO", help="private mirror of registry.k8s.io, e.g. "
                                                              "registry.example.internal/k8s")
    i.add_argument("--registry-mirror", action="append", metavar="URL", help="containerd mirror for docker.io, "
                                                                             "repeatable")
    i.add_argument("--package-repository", metavar="URL", help="Kubernetes apt repository mirror")
    i.add_argument("--cni-manifest", metavar="URL|PATH", help="where nodes fetch the CNI manifest (default: the "
                                                              "project's release on GitHub)")
    i.add_argument("--kube-vip-image", metavar="IMAGE", help="kube-vip image, e.g. from your mirror (default: "
                                                             "ghcr.io/kube-vip/kube-vip)")
    i.set_defaults(func=cmd_init)

    e = sub.add_parser("explain", help="what one node will do: role, addresses, steps, files, packages, images")
    e.add_argument("plan", metavar="PLAN", help=PLAN_HELP)
    e.add_argument("node", metavar="NODE", help="a node name from the plan")
    add_output_flag(e)
    e.set_defaults(func=cmd_explain)

    d = sub.add_parser("diff", help="what a render would change in an existing output, and why; writes nothing",
                       description="Compare a render of PLAN with OUT's manifest.json and files. Writes nothing. "
                                   "Exit 0 (or 1 with --exit-code when something would change), 2 bad input.")
    d.add_argument("plan", metavar="PLAN", help=PLAN_HELP)
    add_diff_flags(d)
    d.set_defaults(func=cmd_diff)

    z = sub.add_parser("sizes", help="user-data sizes per node, raw and gzip, and the cloud platforms each fits",
                       description="Reads a render output (OUT/nodes/*/user-data and user-data.gz). Limits: EC2 "
                                   "16384 bytes raw, OpenStack Nova 65535 bytes base64, Azure 65535 bytes, GCE "
                                   "262144 bytes per metadata value.")
    z.add_argument("out", metavar="OUT", help="a directory imagegen render wrote")
    add_output_flag(z)
    z.set_defaults(func=cmd_sizes)

    s = sub.add_parser("schema", help="print the plan's JSON Schema (schema/plan.schema.json)")
    s.set_defaults(func=cmd_schema)

    c = sub.add_parser("completion", help="print a shell completion script",
                       description="bash: eval \"$(imagegen completion bash)\"; zsh: the same with zsh; "
                                   "fish: imagegen completion fish | source")
    c.add_argument("shell", choices=("bash", "zsh", "fish"))
    c.set_defaults(func=cmd_completion)


def add_diff_flags(d: argparse.ArgumentParser) -> None:
    d.add_argument("--out", required=True, metavar="DIR", help="the existing output to compare with")
    d.add_argument("--state", metavar="DIR", help="state directory (default: $XDG_STATE_HOME/imagegen/CLUSTER)")
    d.add_argument("--accept-changed-identity", action="store_true", help="as for render")
    d.add_argument("--files", action="store_true", help="also print a unified diff of every non-secret file")
    d.add_argument("--exit-code", action="store_true", help="exit 1 when something would change")
    add_output_flag(d)
