"""Credentials for the plan's registry mirrors (`imagegen mirror-auth`): secrets, so never in the plan.

They live in the state directory (`mirror-auth.json`, 0600, written by imagegen.state under the state's lock), one
per mirror host as containerd keys them, and reach only the roles whose profile names the `mirror-auth` secret
group (imagegen.secretpolicy): control planes and workers, the nodes that pull images.

containerd 1.6/1.7 with `config_path` (hosts.toml) still reads credentials from the CRI plugin's
`registry.configs."<host:port>".auth` (docs/cri/registry.md, "Configure Registry Credentials": deprecated, with no
hosts.toml equivalent, "but it will not be removed" before 2.x; 2.x migrates it to io.containerd.cri.v1.images),
looked up by the host a request actually goes to: the mirror endpoint's `host[:port]`, not the upstream registry.
So credentials are per mirror host, and every endpoint of the plan on that host uses them.

Docker cannot authenticate to its `registry-mirrors`: dockerd only hands a mirror the docker.io credentials a pull
request carries (cri-dockerd: the kubelet's pull secret for docker.io), and has no daemon-side setting for a
mirror's own credentials. A plan with `container_runtime: docker` whose docker.io mirror has credentials is refused.

Pure functions here (plus the command's argument parsing and printing); the state file's I/O is imagegen.state's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from urllib.parse import urlsplit

from imagegen import registries
from imagegen.errors import UsageError
from imagegen.plan import Plan

STORE_NAME = "mirror-auth.json"
STORE_FORMAT = 1
CRI_V2 = "io.containerd.grpc.v1.cri"
# Registry user names seen in practice: letters, digits, . _ - @ + and Harbor robot accounts' `$` (robot$name).
# No `:` (it ends the user name in HTTP Basic auth), no spaces, nothing a shell or TOML reader could misread.
_USERNAME = re.compile(r"[A-Za-z0-9._@+$-]{1,256}")
_MAX_SECRET = 4096
_HOST = re.compile(r"[a-z0-9.-]+(:[0-9]{1,5})?|\[[0-9a-f:.]+\](:[0-9]{1,5})?")


@dataclass(frozen=True)
class Credential:
    """One mirror host's credentials: username and password, or an identity token (OAuth2 refresh token)."""

    host: str                   # the mirror endpoint's host[:port], as containerd looks it up
    username: str = ""
    password: str = ""
    identity_token: str = ""

    @property
    def kind(self) -> str:
        return "identity token" if self.identity_token else f"user {self.username}"

    def __repr__(self) -> str:  # never a secret in a traceback or a log line
        return f"Credential(host={self.host!r}, {self.kind})"


class StoreError(ValueError):
    """mirror-auth.json is malformed; the message says what, never a secret."""


# --- validation at the edge -------------------------------------------------------------------------------------

def _check_secret(what: str, value: str, fix: str) -> None:
    if not value:
        raise UsageError(f"{what}: is empty; {fix}")
    if len(value) > _MAX_SECRET:
        raise UsageError(f"{what}: is {len(value)} characters (at most {_MAX_SECRET}); {fix}")
    if not value.isprintable():
        # Shown by position only: the value itself is a secret.
        raise UsageError(f"{what}: holds a control character (a line break?) at position "
                         f"{next(i for i, c in enumerate(value) if not c.isprintable())}; {fix}")


def credential(host: str, *, username: str = "", password: str = "", identity_token: str = "") -> Credential:
    """A checked credential: a user name of the allowed characters with a password, or an identity token alone."""
    if identity_token:
        if username or password:
            raise UsageError("--username/--password-stdin: given with --token-stdin; give a user name and password, "
                             "or an identity token, not both")
        _check_secret("--token-stdin", identity_token, "pipe the registry's identity (refresh) token, one line")
        if any(c.isspace() for c in identity_token):
            raise UsageError("--token-stdin: holds white space; pipe the token alone, one line")
        return Credential(host, identity_token=identity_token)
    if not _USERNAME.fullmatch(username):
        raise UsageError(f"--username: {username[:60]!r} is not 1 to 256 letters, digits or . _ - @ + $; give the "
                         "registry account's user name (a Harbor robot account: 'robot$NAME')")
    _check_secret("--password-stdin", password, "pipe the password, one line (printf '%s' \"$PASS\" | ...)")
    return Credential(host, username=username, password=password)


def endpoint_host(url: str) -> str:
    """The host[:port] containerd contacts for a mirror URL (and keys `registry.configs` by)."""
    return urlsplit(url).netloc


def plan_endpoints(plan: Plan) -> dict[str, list[str]]:
    """host[:port] -> the plan's mirror endpoints (cluster.mirrors.*.endpoints) on it, in plan order."""
    out: dict[str, list[str]] = {}
    for mirror in plan.cluster.mirrors:
        for url in mirror.endpoints:
            out.setdefault(endpoint_host(url), []).append(url)
    return out


