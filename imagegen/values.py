"""Conservative checks for plan values that reach a shell script or a config file on every node.

A value either passes one of these (and is then safe inside double quotes, single quotes, TOML basic strings,
YAML and line-oriented configs such as sysctl.d, timesyncd.conf and /etc/hosts) or it is a validation error.
Each checker returns None when the value is acceptable, else (message, fix). Patterns are matched with
`fullmatch`: Python's `$` also matches before a trailing newline, which would let "cp-1\\n" through.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from functools import cache
from urllib.parse import urlsplit, urlunsplit

Verdict = tuple[str, str] | None

# RFC 3986 characters minus everything a shell or a quoted config string treats specially
# (quotes, backslash, $, backtick, whitespace, <>, {}, |, ^).
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*")
# The Docker reference grammar (distribution/reference), restricted to what registries use in practice.
_IMAGE = re.compile(
    r"(?:(?P<registry>[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?)/)?"
    r"(?P<path>[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*)"
    r"(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(@sha256:[0-9a-f]{64})?")
_REPOSITORY = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_VOLUME_LABEL = re.compile(r"[A-Za-z0-9._-]+")
_SYSCTL_VALUE = re.compile(r"[A-Za-z0-9._:/,+-]+( [A-Za-z0-9._:/,+-]+)*")
_FLAG_VALUE = re.compile(r"[ -~]*")  # printable ASCII, no control characters
_LINUX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_PREFLIGHT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HARBOR_VERSION = re.compile(r"v[0-9]+\.[0-9]+\.[0-9]+")
_REGISTRY_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?")

# Durations as the plan writes them (token_ttl, certificate_signing_duration): 24h, 90m, 1h30m, 45s.
DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")

EXT4_LABEL_BYTES = 16

# Accounts Debian and Ubuntu create for themselves: cloud-init would add sudo rights and SSH keys to them.
SYSTEM_ACCOUNTS = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data",
    "backup", "list", "irc", "gnats", "nobody", "_apt", "messagebus", "sshd", "syslog", "systemd-network",
    "systemd-resolve", "systemd-timesync", "systemd-journal", "systemd-coredump", "polkitd", "tss", "uuidd",
    "tcpdump", "landscape", "pollinate", "usbmux", "dnsmasq", "lxd", "nginx", "keepalived_script", "etcd",
    "containerd", "docker", "kube", "admin", "ubuntu-advantage", "fwupd-refresh", "dhcpcd", "_chrony", "ntp",
})


def _host(host: str) -> bool:
    if not host:
        return False
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(part) for part in host.split("."))


def url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> Verdict:
    example = "e.g. 'https://mirror.example.internal/path/'"
    if not _URL_CHARS.fullmatch(value):
        return ("contains characters a URL may not carry here (spaces, quotes, $, backticks, backslashes, "
                "control characters or non-ASCII)", f"percent-encode them or use another URL; {example}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "is not a valid URL", example
    if parts.scheme not in schemes:
        return f"must be a {'/'.join(schemes)} URL", example
    if not _host(parts.hostname or "") or parts.username is not None or parts.password is not None:
        return "needs a host name or IPv4 address (and no user:password@)", example
    if port is not None and not 0 < port < 65536:
        return "has an invalid port", example
    if urlunsplit(parts) != value:
        return "is not in canonical form", f"write '{urlunsplit(parts)}'"
    return None


def absolute_path(value: str) -> Verdict:
    fix = "use an absolute path of letters, digits and . _ + @ - / only, e.g. '/data/harbor'"
    if not _PATH.fullmatch(value) or any(part in (".", "..") for part in value.split("/")) or "//" in value:
        return "must be a normalised absolute path without spaces, quotes or shell characters", fix
    return None


def url_or_path(value: str) -> Verdict:
    if value.startswith("/"):
        return absolute_path(value)
    return url(value)


def image(value: str) -> Verdict:
    if not _IMAGE.fullmatch(value):
        return ("is not a container image reference",
                "write REGISTRY/PATH:TAG in lower case, e.g. 'ghcr.io/kube-vip/kube-vip:v0.8.9'")
    return None


def image_repository(value: str) -> Verdict:
    if not _REPOSITORY.fullmatch(value):
        return "is not an image repository", "write REGISTRY[/PATH] in lower case, e.g. 'registry.k8s.io'"
    return None


def image_tag(value: str) -> Verdict:
    if not _TAG.fullmatch(value):
        return "is not an image tag", "letters, digits, '_', '.' and '-', at most 128, e.g. '3.4.13-0'"
    return None


def volume_label(value: str) -> Verdict:
    size = len(value.encode())
    if not _VOLUME_LABEL.fullmatch(value):
        return ("may hold only ASCII letters, digits, '.', '_' and '-' (what both ext4 and ISO 9660 labels "
                "and blkid -L carry unchanged)", "e.g. 'imagegen-bundle'")
    if size > EXT4_LABEL_BYTES:
        return f"is {size} bytes; an ext4 label holds at most {EXT4_LABEL_BYTES}", "shorten it"
    return None


def sysctl_value(value: str) -> Verdict:
    if not _SYSCTL_VALUE.fullmatch(value):
        return ("must be a single-line value of letters, digits and . _ : / , + - separated by single spaces",
                "e.g. '1' or '4096 87380 6291456'")
    return None


def flag_value(value: str) -> Verdict:
    if not _FLAG_VALUE.fullmatch(value):
        return "must be printable ASCII on one line", "remove newlines and control characters"
    return None


def host_or_ip(value: str) -> Verdict:
    if not _host(value):
        return "is not a host name or IPv4 address", "e.g. 'ntp.example.internal' or '192.168.10.1'"
    return None


def registry_host(value: str) -> Verdict:
    host = value.rsplit(":", 1)[0] if _REGISTRY_HOST.fullmatch(value) else ""
    if host and _host(host):
        return None
    try:
        ipaddress.IPv4Network(value)
        return None
    except ValueError:
        return "is not a registry HOST[:PORT] or an IPv4 CIDR", "e.g. 'registry.example.internal:5000'"


def registry_name(value: str) -> Verdict:
    """A registry as image references name it (HOST[:PORT]): also a directory name under /etc/containerd/certs.d."""
    fix = "write the registry's host name in lower case, with :PORT if images name one, e.g. 'ghcr.io'"
    if not _REGISTRY_HOST.fullmatch(value):
        return "is not a registry HOST[:PORT]", fix
    host, _, port = value.partition(":")
    if not _host(host) or (port and not 0 < int(port) < 65536):
        return "is not a registry HOST[:PORT]", fix
    return None


def local_file_name(value: str) -> Verdict:
    """A file on the operator's machine, read at render time (never written into a node's shell or config)."""
    if not _FLAG_VALUE.fullmatch(value) or not value.strip():
        return "must be a file name on one line of printable ASCII", "e.g. 'certs/mirror-ca.pem'"
    return None


_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?")


def pem_certificates(data: bytes) -> Verdict:
    """One or more PEM certificates and nothing else (no private key by mistake), each one X.509 can load."""
    from cryptography import x509

    fix = "give the CA certificate(s) as PEM (-----BEGIN CERTIFICATE-----), without keys or other text"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return "is not a PEM file (not ASCII)", fix
    blocks = _PEM_CERT.findall(text)
    if not blocks or _PEM_CERT.sub("", text).strip():
        return "must hold only PEM certificates", fix
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        return f"holds a certificate X.509 cannot read ({exc})", fix
    return None


def preflight_check(value: str) -> Verdict:
    if not _PREFLIGHT.fullmatch(value):
        return "is not a kubeadm preflight check name", "e.g. 'NumCPU', 'Swap' or 'all'"
    return None


def harbor_version(value: str) -> Verdict:
    if not _HARBOR_VERSION.fullmatch(value):
        return "is not a Harbor release", "write vMAJOR.MINOR.PATCH, e.g. 'v2.11.1'"
    return None


def admin_user(value: str) -> Verdict:
    if not _LINUX_USER.fullmatch(value):
        return ("is not a Linux user name",
                "lower-case letters, digits, '_' and '-', starting with a letter or '_', at most 32")
    if value in SYSTEM_ACCOUNTS or value.startswith("systemd-"):
        return ("is a system account of the distribution; cloud-init would give it SSH keys and sudo "
                "(and root login is disabled)", "use a personal or team account name, e.g. 'ops'")
    return None


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezone(value: str) -> Verdict:
    fix = "use an IANA zone name such as 'UTC' or 'Europe/Berlin'"
    if (not re.fullmatch(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", value)
            or any(part in (".", "..") for part in value.split("/"))):
        return "is not a time zone name (no paths, spaces or dots)", fix
    zones = _zones()
    if zones and value not in zones:
        return "is not a known time zone", fix
    return None
