"""The Kubernetes version table: newest patch per minor, kubeadm's etcd and CoreDNS tags.

`profiles/compat/kubernetes-versions.yaml`, beside the runtime/CNI version pairs (imagegen.compat).

Data, not code: updating imagegen for a new patch release means editing one YAML line and its `updated` date.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import yaml

from imagegen.resources import data_dir
from imagegen.versions import MAX_MINOR, MIN_MINOR, KubeVersion


@dataclass(frozen=True)
class MinorRelease:
    minor: int
    newest: KubeVersion
    source: str
    etcd: str
    coredns: str


@dataclass(frozen=True)
class VersionTable:
    updated: str
    minors: tuple[MinorRelease, ...]

    def release(self, minor: int) -> MinorRelease | None:
        return next((m for m in self.minors if m.minor == minor), None)

    def resolve(self, text: str) -> KubeVersion:
        """'1.33' -> the newest known 1.33 patch; '1.33.2' (or 'v1.33.2') -> itself. ValueError names the fix."""
        text = text[1:] if text.startswith("v") else text
        parts = text.split(".")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            release = self.release(int(parts[1])) if parts[0] == "1" else None
            if release is None:
                raise ValueError(f"Kubernetes {text} is not in imagegen's version table; use 1.{MIN_MINOR} to "
                                 f"1.{MAX_MINOR}")
            return release.newest
        try:
            version = KubeVersion.parse(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a Kubernetes version; write 1.33 or 1.33.7") from None
        if not version.supported():
            raise ValueError(f"Kubernetes {text} is not supported; use 1.{MIN_MINOR} to 1.{MAX_MINOR}")
        return version

    def warning(self, version: KubeVersion) -> str | None:
        """A warning when `version`'s patch is newer than the table knows (it may not exist)."""
        release = self.release(version.minor)
        if release is None or version.patch <= release.newest.patch:
            return None
        return (f"Kubernetes {version} is not in imagegen's version table (newest known {release.newest}, table "
                f"updated {self.updated}); check that the release exists, or update "
                "profiles/compat/kubernetes-versions.yaml")


@cache
def version_table() -> VersionTable:
    data = yaml.safe_load((data_dir() / "profiles" / "compat" / "kubernetes-versions.yaml").read_text())
    minors = []
    for key, entry in data["minors"].items():
        newest = KubeVersion.parse(entry["newest"])
        if f"{newest.major}.{newest.minor}" != key:
            raise ValueError(f"profiles/compat/kubernetes-versions.yaml: {key} lists {newest}")
        minors.append(MinorRelease(newest.minor, newest, entry["source"], entry["etcd"], entry["coredns"]))
    return VersionTable(updated=str(data["updated"]), minors=tuple(sorted(minors, key=lambda m: m.minor)))