def host_for_endpoint(plan: Plan, endpoint: str) -> str:
    """The mirror host of `--endpoint`, which must be one of the plan's mirror endpoints."""
    known = [url for urls in plan_endpoints(plan).values() for url in urls]
    if endpoint in known:
        return endpoint_host(endpoint)
    if not known:
        raise UsageError(f"--endpoint {endpoint!r}: the plan has no registry mirrors (cluster.mirrors is empty); "
                         "add the mirror to cluster.mirrors.<registry>.endpoints first")
    near = get_close_matches(endpoint, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise UsageError(f"--endpoint {endpoint!r}: is not one of the plan's mirror endpoints "
                     f"(cluster.mirrors.*.endpoints){hint}; give one of: {', '.join(sorted(set(known)))}")


def docker_refusal(plan: Plan, hosts: Iterable[str]) -> str:
    """Why a Docker plan cannot use credentials for these hosts, or "" when it does not pull through them."""
    if plan.cluster.container_runtime != "docker":
        return ""
    used = sorted({endpoint_host(u) for u in registries.docker_mirrors(plan)} & set(hosts))
    if not used:
        return ""
    return (f"cluster.container_runtime: 'docker' cannot authenticate to registry mirrors (dockerd has no setting "
            f"for a mirror's credentials), but the state holds credentials for {', '.join(used)}, a docker.io "
            "mirror of the plan; use container_runtime: containerd, or a mirror that allows anonymous pulls and "
            "`imagegen mirror-auth remove PLAN --endpoint URL`")


def for_plan(plan: Plan, stored: dict[str, Credential]) -> tuple[Credential, ...]:
    """The credentials the plan's nodes use, sorted by host (same plan and state, same bytes); raises UsageError
    for a Docker plan whose mirrors have credentials. Credentials of hosts the plan no longer names are kept in
    the state but go nowhere."""
    refusal = docker_refusal(plan, stored)
    if refusal:
        raise UsageError(refusal)
    if plan.cluster.container_runtime != "containerd":
        return ()
    hosts = plan_endpoints(plan)
    return tuple(stored[h] for h in sorted(stored) if h in hosts)


# --- the state file ---------------------------------------------------------------------------------------------

def parse_store(data: bytes) -> dict[str, Credential]:
    """mirror-auth.json's credentials by host; StoreError naming the entry (never its secret) when malformed."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StoreError("is not valid JSON (corrupt)") from exc
    if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT or not isinstance(doc.get("hosts"), dict):
        raise StoreError(f"is not a format {STORE_FORMAT} mirror-auth file (corrupt or from another imagegen)")
    out: dict[str, Credential] = {}
    for host, entry in doc["hosts"].items():
        if not isinstance(host, str) or not _HOST.fullmatch(host):
            raise StoreError(f"names {host[:60]!r}, not a mirror host[:port]")
        if not isinstance(entry, dict) or set(entry) - {"username", "password", "identitytoken"} \
                or not all(isinstance(v, str) for v in entry.values()):
            raise StoreError(f"has a malformed entry for {host}")
        try:
            out[host] = credential(host, username=entry.get("username", ""), password=entry.get("password", ""),
                                   identity_token=entry.get("identitytoken", ""))
        except UsageError as exc:
            raise StoreError(f"has an invalid entry for {host} ({str(exc).split(';')[0]})") from None
    return out


def dump_store(creds: dict[str, Credential]) -> bytes:
    hosts: dict[str, dict[str, str]] = {}
    for host in sorted(creds):
        c = creds[host]
        hosts[host] = {"identitytoken": c.identity_token} if c.identity_token else {"username": c.username,
                                                                                   "password": c.password}
    return (json.dumps({"format": STORE_FORMAT, "hosts": hosts}, indent=2, sort_keys=True) + "\n").encode()


# --- containerd -------------------------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML basic string (TOML 1.0, "String"): quotes and backslashes escaped, anything outside printable ASCII
    as \\uXXXX or \\UXXXXXXXX, so any value reads back exactly and the file stays ASCII."""
    out = ['"']
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            if 0xD800 <= ord(ch) <= 0xDFFF:
                raise ValueError("a lone surrogate has no TOML representation")
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(f"\\U{ord(ch):08X}")
    out.append('"')
    return "".join(out)


def containerd_auth_toml(creds: Iterable[Credential]) -> str | None:
    """The CRI plugin's `registry.configs."<host>".auth` tables (config version 2) for these credentials, or None."""
    blocks = []
    for c in sorted(creds, key=lambda c: c.host):
        lines = [f"[plugins.{toml_string(CRI_V2)}.registry.configs.{toml_string(c.host)}.auth]"]
        if c.identity_token:
            lines.append(f"  identitytoken = {toml_string(c.identity_token)}")
        else:
            lines += [f"  username = {toml_string(c.username)}", f"  password = {toml_string(c.password)}"]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks) if blocks else None


# --- the command --------------------------------------------------------------------------------------------------

