"""The operator's admin kubeconfig, signed by the cluster CA ahead of boot, and its renewal (day 2)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from cryptography import x509

from imagegen.errors import UsageError
from imagegen.plan import Plan
from imagegen.state import ClusterState

if TYPE_CHECKING:
    from imagegen.render import Artifact


def admin_kubeconfig(plan: Plan, state: ClusterState) -> bytes:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    name = plan.cluster.name
    user = f"{name}-admin"
    # The address, not the name: the operator's machine need not resolve the endpoint name; it is a SAN.
    server = f"https://{plan.endpoint_address}:{plan.endpoint.port}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server,
                                                 "certificate-authority-data": b64(state.ca.cert_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(state.admin.cert_pem),
                                          "client-key-data": b64(state.admin.key_pem)}}],
        "contexts": [{"name": f"{user}@{name}", "context": {"cluster": name, "user": user}}],
        "current-context": f"{user}@{name}",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


# -- Day 2: a new admin certificate before the old one expires ---------------------------------------------------

def client_certificate(kubeconfig: bytes) -> x509.Certificate:
    """The client certificate of a kubeconfig's first user (admin.conf has one); ValueError when there is none."""
    try:
        config = yaml.safe_load(kubeconfig)
        data = config["users"][0]["user"]["client-certificate-data"]
        return x509.load_pem_x509_certificate(base64.b64decode(data, validate=True))
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError("holds no readable client-certificate-data") from exc


def renew_admin(plan: Plan, plan_file: Path, state_dir: Path, out: Path,
                notify: Callable[[str], None]) -> x509.Certificate:
    """Issue a new admin client certificate from the state's CA (the group VersionRules.admin_group names), store
    it in the state (pki/admin.{crt,key}, replacing the old pair) and rewrite OUT/admin.conf (0600) and the
    admin.conf hash in OUT/manifest.json, each atomically, under the output's lock then the state's (render's
    order). The next render writes the same admin.conf. Returns the new certificate (public)."""
    from imagegen import pki
    from imagegen.filelock import locked
    from imagegen.render import Artifact
    from imagegen.state import LOCK_FILE, _cluster_state, _write_secret, inspect_state
    from imagegen.writer import check_output_dir, check_separate, locked_output

    check_separate(out, state_dir=state_dir, plan_file=plan_file)
    check_output_dir(out)
    if not (out / "admin.conf").is_file() or not (out / "manifest.json").is_file():
        raise UsageError(f"--out {out}: no admin.conf and manifest.json here; render first (imagegen render)")
    if not (state_dir / "state.json").is_file():
        raise UsageError(f"--state {state_dir}: no imagegen state here; use the state the output was rendered with")
    with locked_output(out, on_wait=notify), locked(state_dir / LOCK_FILE, f"--state {state_dir}", on_wait=notify):
        pki_dir = state_dir / "pki"
        old = {suffix: pki_dir / f"admin.{suffix}" for suffix in ("crt", "key")}
        aside = {suffix: pki_dir / f".admin.{suffix}.renew.imagegen-tmp" for suffix in old}
        # The old pair is set aside (an expired one would fail verification) and comes back on any failure.
        for suffix, path in old.items():
            if path.exists():
                os.replace(path, aside[suffix])
        try:
            found = inspect_state(state_dir, plan)
            pair = pki.new_leaf(found.pairs["ca"], "kubernetes-admin", org=plan.cluster.rules.admin_group,
                                client=True)
            _write_secret(pki_dir / "admin.key", pair.key_pem)
            _write_secret(pki_dir / "admin.crt", pair.cert_pem)
            found.pairs["admin"] = pair
            state = _cluster_state(plan, found)
        except BaseException:
            for suffix, path in old.items():
                if aside[suffix].exists():
                    os.replace(aside[suffix], path)
            raise
        for path in aside.values():
            path.unlink(missing_ok=True)
        admin = Artifact(admin_kubeconfig(plan, state), 0o600)
        manifest_path = out / "manifest.json"
        manifest = json.loads(manifest_path.read_bytes())
        manifest.setdefault("files", {})["admin.conf"] = admin.sha256  # as render.render_manifest writes it
        _replace_in_output(out, {"admin.conf": admin,
                                 "manifest.json": Artifact((json.dumps(manifest, indent=2) + "\n").encode(),
                                                           stat.S_IMODE(manifest_path.stat().st_mode))})
    return pair.cert


def _replace_in_output(out: Path, files: dict[str, Artifact]) -> None:
    """Replace existing files of an output, each with one rename. The new files are written in a private directory
    beside OUT named like a render's temporary one, so what a killed run leaves is removed by the next render."""
    from imagegen.writer import _tmp_prefix

    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out.absolute()), dir=out.absolute().parent))
    try:
        for rel, artifact in files.items():
            fd = os.open(tmp / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, artifact.mode)
            try:
                view = memoryview(artifact.data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp / rel, artifact.mode)
        for rel in files:
            os.replace(tmp / rel, out / rel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cmd_kubeconfig_renew(args: argparse.Namespace) -> int:
    import sys

    from imagegen.cli import default_state_dir
    from imagegen.plan import load_plan

    plan = load_plan(args.plan)
    state_dir = Path(args.state) if args.state else default_state_dir(plan)
    out = Path(args.out)
    cert = renew_admin(plan, Path(args.plan), state_dir, out,
                       notify=lambda m: print(f"imagegen: {m}", file=sys.stderr, flush=True))
    print(f"{out}/admin.conf: new client certificate from the cluster CA ({cert.subject.rfc4514_string()}), valid "
          f"until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; the state's pki/admin.crt and admin.key were "
          "replaced, so later renders write the same admin.conf")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    k = sub.add_parser("kubeconfig", help="the operator's admin.conf")
    ksub = k.add_subparsers(dest="kubeconfig_command", required=True, metavar="ACTION")
    r = ksub.add_parser("renew", help="a new admin.conf client certificate from the state's CA",
                        description="Issues a new admin client certificate (one year) from the state's Kubernetes "
                                    "CA, replaces pki/admin.crt and admin.key in the state and rewrites "
                                    "OUT/admin.conf (0600) and its hash in OUT/manifest.json, each atomically. "
                                    "Nothing else changes; the cluster needs nothing (it trusts the CA). "
                                    "`imagegen certs PLAN --out OUT` shows when the current one expires.")
    r.add_argument("plan", metavar="PLAN", help="the cluster plan (its default state directory)")
    r.add_argument("--state", metavar="DIR", help="state directory (default: the plan's, as for render)")
    r.add_argument("--out", required=True, metavar="DIR", help="the output `imagegen render` wrote")
    r.set_defaults(func=cmd_kubeconfig_renew)
