"""Reading a plan, driven by the field table (`fields.FIELDS`): unknown and missing keys, defaults, choices and each
value's check all come from the table, and every problem is collected so one run reports them all.

Parsing happens here, at the edge. Everything after `load_plan` trusts the objects of `model.py`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from imagegen import safeyaml, values
from imagegen.errors import MISSING, PlanError, Problem
from imagegen.plan import fields as F
from imagegen.plan.checks import Parsed, cross_checks
from imagegen.plan.model import (
    COMPONENTS,
    DEFAULT_JOURNALD,
    DEFAULT_SYSCTL,
    DISTRO_MIRROR_KEY_MAX_BYTES,
    JOURNALD_KEYS,
    MIRROR_CA_MAX_BYTES,
    DistroMirror,
    Node,
    Plan,
    RegistryMirror,
)
from imagegen.versions import SUPPORTED_RANGE, KubeVersion

# Every pattern is used with fullmatch: `$` would also accept a trailing newline ("cp-1\n").
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_SYSCTL_KEY = re.compile(r"[a-z0-9_]+(\.[a-zA-Z0-9_*-]+)+")
_JOURNALD_VALUE = re.compile(r"[A-Za-z0-9.]+")
_FLAG = re.compile(r"[a-z0-9][a-z0-9-]*")
_PGP_PUBLIC_KEY = re.compile(r"-----BEGIN PGP PUBLIC KEY BLOCK-----\n[ -~\n]*?\n-----END PGP PUBLIC KEY BLOCK-----\n?")


def _suggest(value: object, options: tuple[str, ...] | list[str], fallback: str = "") -> str:
    """'did you mean ...?' for the closest option, else `fallback`."""
    close = difflib.get_close_matches(str(value), list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else fallback


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Reader:
    """Reads values as the table describes them; each problem is appended, never raised."""

    def __init__(self, base: Path | None = None) -> None:
        self.problems: list[Problem] = []
        # Relative file names in the plan (cluster.mirrors.*.ca_file) are read from the plan's directory.
        self.base = base or Path.cwd()

    def add(self, path: str, value: object, message: str, fix: str = "") -> None:
        shown = value.value if isinstance(value, StrEnum) else value  # 'single', not <EndpointMode.SINGLE: ...>
        self.problems.append(Problem(path, shown, message, fix))

    # -- sections ---------------------------------------------------------------------------------------------

    def keys(self, data: object, section: str, path: str) -> dict[str, Any]:
        """Check that `data` is a mapping with only the section's keys and all its required ones; return it
        (or {})."""
        keys = F.key_tables()[section]
        if data is MISSING or data is None:
            data = {}
        if not isinstance(data, dict):
            self.add(path, data, "must be a mapping", f"write {path} as 'key: value' lines")
            return {}
        for key in data:
            if not isinstance(key, str) or key not in keys:
                hint = _suggest(key, list(keys), f"allowed keys: {', '.join(sorted(keys))}")
                self.add(_join(path, str(key)), MISSING, "unknown key", hint)
        for key, required in keys.items():
            if required and key not in data:
                self.add(_join(path, key), MISSING, "is required", "add it")
        return data

    def fields(self, data: dict[str, Any], section: str, path: str) -> dict[str, Any]:
        """Every key of the section, in table order (a default may depend on a key before it): attribute ->
        value, None where a value is missing or bad and the field has no default to fall back on."""
        got: dict[str, Any] = {}
        for f in F.SECTIONS[section]:
            got[f.key] = self.field(f, data, _join(path, f.key), got)
        return got

    def section(self, data: object, section: str, path: str) -> dict[str, Any] | None:
        """The section's values, or None if one it cannot do without is missing or bad."""
        got = self.fields(self.keys(data, section, path), section, path)
        return got if complete(section, got) else None

    def field(self, f: F.Field, data: dict[str, Any], path: str, got: Mapping[str, Any]) -> Any:
        raw = data.get(f.key, MISSING)
        nested = _NESTED.get(f.path)
        if nested is not None:
            return nested(self, raw, got)
        if isinstance(f.type, F.Section):
            if (raw is MISSING and f.required) or (f.nullable and (raw is MISSING or raw is None)):
                return None
            inner = self.section(raw, f.type.name, f.type.name)
            return F.MODELS[f.type.name](**inner) if inner is not None else None
        if raw is MISSING:
            return f.default_for(got)
        value = self.value(f.type, path, raw)
        if value is None and not isinstance(f.type, F.IPv4 | F.Cidr | F.Mac | F.Version):
            return f.default_for(got)  # the problem is recorded; the default keeps cross-field checks quiet
        return value

    # -- values -----------------------------------------------------------------------------------------------

    def value(self, t: F.ValueType, path: str, value: object) -> Any:
        """`value` read as type `t`, or None (and a problem)."""
        if isinstance(t, F.Text):
            return self.text(path, value, t.check)
        if isinstance(t, F.Label):
            return self.label(path, value, t.what, t.check)
        if isinstance(t, F.DnsName):
            return self.dns_name(path, value)
        if isinstance(t, F.Choice):
            return self.choice(path, value, t.choices)
        if isinstance(t, F.Flag):
            return self.boolean(path, value)
        if isinstance(t, F.Int):
            return self.integer(path, value, t.low, t.high)
        if isinstance(t, F.Duration):
            return self.duration(path, value)
        if isinstance(t, F.Texts):
            return self.texts(path, value, t)
        if isinstance(t, F.Version):
            return self.version(path, value)
        if isinstance(t, F.IPv4):
            return self.ipv4(path, value)
        if isinstance(t, F.IPv4s):
            return self.ipv4s(path, value)
        if isinstance(t, F.Cidr):
            return self.cidr(path, value)
        if isinstance(t, F.Mac):
            return self.mac(path, value)
        raise TypeError(f"{path}: {t} has no reader")  # pragma: no cover - sections and overrides are nested

    def text(self, path: str, value: object, check: F.Check | None) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.add(path, value, "must be a non-empty string", "quote it if YAML reads it as another type")
            return None
        verdict = check(value) if check is not None else None
        if verdict is not None:
            self.add(path, value, *verdict)
            return None
        return value

    def boolean(self, path: str, value: object) -> bool | None:
        if not isinstance(value, bool):
            self.add(path, value, "must be true or false")
            return None
        return value

    def integer(self, path: str, value: object, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.add(path, value, f"must be a whole number from {low} to {high}")
            return None
        return value

    def choice(self, path: str, value: object, choices: type[StrEnum]) -> StrEnum | None:
        options = tuple(m.value for m in choices)
        if not isinstance(value, str) or value not in options:
            self.add(path, value, f"must be one of {', '.join(options)}", _suggest(value, options))
            return None
        return choices(value)

    def duration(self, path: str, value: object) -> str | None:
        if not isinstance(value, str) or not value or not values.DURATION.fullmatch(value):
            self.add(path, value, "must be a duration like '24h', '90m' or '8760h'")
            return None
        return value

    def texts(self, path: str, value: object, t: F.Texts) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.add(path, value, "must be a list", f"write {path} as '- item' lines")
            return ()
        if not value and t.min_items:
            self.add(path, [], "is empty", t.empty_fix)
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.add(f"{path}[{i}]", item, "must be a non-empty string")
            elif t.choices and item not in t.choices:
                self.add(f"{path}[{i}]", item, t.unknown, _suggest(item, t.choices, f"use {', '.join(t.choices)}"))
            elif t.check is not None and (verdict := t.check(item)) is not None:
                self.add(f"{path}[{i}]", item, *verdict)
            else:
                out.append(item)
        return tuple(dict.fromkeys(out)) if t.unique else tuple(out)

    def version(self, path: str, raw: object) -> KubeVersion | None:
        try:
            version = KubeVersion.parse(raw) if isinstance(raw, str) else None
        except ValueError:
            version = None
        if version is None:
            fix = f"write '{raw[1:]}'" if isinstance(raw, str) and raw.startswith("v") \
                else "write MAJOR.MINOR.PATCH as a quoted string, e.g. '1.34.2'"
            self.add(path, raw, "is not a Kubernetes version", fix)
            return None
        if not version.supported():
            self.add(path, raw, "is not supported", f"imagegen supports {SUPPORTED_RANGE}")
            return None
        return version

    def ipv4(self, path: str, value: object) -> ipaddress.IPv4Address | None:
        if not isinstance(value, str):
            self.add(path, value, "must be an IPv4 address written as a string", "e.g. '192.168.10.11'")
            return None
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            self.add(path, value, "is not a valid IP address", "write four decimal octets without leading zeros")
            return None
        if not isinstance(addr, ipaddress.IPv4Address):
            self.add(path, value, "IPv6 is not supported yet", "use an IPv4 address")
            return None
        if str(addr) != value:
            self.add(path, value, "is not in canonical form", f"write '{addr}'")
            return None
        return addr

    def ipv4s(self, path: str, value: object) -> tuple[ipaddress.IPv4Address, ...]:
        if not isinstance(value, list):
            self.add(path, value, "must be a list of IPv4 addresses")
            return ()
        found = (self.ipv4(f"{path}[{i}]", item) for i, item in enumerate(value))
        return tuple(addr for addr in found if addr is not None)

    def cidr(self, path: str, value: object) -> ipaddress.IPv4Network | None:
        if not isinstance(value, str) or "/" not in value:
            self.add(path, value, "must be a CIDR string", "e.g. '10.244.0.0/16'")
            return None
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            self.add(path, value, "is not a valid CIDR", "e.g. '10.244.0.0/16'")
            return None
        if not isinstance(net, ipaddress.IPv4Network):
            self.add(path, value, "IPv6 is not supported yet", "use an IPv4 CIDR")
            return None
        if str(net) != value:
            self.add(path, value, "is not in canonical form (host bits set or leading zeros)", f"write '{net}'")
            return None
        return net

    def mac(self, path: str, value: object) -> str | None:
        if not isinstance(value, str):
            self.add(path, value, "must be a MAC address string", "e.g. '52:54:00:12:34:56'")
            return None
        # Proxmox and VMware print MACs in upper case: accepted and written in lower case.
        if _MAC.fullmatch(value.lower()):
            mac = value.lower()
            if int(mac[:2], 16) & 1:
                self.add(path, value, "is a multicast MAC address", "use a unicast address, e.g. 52:54:00:..")
                return None
            if mac == "00:00:00:00:00:00":
                self.add(path, value, "is the all-zero MAC address", "use the NIC's real address")
                return None
            return mac
        canonical = re.sub(r"[^0-9a-fA-F]", "", value).lower()
        if len(canonical) == 12:
            fixed = ":".join(canonical[i:i + 2] for i in range(0, 12, 2))
            self.add(path, value, "is not in canonical form", f"write '{fixed}' (lower case, colons)")
        else:
            self.add(path, value, "is not a valid MAC address", "six hex octets, e.g. '52:54:00:12:34:56'")
        return None

    def label(self, path: str, value: object, what: str, check: F.Check | None = None) -> str | None:
        if not isinstance(value, str):
            self.add(path, value, f"must be a {what} string")
            return None
        if len(value) > 63:
            self.add(path, value, f"{what} is longer than 63 characters", "shorten it (RFC 1123 label)")
            return None
        if not _LABEL.fullmatch(value):
            fix = f"write '{value.lower()}'" if _LABEL.fullmatch(value.lower()) else \
                "use lower-case letters, digits and '-', starting and ending with a letter or digit (RFC 1123)"
            self.add(path, value, f"is not a valid {what}", fix)
            return None
        verdict = check(value) if check is not None else None
        if verdict is not None:
            self.add(path, value, *verdict)
            return None
        return value

    def dns_name(self, path: str, value: object) -> str | None:
        if not isinstance(value, str) or len(value) > 253 or not all(
                _LABEL.fullmatch(part) for part in value.split(".")):
            fix = "use lower-case RFC 1123 labels separated by dots, e.g. 'k8s-api.example.internal'"
            self.add(path, value, "is not a valid DNS name", fix)
            return None
        return value


def complete(section: str, got: Mapping[str, Any]) -> bool:
    """Whether every value the section's object cannot do without parsed."""
    return all(got[f.key] is not None or f.nullable for f in F.SECTIONS[section])


# -- the keys whose values are read by code of their own: lists and mappings of sections, merged overrides ---------

def _nodes(r: _Reader, data: object, got: Mapping[str, Any]) -> tuple[tuple[Node, ...], bool]:
    """The nodes that parsed cleanly, and whether that is every node of the plan."""
    if data is MISSING:
        return (), False
    if not isinstance(data, list) or not data:
        r.add("nodes", data, "must be a non-empty list of nodes", "add '- {name: ..., role: ..., ip: ..., mac: ...}'")
        return (), False
    nodes: list[Node] = []
    complete_ = True
    for i, item in enumerate(data):
        path = f"nodes[{i}]"
        keys = r.keys(item, "nodes[]", path)
        if not keys:
            complete_ = False
            continue
        node = r.fields(keys, "nodes[]", path)
        if not complete("nodes[]", node):
            complete_ = False
            continue
        nodes.append(Node(index=i, **node))
    return tuple(nodes), complete_


def _mirrors(r: _Reader, data: object, got: Mapping[str, Any]) -> tuple[RegistryMirror, ...]:
    """cluster.mirrors: registry host -> {endpoints, ca_file, skip_verify}; `registry_mirrors` is docker.io's
    shorthand (endpoints only). Sorted by host, so the rendered order never depends on the plan's."""
    out: dict[str, RegistryMirror] = {}
    docker_io: tuple[str, ...] = got["registry_mirrors"]
    if docker_io:
        out["docker.io"] = RegistryMirror("docker.io", docker_io)
    if data is MISSING or data is None:
        return tuple(out.values())
    if not isinstance(data, dict):
        r.add("cluster.mirrors", data, "must be a mapping of registry host to its mirror",
              "e.g. {docker.io: {endpoints: ['https://mirror.example.internal']}}")
        return tuple(out.values())
    for host, item in data.items():
        path = f"cluster.mirrors.{host}"
        if not isinstance(host, str) or (verdict := values.registry_name(host)) is not None:
            r.add(path, host, *(verdict or ("is not a registry host", "")))
            continue
        if host in out:
            r.add(path, host, "is also given by cluster.registry_mirrors (docker.io's shorthand)",
                  "move those URLs into cluster.mirrors.docker.io.endpoints and drop registry_mirrors")
            continue
        keys = r.keys(item, "cluster.mirrors.*", path)
        if not keys:
            continue
        m = r.fields(keys, "cluster.mirrors.*", path)
        pem = _read_ca(r, f"{path}.ca_file", m["ca_file"]) if m["ca_file"] else ""
        if m["endpoints"]:
            out[host] = RegistryMirror(host, m["endpoints"], m["ca_file"], pem, m["skip_verify"])
    return tuple(out[h] for h in sorted(out))


def _read_ca(r: _Reader, path: str, name: str) -> str:
    """The PEM certificates of a mirror's CA file, read on the operator's machine when the plan is loaded."""
    file = r.base / name
    fix = "give the path of a PEM file of CA certificates (relative paths are read from the plan's directory)"
    try:
        if file.stat().st_size > MIRROR_CA_MAX_BYTES:
            r.add(path, name, f"is larger than {MIRROR_CA_MAX_BYTES} bytes", fix)
            return ""
        data = file.read_bytes()
    except OSError as exc:
        r.add(path, name, f"cannot be read: {exc.strerror}", fix)
        return ""
    verdict = values.pem_certificates(data)
    if verdict is not None:
        r.add(path, name, *verdict)
        return ""
    return data.decode("ascii")


def _distro_mirror(r: _Reader, data: object, got: Mapping[str, Any]) -> DistroMirror | None:
    """cluster.distro_mirror: its keys as the table reads them, and the key file read on this machine."""
    if data is MISSING or data is None:
        return None
    path = "cluster.distro_mirror"
    m = r.section(data, path, path)
    if m is None:
        return None
    key = _read_key(r, f"{path}.key_file", m["key_file"]) if m["key_file"] else ""
    return DistroMirror(**m, key=key)


def _read_key(r: _Reader, path: str, name: str) -> str:
    """An ASCII-armored OpenPGP public key (one block, nothing else), read when the plan is loaded: cloud-init's
    apt module dearmors it with gpg on the node."""
    file = r.base / name
    fix = ("give the path of an ASCII-armored public key (gpg --armor --export KEYID > mirror.asc); relative "
           "paths are read from the plan's directory")
    try:
        if file.stat().st_size > DISTRO_MIRROR_KEY_MAX_BYTES:
            r.add(path, name, f"is larger than {DISTRO_MIRROR_KEY_MAX_BYTES} bytes", fix)
            return ""
        data = file.read_bytes()
    except OSError as exc:
        r.add(path, name, f"cannot be read: {exc.strerror}", fix)
        return ""
    try:
        text = data.decode("ascii").replace("\r\n", "\n")
    except UnicodeDecodeError:
        r.add(path, name, "is not an armored key (not ASCII)", fix)
        return ""
    if text.count("-----BEGIN ") != 1 or not _PGP_PUBLIC_KEY.fullmatch(text.strip() + "\n"):
        r.add(path, name, "must hold one ASCII-armored OpenPGP public key and nothing else "
              "(-----BEGIN PGP PUBLIC KEY BLOCK----- ... -----END PGP PUBLIC KEY BLOCK-----)", fix)
        return ""
    return text.strip() + "\n"


def _component_args(r: _Reader, data: object,
                    got: Mapping[str, Any]) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Extra flags for the control-plane components (kubeadm's extraArgs), e.g. longer leader-election
    timeouts on slow hosts: {controller-manager: {leader-elect-lease-duration: 60s}}."""
    if data is MISSING or data is None:
        return ()
    if not isinstance(data, dict):
        r.add("cluster.component_args", data, "must be a mapping of component to flags",
              f"components: {', '.join(COMPONENTS)}")
        return ()
    out = []
    for component, flags in data.items():
        path = f"cluster.component_args.{component}"
        if component not in COMPONENTS:
            r.add(path, MISSING, "is not a control-plane component",
                  _suggest(component, COMPONENTS, f"use one of {', '.join(COMPONENTS)}"))
            continue
        if not isinstance(flags, dict):
            r.add(path, flags, "must be a mapping of flag name (without --) to value")
            continue
        items = []
        for flag, value in flags.items():
            if not isinstance(flag, str) or not _FLAG.fullmatch(flag):
                r.add(f"{path}.{flag}", flag, "is not a flag name", "write it without the leading --")
            elif isinstance(value, bool) or not isinstance(value, (str, int)):
                r.add(f"{path}.{flag}", value, "must be a string or number")
            elif (verdict := values.flag_value(str(value))) is not None:
                r.add(f"{path}.{flag}", value, *verdict)
            else:
                items.append((flag, str(value)))
        out.append((component, tuple(sorted(items))))
    return tuple(sorted(out))


def _sysctl(r: _Reader, data: object, got: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    merged = dict(DEFAULT_SYSCTL)
    if data is not MISSING and data is not None:
        if not isinstance(data, dict):
            r.add("cluster.sysctl", data, "must be a mapping of sysctl key to value")
        else:
            for key, value in data.items():
                path = f"cluster.sysctl.{key}"
                if not isinstance(key, str) or not _SYSCTL_KEY.fullmatch(key):
                    r.add(path, key, "is not a sysctl key", "e.g. 'net.core.somaxconn'")
                elif key == "net.ipv4.tcp_tw_recycle":
                    r.add(path, value, "was removed from Linux 4.12 and breaks NAT clients", "drop this key")
                elif isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
                    r.add(path, value, "must be a number or string")
                elif (verdict := values.sysctl_value(str(value))) is not None:
                    r.add(path, value, *verdict)
                else:
                    merged[key] = str(value)
    return tuple(sorted(merged.items()))


def _journald(r: _Reader, data: object, got: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    merged = dict(DEFAULT_JOURNALD)
    if data is not MISSING and data is not None:
        if not isinstance(data, dict):
            r.add("cluster.journald", data, "must be a mapping of journald.conf key to value")
        else:
            for key, value in data.items():
                path = f"cluster.journald.{key}"
                if key not in JOURNALD_KEYS:
                    r.add(path, MISSING, "is not a journald.conf [Journal] key handled here",
                          _suggest(key, JOURNALD_KEYS, f"use one of {', '.join(JOURNALD_KEYS)}"))
                elif isinstance(value, bool):
                    merged[key] = "yes" if value else "no"
                elif not isinstance(value, (int, str)) or not _JOURNALD_VALUE.fullmatch(str(value)):
                    r.add(path, value, "must be a plain value such as '10G', 'yes' or '2week'")
                else:
                    merged[key] = str(value)
    return tuple(merged.items())


_NESTED: dict[str, Callable[[_Reader, object, Mapping[str, Any]], Any]] = {
    "nodes": _nodes, "cluster.mirrors": _mirrors, "cluster.distro_mirror": _distro_mirror,
    "cluster.component_args": _component_args,
    "cluster.sysctl": _sysctl, "cluster.journald": _journald}


# -- the plan ------------------------------------------------------------------------------------------------------

def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; raise PlanError listing every problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes() if source != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        raise PlanError([Problem("plan", source, f"cannot be read: {exc.strerror}", "check the path")],
                        source) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise PlanError([Problem("plan", MISSING, f"is not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line})",
                                 "save the plan as UTF-8")], source) from exc
    return parse_plan_text(text, source)


def parse_plan_text(text: str, source: str = "plan") -> Plan:
    try:
        data = safeyaml.load(text)
    except safeyaml.PlanYamlError as exc:
        raise PlanError([Problem("plan", MISSING, exc.message, exc.fix)], source) from exc
    except RecursionError as exc:
        raise PlanError([Problem("plan", MISSING, "is nested too deeply", "a plan is a few levels deep")],
                        source) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError([Problem("plan", MISSING, f"YAML syntax error at {where}: {problem}",
                                 "fix the YAML (indentation, quotes, colons)")], source) from exc
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise PlanError([Problem("plan", MISSING, f"the document is {kind}, not a mapping",
                                 "start with 'cluster:', 'endpoint:', 'network:' and 'nodes:' sections")], source)
    return parse_plan(data, source)


def parse_plan(data: dict[str, Any], source: str = "plan") -> Plan:
    plan_file = Path(source)
    r = _Reader(plan_file.resolve().parent if source != "-" and plan_file.is_file() else None)
    top = r.fields(r.keys(data, "", ""), "", "")
    cluster, endpoint, network = top["cluster"], top["endpoint"], top["network"]
    nodes, nodes_complete = top["nodes"]
    if endpoint is not None and cluster is not None and not endpoint.name:
        endpoint = replace(endpoint, name=f"{cluster.name}-api")  # resolved through /etc/hosts on every node
    cross_checks(r, Parsed(cluster, endpoint, network, nodes, nodes_complete, top["registry"], top["bundle"]))
    if r.problems or cluster is None or endpoint is None or network is None or not nodes_complete:
        if not r.problems:  # pragma: no cover - a None above always records a problem
            r.add("plan", MISSING, "is incomplete")
        raise PlanError(r.problems, source)
    return Plan(**{**top, "endpoint": endpoint, "nodes": nodes})
