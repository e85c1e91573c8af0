"""User-data sized for where it goes: gzip (cloud-init decompresses gzip user-data on every datasource:
`cloudinit.user_data.convert_string` calls `util.decomp_gzip`, 22.4 and 25.1) and each platform's documented limit.

- AWS EC2: 16 KB (16,384 bytes), counted raw, before base64 (EC2 User Guide, "Work with instance user data").
- OpenStack Nova: 65,535 bytes of base64 text (Nova docs, "Provide user data to instances").
- Azure: 65,535 bytes of decoded custom data (Compute API, `osProfile.customData`).
- Google Compute Engine: 262,144 bytes (256 KiB) per metadata value, a string: gzip goes base64 there, with
  `user-data-encoding: base64` (Compute API, `Metadata.items[].value`).

Pure: sizes in, verdicts out. `check` raises PlanError (exit 2) only for the platforms the plan names in
`cluster.platform_limits`, when neither the raw nor the gzip user-data fits.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from typing import Any

from imagegen.errors import PlanError, Problem
from imagegen.plan import Node


@dataclass(frozen=True)
class PlatformLimit:
    name: str
    title: str
    limit: int
    base64_always: bool   # the API counts base64 text even for text user-data (Nova)
    binary_ok: bool       # gzip bytes may be passed as they are (else base64 text)
    source: str


LIMITS: dict[str, PlatformLimit] = {p.name: p for p in (
    PlatformLimit("ec2", "AWS EC2 user data", 16384, False, True,
                  "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html"),
    PlatformLimit("openstack", "OpenStack Nova user_data", 65535, True, True,
                  "https://docs.openstack.org/nova/stein/user/user-data.html"),
    PlatformLimit("azure", "Azure custom data", 65535, False, True,
                  "https://learn.microsoft.com/en-us/javascript/api/@azure/arm-compute/osprofileprovisioningdata"),
    PlatformLimit("gce", "GCE metadata value", 262144, False, False,
                  "https://cloud.google.com/php/docs/reference/cloud-compute/latest/V1.Items"),
)}


def gzip_user_data(user_data: bytes) -> bytes:
    """mtime 0 and no file name: the same user-data gives the same bytes. Level 9: the size is the point here."""
    return gzip.compress(user_data, compresslevel=9, mtime=0)


def _b64(size: int) -> int:
    return 4 * math.ceil(size / 3)


def delivered_size(platform: PlatformLimit, size: int, binary: bool) -> int:
    """What the platform counts for `size` bytes of user-data (gzip is binary)."""
    if platform.base64_always or (binary and not platform.binary_ok):
        return _b64(size)
    return size


def fit(user_data: bytes, gzipped: bytes) -> dict[str, Any]:
    """Per platform: the counted sizes of the raw and gzip user-data, the limit, and which form fits (raw
    preferred, then gzip, else null)."""
    out: dict[str, Any] = {}
    for name, p in LIMITS.items():
        raw = delivered_size(p, len(user_data), binary=False)
        gz = delivered_size(p, len(gzipped), binary=True)
        out[name] = {"limit": p.limit, "raw": raw, "gzip": gz,
                     "fits": "raw" if raw <= p.limit else "gzip" if gz <= p.limit else None}
    return out


def report(name: str, role: str, user_data: bytes, gzipped: bytes) -> dict[str, Any]:
    return {"name": name, "role": role, "raw": len(user_data), "gzip": len(gzipped),
            "platforms": fit(user_data, gzipped)}


def check(platforms: tuple[str, ...], node: Node, user_data: bytes, gzipped: bytes) -> None:
    """Refuse a node whose user-data fits a platform the plan asks for in neither form."""
    verdicts = fit(user_data, gzipped)
    problems = []
    for name in platforms:
        v = verdicts[name]
        if v["fits"] is None:
            p = LIMITS[name]
            problems.append(Problem(
                "cluster.platform_limits", name,
                f"node {node.name} ({node.role}): user-data is {v['raw']} bytes raw and {v['gzip']} gzipped as "
                f"{p.title} counts them, over its limit of {p.limit}",
                "seed this node another way (the NoCloud seed ISO, the config drive ISO, guestinfo or imagegen "
                f"serve carry any size) and drop '{name}' from cluster.platform_limits"))
    if problems:
        raise PlanError(problems)


def sizes_text(reports: list[dict[str, Any]]) -> str:
    """One line per node: raw and gzip sizes, and per platform the form that fits ('raw', 'gzip' or 'NO')."""
    names = list(LIMITS)
    rows = [("NODE", "ROLE", "RAW", "GZIP", *(n.upper() for n in names))]
    for r in reports:
        rows.append((r["name"], r["role"], str(r["raw"]), str(r["gzip"]),
                     *(r["platforms"][n]["fits"] or "NO" for n in names)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append("limits: " + ", ".join(f"{n} {LIMITS[n].limit}" + (" (base64)" if LIMITS[n].base64_always else "")
                                        for n in names) + " bytes; gzip: upload nodes/<name>/user-data.gz")
    return "\n".join(lines)
