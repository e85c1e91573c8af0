"""The state directory: the cluster's secrets, made once, verified and reused on every render.

Layout (directories 0700, files 0600):
  state.json                 format, cluster name, cluster id and the identity the state is bound to
  state.lock                 held (flock) by a render or token rotation for its whole run
  pki/ca.{crt,key}           Kubernetes CA
  pki/front-proxy-ca.{crt,key}
  pki/etcd/ca.{crt,key}
  pki/sa.{key,pub}           service-account signing key pair
  pki/admin.{crt,key}        the operator's client certificate (admin.conf)
  pki/registry-ca.{crt,key}, pki/registry.{crt,key}   only when the plan has a registry node
  bootstrap-token, certificate-key, vrrp-password, harbor-admin-password, harbor-db-password
  mirror-auth.json           registry mirror credentials (`imagegen mirror-auth`), only when some were set

Rules: a new state is made whole, in a temporary directory moved into place with state.json last. An existing
state is verified before use (keys match certificates, leaves chain to their CA, nothing expired, token and key
formats) and only ever completed with items of which nothing exists yet (a registry when the plan gains one, a
re-issued admin certificate after both its files were deleted); one half of a pair is never made. CAs, the
service-account keys, the token and the certificate key are never remade in an existing state.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from imagegen import mirrorauth, pki
from imagegen.errors import UsageError
from imagegen.filelock import locked
from imagegen.paths import check_creatable, make_dirs
from imagegen.plan import Plan

STATE_FORMAT = 2
KNOWN_FORMATS = (1, 2)  # 1: cluster name only (upgraded in place to 2 on first use)
LOCK_FILE = "state.lock"
_MAX_FILE = 1 << 20  # bytes; every state file is a few KiB at most
_TMP_SUFFIX = ".imagegen-tmp"
_NEW_PREFIX = ".imagegen-new-"

_TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
_CERT_KEY = re.compile(r"[0-9a-f]{64}")
_VRRP = re.compile(r"[A-Za-z0-9]{8}")  # keepalived reads at most 8 characters of auth_pass
_PASSWORD = re.compile(r"(?=[^a-z]*[a-z])(?=[^A-Z]*[A-Z])(?=[^0-9]*[0-9])[A-Za-z0-9]{8,128}")  # Harbor's rule
_CLUSTER_ID = re.compile(r"[0-9a-f]{32}")

Notify = Callable[[str], None]


def _warn(message: str) -> None:
    print(f"imagegen: warning: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ClusterState:
    cluster_name: str
    ca: pki.KeyPair
    front_proxy_ca: pki.KeyPair
    etcd_ca: pki.KeyPair
    sa_key: bytes
    sa_pub: bytes
    admin: pki.KeyPair
    bootstrap_token: str
    certificate_key: str
    registry_ca: pki.KeyPair | None = None
    registry_cert: pki.KeyPair | None = None
    harbor_admin_password: str | None = None
    harbor_db_password: str | None = None
    vrrp_password: str | None = None
    cluster_id: str = ""
    # The credentials of the plan's mirrors (imagegen.mirrorauth.for_plan), sorted by host.
    mirror_auth: tuple[mirrorauth.Credential, ...] = ()

    @cached_property
    def discovery_hash(self) -> str:
        return pki.discovery_hash(self.ca.cert_pem)

    @property
    def token_id(self) -> str:
        return self.bootstrap_token.split(".", 1)[0]


# --- what a state binds -------------------------------------------------------------------------------------

_IDENTITY_LABELS = {"endpoint_name": "endpoint name", "endpoint_address": "endpoint address",
                    "endpoint_port": "endpoint port", "network": "network cidr"}


def plan_identity(plan: Plan) -> dict[str, object]:
    """The facts a state is bound to besides the cluster name. Nodes come and go; these make another cluster."""
    return {"endpoint_name": plan.endpoint.name, "endpoint_address": str(plan.endpoint_address),
            "endpoint_port": plan.endpoint.port, "network": str(plan.network.cidr)}


def _meta_bytes(name: str, cluster_id: str, identity: dict[str, object]) -> bytes:
    meta = {"format": STATE_FORMAT, "cluster": name, "cluster_id": cluster_id, "identity": identity}
    return json.dumps(meta, sort_keys=True).encode() + b"\n"


# --- reading --------------------------------------------------------------------------------------------------

def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bad(root: Path, rel: str, what: str, fix: str) -> UsageError:
    return UsageError(f"--state {root}: {rel} {what}; {fix}")


_RESTORE = "restore it from a backup of this state directory"
_RESTORE_PAIR = ("restore the pair from a backup of this state directory (a new one would not match the "
                 "cluster's nodes; for a cluster that never booted, render with a new, empty --state)")


def _read_file(root: Path, rel: str) -> bytes | None:
    """A state file's bytes, None when it does not exist; anything odd about it is a UsageError."""
    path = root / rel
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _bad(root, rel, f"cannot be read ({exc.strerror})", "check the state directory") from exc
    if stat.S_ISLNK(st.st_mode):
        raise _bad(root, rel, "is a symbolic link", "put the file itself there (state files are never links)")
    if not stat.S_ISREG(st.st_mode):
        raise _bad(root, rel, "is not a regular file", _RESTORE)
    if st.st_size > _MAX_FILE:
        raise _bad(root, rel, f"is {st.st_size} bytes, far too large for a state file", _RESTORE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _bad(root, rel, f"cannot be read ({exc.strerror})", "check its owner and permissions") from exc
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read(_MAX_FILE + 1)
    except OSError as exc:
        raise _bad(root, rel, f"cannot be read ({exc.strerror})", _RESTORE) from exc


def _text_value(root: Path, rel: str, data: bytes) -> str:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise _bad(root, rel, "is not ASCII text (corrupt)", _RESTORE) from exc
    return text[:-1] if text.endswith("\n") else text


@dataclass(frozen=True)
class _SecretSpec:
    pattern: re.Pattern[str]
    shape: str
    make: Callable[[], str]
    fix: str


_SECRETS = {
    "bootstrap-token": _SecretSpec(_TOKEN, "a kubeadm bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})",
                                   pki.new_bootstrap_token, "run 'imagegen token rotate --state {root}' for a "
                                                            "new one"),
    "certificate-key": _SecretSpec(_CERT_KEY, "64 lower-case hex digits", pki.new_certificate_key,
                                   _RESTORE + " (or write 64 new hex digits, `openssl rand -hex 32`)"),
    "vrrp-password": _SecretSpec(_VRRP, "8 letters or digits", lambda: pki.new_password(8), _RESTORE),
    "harbor-admin-password": _SecretSpec(_PASSWORD, "8 to 128 letters and digits, with upper and lower case "
                                                    "and a digit", pki.new_password, _RESTORE),
    "harbor-db-password": _SecretSpec(_PASSWORD, "8 to 128 letters and digits, with upper and lower case and a "
                                                 "digit", pki.new_password, _RESTORE),
}

# (stem, issuer stem or None for a CA). Order matters: a CA before what it signs.
_PAIRS = (("ca", None), ("front-proxy-ca", None), ("etcd/ca", None), ("admin", "ca"),
          ("registry-ca", None), ("registry", "registry-ca"))
# Never made again once a state exists: the nodes and the operator already trust them.
_REQUIRED = ("ca", "front-proxy-ca", "etcd/ca", "sa", "bootstrap-token", "certificate-key")


@dataclass
class _Found:
    """A verified state directory's contents (nothing is trusted before it lands here)."""

    meta: dict[str, object] | None = None
    pairs: dict[str, pki.KeyPair] = field(default_factory=dict)
    sa: tuple[bytes, bytes] | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    identity_changes: list[str] = field(default_factory=list)
    mirror_auth: dict[str, mirrorauth.Credential] = field(default_factory=dict)

    @property
    def fresh(self) -> bool:
        return self.meta is None


def _needed(plan: Plan) -> tuple[str, ...]:
    items = ["ca", "front-proxy-ca", "etcd/ca", "sa", "admin", "bootstrap-token", "certificate-key"]
    if any(n.role == "load-balancer" for n in plan.nodes):
        items.append("vrrp-password")
    if plan.registry is not None and any(n.role == "registry" for n in plan.nodes):
        items += ["registry-ca", "registry", "harbor-admin-password", "harbor-db-password"]
    return tuple(items)


def _is_leftover(name: str) -> bool:
    return name.endswith(_TMP_SUFFIX) or name.startswith(_NEW_PREFIX)


def _read_meta(root: Path, plan: Plan | None, accept_changed_identity: bool) -> tuple[dict[str, object],
                                                                                       list[str]]:
    data = _read_file(root, "state.json")
    if data is None:
        raise _bad(root, "state.json", "is missing", _RESTORE)
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _bad(root, "state.json", "is not valid JSON (corrupt)", _RESTORE) from exc
    if not isinstance(meta, dict):
        raise _bad(root, "state.json", "is not a JSON object (corrupt)", _RESTORE)
    fmt = meta.get("format")
    if type(fmt) is not int or fmt not in KNOWN_FORMATS:
        raise _bad(root, "state.json", f"has format {_brief(fmt)}, which this imagegen does not know "
                   f"(it reads {', '.join(map(str, KNOWN_FORMATS))})", "use the imagegen version that wrote it")
    name = meta.get("cluster")
    if not isinstance(name, str):
        raise _bad(root, "state.json", "names no cluster (corrupt)", _RESTORE)
    if fmt >= 2:
        identity = meta.get("identity")
        if (not isinstance(meta.get("cluster_id"), str) or not _CLUSTER_ID.fullmatch(str(meta["cluster_id"]))
                or not isinstance(identity, dict) or set(identity) != set(_IDENTITY_LABELS)):
            raise _bad(root, "state.json", "has a malformed cluster_id or identity (corrupt)", _RESTORE)
    changes: list[str] = []
    if plan is not None:
        if name != plan.cluster.name:
            raise UsageError(f"--state {root}: belongs to cluster {_brief(name)}, the plan is for "
                             f"'{plan.cluster.name}'; use another --state directory for this cluster")
        if fmt >= 2:
            recorded = meta["identity"]
            assert isinstance(recorded, dict)
            now = plan_identity(plan)
            changes = [f"{label} {_brief(recorded[key])} -> {_brief(now[key])}"
                       for key, label in _IDENTITY_LABELS.items() if recorded[key] != now[key]]
            if changes and not accept_changed_identity:
                raise UsageError(f"--state {root}: is bound to cluster '{name}' with another identity "
                                 f"({'; '.join(changes)}); reusing its CAs and token for a changed cluster must be "
                                 "deliberate: pass --accept-changed-identity to record the new identity, or use "
                                 "a new --state for a new cluster")
    return meta, changes


def inspect_state(root: Path, plan: Plan | None, *, accept_changed_identity: bool = False,
                  skip: tuple[str, ...] = ()) -> _Found:
    """Read and verify a state directory without changing anything; raise UsageError naming the file and fix.

    With `plan` None (token rotation) the cluster's name and identity are not checked. Items in `skip` are not
    read (the token that rotation replaces)."""
    root = Path(root)
    found = _Found()
    try:
        if not root.exists():
            return found
        if not root.is_dir():
            raise UsageError(f"--state {root}: is a file, not a directory; point --state at a state directory "
                             "(or a new path)")
        names = {p.name for p in root.iterdir()}
    except OSError as exc:
        raise UsageError(f"--state {root}: cannot be read ({exc.strerror}); check its permissions") from exc
    if "state.json" not in names:
        if names - {LOCK_FILE} and not all(_is_leftover(n) for n in names - {LOCK_FILE}):
            raise UsageError(f"--state {root}: exists, is not empty and has no state.json (not an imagegen state, "
                             "or its first render was interrupted); point --state at an empty or new directory")
        return found
    found.meta, found.identity_changes = _read_meta(root, plan, accept_changed_identity)

    for stem, issuer_stem in _PAIRS:
        crt, key = _read_file(root, f"pki/{stem}.crt"), _read_file(root, f"pki/{stem}.key")
        if crt is None and key is None:
            if stem in _REQUIRED:
                raise _bad(root, f"pki/{stem}.crt and pki/{stem}.key", "are missing", _RESTORE_PAIR)
            continue
        if crt is None or key is None:
            have, lack = (f"pki/{stem}.key", f"pki/{stem}.crt") if crt is None else (f"pki/{stem}.crt",
                                                                                     f"pki/{stem}.key")
            raise _bad(root, lack, f"is missing while {have} exists",
                       "restore it from a backup of this state directory (imagegen never makes one half of a "
                       "key pair)")
        issuer = found.pairs.get(issuer_stem) if issuer_stem else None
        if issuer_stem and issuer is None:
            raise _bad(root, f"pki/{stem}.crt", f"exists without its CA pki/{issuer_stem}.crt",
                       f"restore the CA from a backup, or delete pki/{stem}.crt and pki/{stem}.key to issue both "
                       "anew")
        pair = pki.KeyPair(crt, key)
        try:
            pki.verify_pair(pair, ca=issuer_stem is None, issuer=issuer)
        except pki.PairError as exc:
            rel = f"pki/{stem}.{'crt' if exc.part == 'cert' else 'key'}"
            fix = (_RESTORE_PAIR if issuer_stem is None else
                   f"delete pki/{stem}.crt and pki/{stem}.key and render again to issue a new pair")
            raise _bad(root, rel, exc.reason, fix) from exc
        found.pairs[stem] = pair

    sa_key, sa_pub = _read_file(root, "pki/sa.key"), _read_file(root, "pki/sa.pub")
    if sa_key is None or sa_pub is None:
        rel = "pki/sa.key and pki/sa.pub" if sa_key is None and sa_pub is None else (
            "pki/sa.key" if sa_key is None else "pki/sa.pub")
        raise _bad(root, rel, "missing" if " and " in rel else "is missing", _RESTORE_PAIR)
    try:
        pki.verify_service_account_keys(sa_key, sa_pub)
    except pki.PairError as exc:
        raise _bad(root, f"pki/sa.{exc.part}", exc.reason, _RESTORE_PAIR) from exc
    found.sa = (sa_key, sa_pub)

    for name, spec in _SECRETS.items():
        if name in skip:
            continue
        data = _read_file(root, name)
        fix = spec.fix.format(root=root)
        if data is None:
            if name in _REQUIRED:
                raise _bad(root, name, "is missing", fix)
            continue
        value = _text_value(root, name, data)
        if not spec.pattern.fullmatch(value):
            raise _bad(root, name, f"is not {spec.shape} (corrupt or edited)", fix)
        found.secrets[name] = value
    found.mirror_auth = _read_mirror_auth(root)
    return found


_MIRROR_AUTH_FIX = ("set the credentials again with `imagegen mirror-auth set` after deleting the file, or restore it "
                    "from a backup of this state directory")


def _read_mirror_auth(root: Path) -> dict[str, mirrorauth.Credential]:
    data = _read_file(root, mirrorauth.STORE_NAME)
    if data is None:
        return {}
    try:
        return mirrorauth.parse_store(data)
    except mirrorauth.StoreError as exc:
        raise _bad(root, mirrorauth.STORE_NAME, str(exc), _MIRROR_AUTH_FIX) from None


# --- writing --------------------------------------------------------------------------------------------------

def _make_dirs(path: Path, mode: int = 0o700) -> None:
    make_dirs(path, mode)


def _write_secret(path: Path, data: bytes) -> None:
    """Atomically (unique temporary name, fsync, rename) write a 0600 file."""
    _make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


def _store_pair(root: Path, stem: str, pair: pki.KeyPair) -> None:
    _write_secret(root / "pki" / f"{stem}.key", pair.key_pem)
    _write_secret(root / "pki" / f"{stem}.crt", pair.cert_pem)


def _registry_sans(plan: Plan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    assert plan.registry is not None
    return (plan.registry.hostname,), tuple(str(n.ip) for n in plan.nodes if n.role == "registry")


def _current_sans(pair: pki.KeyPair) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from cryptography import x509

    try:
        san = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    return (tuple(san.get_values_for_type(x509.DNSName)),
            tuple(str(i) for i in san.get_values_for_type(x509.IPAddress)))


def _complete(root: Path, plan: Plan, found: _Found) -> bool:
    """Make the items the plan needs of which nothing exists; re-issue the registry certificate when its SANs
    no longer match the plan. Returns whether anything was written."""
    wrote = False
    needed = _needed(plan)
    for stem, issuer_stem in _PAIRS:
        if stem not in needed:
            continue
        issuer = found.pairs[issuer_stem] if issuer_stem else None
        if stem == "registry":
            dns, ips = _registry_sans(plan)
            if stem in found.pairs and _current_sans(found.pairs[stem]) == (dns, ips):
                continue
            assert issuer is not None and plan.registry is not None
            pair = pki.new_leaf(issuer, plan.registry.hostname, server=True, dns_names=dns, ips=ips)
        elif stem in found.pairs:
            continue
        elif stem == "admin":
            assert issuer is not None
            # From 1.29 kubeadm binds kubeadm:cluster-admins to cluster-admin through RBAC, so the operator's
            # credential can be revoked; system:masters bypasses RBAC and cannot be.
            pair = pki.new_leaf(issuer, "kubernetes-admin", org=plan.cluster.rules.admin_group, client=True)
        else:
            cn = {"ca": "kubernetes", "etcd/ca": "etcd-ca",
                  "registry-ca": f"{plan.cluster.name}-registry-ca"}.get(stem, stem)
            pair = pki.new_ca(cn)
        _store_pair(root, stem, pair)
        found.pairs[stem] = pair
        wrote = True
    if found.sa is None:
        found.sa = pki.new_service_account_keys()
        _write_secret(root / "pki" / "sa.key", found.sa[0])
        _write_secret(root / "pki" / "sa.pub", found.sa[1])
        wrote = True
    for name in needed:
        if name in _SECRETS and name not in found.secrets:
            found.secrets[name] = _SECRETS[name].make()
            _write_secret(root / name, (found.secrets[name] + "\n").encode())
            wrote = True
    return wrote


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(root: Path, plan: Plan) -> None:
    """A new state, made whole in a temporary directory inside `root` and moved into place, state.json last:
    an interruption leaves at most a temporary directory that the next run removes."""
    new = Path(tempfile.mkdtemp(prefix=_NEW_PREFIX, dir=root))
    try:
        _complete(new, plan, _Found())
        _write_secret(new / "state.json", _meta_bytes(plan.cluster.name, secrets.token_hex(16), plan_identity(plan)))
        for entry in sorted(new.iterdir()):
            if entry.name != "state.json":
                os.rename(entry, root / entry.name)
        os.rename(new / "state.json", root / "state.json")
        os.rmdir(new)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _tidy(root: Path, notify: Notify) -> None:
    """Remove what interrupted runs left (only the lock holder writes here) and take group/other permissions
    away from everything in the state, saying which."""
    loosened: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        here = Path(dirpath)
        for name in (*dirnames, *filenames):
            path = here / name
            st = os.lstat(path)
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                raise _bad(root, rel, "is a symbolic link",
                           "put the file itself there (state files are never links)")
            if _is_leftover(name):
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(path)
                    dirnames.remove(name)
                else:
                    path.unlink()
                continue
            if stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(path, 0o700 if stat.S_ISDIR(st.st_mode) else 0o600)
                loosened.append(rel + ("/" if stat.S_ISDIR(st.st_mode) else ""))
    mode = stat.S_IMODE(os.stat(root).st_mode)
    if mode & 0o077:
        os.chmod(root, 0o700)
        loosened.insert(0, "the directory itself")
    if loosened:
        shown = ", ".join(loosened[:5]) + (f" and {len(loosened) - 5} more" if len(loosened) > 5 else "")
        notify(f"--state {root}: removed group/other permissions from {shown} (state files are 0600, "
               "directories 0700)")


def _raise(exc: OSError) -> None:
    raise exc


@contextmanager
def _locked_state(root: Path, notify: Notify) -> Iterator[None]:
    try:
        _make_dirs(root)
    except OSError as exc:
        raise UsageError(f"--state {root}: cannot be created ({exc.strerror}); check the permissions of its "
                         "parent or choose another --state") from exc
    with locked(root / LOCK_FILE, f"--state {root}", on_wait=notify):
        try:
            _tidy(root, notify)
        except OSError as exc:
            raise UsageError(f"--state {root}: cannot be tidied ({exc.strerror}: {exc.filename}); check its "
                             "owner and permissions") from exc
        yield


@contextmanager
def open_state(state_dir: Path, plan: Plan, *, accept_changed_identity: bool = False,
               notify: Notify = _warn) -> Iterator[ClusterState]:
    """The verified state for this plan, created or completed as needed, locked for the duration of the block.

    Every refusal that does not depend on another process happens before anything is written (the state
    directory is not even created)."""
    root = Path(state_dir)
    inspect_state(root, plan, accept_changed_identity=accept_changed_identity)
    with _locked_state(root, notify):
        try:
            found = _prepare(root, plan, accept_changed_identity, notify)
        except OSError as exc:
            raise _write_error(root, exc) from exc
        yield _cluster_state(plan, found)


def _write_error(root: Path, exc: OSError) -> Exception:
    """Permission problems are the operator's to fix (exit 2); anything else (a full disk) stays a failure."""
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return UsageError(f"--state {root}: cannot be written ({exc.strerror}: {exc.filename}); make it writable "
                          "(not read-only or immutable) or use another --state")
    return exc


def _prepare(root: Path, plan: Plan, accept_changed_identity: bool, notify: Notify) -> _Found:
    """Under the lock: verify, then create or complete the state and record its identity."""
    found = inspect_state(root, plan, accept_changed_identity=accept_changed_identity)
    if found.fresh:
        _create(root, plan)
        found = inspect_state(root, plan)
    else:
        meta = found.meta
        assert meta is not None
        if _complete(root, plan, found):
            found = inspect_state(root, plan, accept_changed_identity=accept_changed_identity)
        cluster_id = meta.get("cluster_id")
        if not isinstance(cluster_id, str) or not _CLUSTER_ID.fullmatch(cluster_id):
            cluster_id = secrets.token_hex(16)
            notify(f"--state {root}: state.json upgraded to format {STATE_FORMAT} (cluster id and identity "
                   "recorded)")
        elif found.identity_changes:
            notify(f"--state {root}: identity changed as accepted: {'; '.join(found.identity_changes)}")
        meta_bytes = _meta_bytes(plan.cluster.name, cluster_id, plan_identity(plan))
        if _read_file(root, "state.json") != meta_bytes:
            _write_secret(root / "state.json", meta_bytes)
        found.meta = json.loads(meta_bytes)
    return found


def _cluster_state(plan: Plan, found: _Found) -> ClusterState:
    assert found.meta is not None and found.sa is not None
    needed = _needed(plan)
    registry = "registry" in needed
    return ClusterState(
        cluster_name=plan.cluster.name, ca=found.pairs["ca"], front_proxy_ca=found.pairs["front-proxy-ca"],
        etcd_ca=found.pairs["etcd/ca"], sa_key=found.sa[0], sa_pub=found.sa[1], admin=found.pairs["admin"],
        bootstrap_token=found.secrets["bootstrap-token"], certificate_key=found.secrets["certificate-key"],
        registry_ca=found.pairs["registry-ca"] if registry else None,
        registry_cert=found.pairs["registry"] if registry else None,
        harbor_admin_password=found.secrets["harbor-admin-password"] if registry else None,
        harbor_db_password=found.secrets["harbor-db-password"] if registry else None,
        vrrp_password=found.secrets.get("vrrp-password") if "vrrp-password" in needed else None,
        cluster_id=str(found.meta.get("cluster_id", "")),
        mirror_auth=mirrorauth.for_plan(plan, found.mirror_auth))


def ensure_state(state_dir: Path, plan: Plan, *, accept_changed_identity: bool = False,
                 notify: Notify = _warn) -> ClusterState:
    """Load the verified state for this plan's cluster, creating whatever may be created (see the module)."""
    with open_state(state_dir, plan, accept_changed_identity=accept_changed_identity, notify=notify) as state:
        return state


def check_state_dir(state_dir: Path, plan: Plan, *, accept_changed_identity: bool = False) -> None:
    """Every refusal `open_state` would make, without writing anything (for checks before any output)."""
    root = Path(state_dir)
    found = inspect_state(root, plan, accept_changed_identity=accept_changed_identity)
    mirrorauth.for_plan(plan, found.mirror_auth)  # a Docker plan whose mirrors have credentials is refused
    if not root.exists():
        _check_creatable(root)


def _check_creatable(path: Path) -> None:
    check_creatable(path, "--state")


def rotate_token(state_dir: Path, *, notify: Notify = _warn) -> str:
    """Replace only the bootstrap token; returns the new token id (never the secret).

    The rest of the state is verified first, under the state's lock; a missing or corrupt token is what this
    command repairs."""
    root = Path(state_dir)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--state {root}: is a file, not a directory; point --state at a state directory")
    if not os.path.lexists(root / "state.json"):
        raise UsageError(f"--state {root}: no imagegen state here; run 'imagegen render' first")
    inspect_state(root, None, skip=("bootstrap-token",))
    with _locked_state(root, notify):
        inspect_state(root, None, skip=("bootstrap-token",))
        token = pki.new_bootstrap_token()
        try:
            _write_secret(root / "bootstrap-token", (token + "\n").encode())
        except OSError as exc:
            raise _write_error(root, exc) from exc
    return token.split(".", 1)[0]


# --- registry mirror credentials (imagegen.mirrorauth) ----------------------------------------------------------

def mirror_auth_list(state_dir: Path, plan: Plan) -> dict[str, mirrorauth.Credential]:
    """The stored mirror credentials by host, read and verified without changing anything."""
    root = Path(state_dir)
    if not os.path.lexists(root / "state.json"):
        return {}
    return inspect_state(root, plan).mirror_auth


def _change_mirror_auth(root: Path, plan: Plan, notify: Notify,
                        change: Callable[[dict[str, mirrorauth.Credential]], bool]) -> bool:
    """Under the state's lock, on the verified (created or completed, as a render would) state: apply `change`
    to the stored credentials and write them back (0600, atomically) when it reports a change."""
    inspect_state(root, plan)
    with _locked_state(root, notify):
        try:
            found = _prepare(root, plan, False, notify)
            creds = dict(found.mirror_auth)
            if not change(creds):
                return False
            if creds:
                _write_secret(root / mirrorauth.STORE_NAME, mirrorauth.dump_store(creds))
            else:
                (root / mirrorauth.STORE_NAME).unlink(missing_ok=True)
                _fsync_dir(root)
        except OSError as exc:
            raise _write_error(root, exc) from exc
    return True


def mirror_auth_set(state_dir: Path, plan: Plan, credential: mirrorauth.Credential, *,
                    notify: Notify = _warn) -> None:
    """Store (or replace) one mirror host's credentials; the state is made first when there is none yet."""
    def put(creds: dict[str, mirrorauth.Credential]) -> bool:
        changed = creds.get(credential.host) != credential
        creds[credential.host] = credential
        return changed

    _change_mirror_auth(Path(state_dir), plan, notify, put)


def mirror_auth_remove(state_dir: Path, plan: Plan, host: str, *, notify: Notify = _warn) -> bool:
    """Delete one mirror host's credentials; False when there were none."""
    root = Path(state_dir)
    if not os.path.lexists(root / "state.json"):
        return False
    return _change_mirror_auth(root, plan, notify, lambda creds: creds.pop(host, None) is not None)