def _read_secret_line(what: str) -> str:
    """One line from standard input, without its line break (a terminal gets no echo from a pipe; this never
    prompts, so the secret never appears in a process list or shell history)."""
    data = sys.stdin.read(_MAX_SECRET + 2)
    if data.endswith("\n"):
        data = data[:-1]
        if data.endswith("\r"):
            data = data[:-1]
    if "\n" in data:
        raise UsageError(f"{what}: standard input holds more than one line; pipe the secret alone")
    return data


@dataclass(frozen=True)
class Listed:
    """One row of `mirror-auth list`: no secret."""

    host: str
    credential: str             # "password" or "identity token"
    username: str
    endpoints: tuple[str, ...]  # the plan's mirror endpoints on this host
    used: bool                  # rendered onto the nodes with this plan

    def line(self) -> str:
        who = f"user {self.username}" if self.username else "identity token"
        where = ", ".join(self.endpoints) or "no endpoint of the plan"
        return f"{self.host:<32} {who:<24} {'used' if self.used else 'NOT USED'}: {where}"


def listing(plan: Plan, stored: dict[str, Credential]) -> list[Listed]:
    """What `list` prints: per stored host, the kind of credential and the plan endpoints using it."""
    endpoints = plan_endpoints(plan)
    used = {c.host for c in for_plan(plan, stored)} if not docker_refusal(plan, stored) else set()
    return [Listed(h, "identity token" if stored[h].identity_token else "password", stored[h].username,
                   tuple(endpoints.get(h, ())), h in used) for h in sorted(stored)]


def cmd_mirror_auth(args: argparse.Namespace) -> int:
    from imagegen.cli import default_state_dir
    from imagegen.cli_operator import load_checked
    from imagegen.state import mirror_auth_list, mirror_auth_remove, mirror_auth_set

    plan = load_checked(args.plan)
    state_dir = Path(args.state) if args.state else default_state_dir(plan)
    if args.action == "list":
        rows = listing(plan, mirror_auth_list(state_dir, plan))
        if args.output == "json":
            print(json.dumps([{"host": r.host, "credential": r.credential, "username": r.username,
                               "endpoints": list(r.endpoints), "used": r.used} for r in rows], indent=2))
        else:
            print("\n".join(r.line() for r in rows) if rows else f"no mirror credentials in {state_dir}")
        return 0
    host = host_for_endpoint(plan, args.endpoint)
    if args.action == "remove":
        removed = mirror_auth_remove(state_dir, plan, host)
        print(f"{'removed the credentials of' if removed else 'no credentials stored for'} {host} in {state_dir}"
              + ("; render again to take them off the nodes" if removed else ""))
        return 0
    if args.plan == "-":
        raise UsageError("mirror-auth set: the plan cannot come from standard input (the secret does); give the "
                         "plan's file name")
    if args.password_stdin == args.token_stdin:
        raise UsageError("mirror-auth set: give --username U --password-stdin, or --token-stdin; the secret is "
                         "read from standard input, never from the command line")
    if args.password_stdin:
        cred = credential(host, username=args.username or "", password=_read_secret_line("--password-stdin"))
    else:
        cred = credential(host, username=args.username or "", identity_token=_read_secret_line("--token-stdin"))
    refusal = docker_refusal(plan, [host])
    if refusal:
        raise UsageError(refusal)
    mirror_auth_set(state_dir, plan, cred, notify=lambda m: print(f"imagegen: warning: {m}", file=sys.stderr))
    users = ", ".join(plan_endpoints(plan)[host])
    print(f"stored {cred.kind} for {host} (used for {users}) in {state_dir}; render again to put it on the "
          "control planes and workers")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from imagegen.cli_operator import PLAN_HELP, add_output_flag

    p = sub.add_parser("mirror-auth", help="credentials for the plan's registry mirrors, kept in the state",
                       description="Stores, removes or lists credentials for a registry mirror endpoint of the "
                                   "plan (cluster.mirrors.*.endpoints) in the state directory (0600). A render "
                                   "puts them into containerd's config.toml (0600) on control planes and workers "
                                   "only. Secrets are read from standard input, never printed.")
    asub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("set", "store credentials for a mirror endpoint (replacing any for its host)"),
                         ("remove", "delete a mirror endpoint's credentials"),
                         ("list", "mirror hosts with credentials and the plan's endpoints using them; no secret")):
        a = asub.add_parser(action, help=text)
        a.add_argument("plan", metavar="PLAN", help=PLAN_HELP)
        a.add_argument("--state", metavar="DIR", help="state directory (default: the plan's, as for render)")
        if action != "list":
            a.add_argument("--endpoint", required=True, metavar="URL",
                           help="one of the plan's mirror endpoints, as written in cluster.mirrors.*.endpoints")
        if action == "set":
            a.add_argument("--username", metavar="USER", help="the mirror account's user name")
            a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
            a.add_argument("--token-stdin", action="store_true",
                           help="read an identity (OAuth2 refresh) token from standard input instead")
        if action == "list":
            add_output_flag(a)
        a.set_defaults(func=cmd_mirror_auth)
