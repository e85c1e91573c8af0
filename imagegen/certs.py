"""Day 2: when the cluster's certificates made ahead of boot expire, read from the state directory.

The CAs last ten years and the operator's admin certificate (admin.conf) one year, like kubeadm's. The kubeadm
certificates on the control planes (API server, etcd peers, ...) are made on the nodes by kubeadm and are not in
the state; `kubeadm certs check-expiration` on a control plane reports those.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from imagegen.plan import Plan
from imagegen.state import inspect_state

WARN_DAYS = 30
_LABELS = {"ca": "Kubernetes CA", "front-proxy-ca": "front-proxy CA", "etcd/ca": "etcd CA",
           "admin": "admin.conf client certificate", "registry-ca": "registry CA", "registry": "registry certificate"}


@dataclass(frozen=True)
class CertExpiry:
    name: str
    subject: str
    not_after: dt.datetime
    days_left: int

    @property
    def status(self) -> str:
        if self.days_left < 0:
            return "expired"
        return "renew soon" if self.days_left < WARN_DAYS else "ok"


def state_expiries(state_dir: Path, plan: Plan, now: dt.datetime | None = None) -> list[CertExpiry]:
    """Every certificate of the (verified, unchanged) state, soonest expiry first."""
    now = now or dt.datetime.now(dt.UTC)
    found = inspect_state(state_dir, plan)
    out = []
    for stem, pair in found.pairs.items():
        cert = pair.cert
        not_after = cert.not_valid_after_utc
        out.append(CertExpiry(_LABELS.get(stem, stem), cert.subject.rfc4514_string(), not_after,
                              (not_after - now).days))
    return sorted(out, key=lambda c: c.not_after)


def admin_conf_expiry(path: Path, now: dt.datetime | None = None) -> CertExpiry:
    """The client certificate inside an existing admin.conf (it may be older than the state's, or newer)."""
    from imagegen.errors import UsageError
    from imagegen.kubeconfig import client_certificate

    now = now or dt.datetime.now(dt.UTC)
    try:
        cert = client_certificate(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror}); render first or check --out") from None
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}; render again or `imagegen kubeconfig renew`") from None
    not_after = cert.not_valid_after_utc
    return CertExpiry(f"{path.name} in --out", cert.subject.rfc4514_string(), not_after, (not_after - now).days)


def expiry_table(items: list[CertExpiry]) -> str:
    lines = [f"{'certificate':<32} {'expires (UTC)':<20} {'days':>6}  status"]
    for c in items:
        lines.append(f"{c.name:<32} {c.not_after:%Y-%m-%d %H:%M}     {c.days_left:>6}  {c.status}")
    lines.append("admin.conf: when it is close to expiry, `imagegen kubeconfig renew PLAN --out OUT` (a new one "
                 "from the same CA).\nControl-plane certificates: `kubeadm certs check-expiration` on a control "
                 "plane; the imagegen-cert-renew timer renews them 30 days ahead.")
    return "\n".join(lines)


def cmd_certs(args: argparse.Namespace) -> int:
    import json

    from imagegen.cli import default_state_dir
    from imagegen.errors import UsageError
    from imagegen.plan import load_plan

    plan = load_plan(args.plan)
    state_dir = Path(args.state) if args.state else default_state_dir(plan)
    if not (state_dir / "state.json").is_file():
        raise UsageError(f"--state {state_dir}: no imagegen state here; run `imagegen render` first")
    items = state_expiries(state_dir, plan)
    if args.out:
        items.append(admin_conf_expiry(Path(args.out) / "admin.conf"))
        items.sort(key=lambda c: c.not_after)
    if args.output == "json":
        print(json.dumps([{"certificate": c.name, "subject": c.subject,
                           "not_after": c.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), "days_left": c.days_left,
                           "status": c.status} for c in items], indent=2))
    else:
        print(expiry_table(items))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from imagegen.cli_operator import add_output_flag

    p = sub.add_parser("certs", help="when the state's CAs and the admin.conf certificate expire",
                       description="Reads and verifies the state directory (never changes it) and lists its "
                                   f"certificates, soonest expiry first; 'renew soon' under {WARN_DAYS} days.")
    p.add_argument("plan", metavar="PLAN", help="the cluster plan (its default state directory)")
    p.add_argument("--state", metavar="DIR", help="state directory (default: the plan's, as for render)")
    p.add_argument("--out", metavar="DIR", help="also the client certificate of OUT/admin.conf (a render output)")
    add_output_flag(p)
    p.set_defaults(func=cmd_certs)
