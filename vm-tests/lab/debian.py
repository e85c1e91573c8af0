"""The lab's Debian repository: for each package group of profiles/distros/debian-12.yaml (and the Debian
packages the Kubernetes .debs depend on), what apt adds on top of the stock image, downloaded once from Debian's
mirror in a private apt root and published as a signed `bookworm main` repository.

"On top of the stock image": the private root's dpkg status lists the stock image's packages, taken from its
build's packages.txt when `imagegen image build --spec stock` has run, else from apt's own simulation of what
mmdebstrap --variant=minbase installs (Essential and Priority: required, plus the spec's packages, no Recommends).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.aptroot import DEBIAN_KEYRING, PrivateApt


@dataclass
class DebianRepoResult:
    stock_source: str                              # packages.txt path, or "simulated"
    stock_packages: int
    groups: dict[str, list[str]] = field(default_factory=dict)   # group -> package_version it needed
    files: list[str] = field(default_factory=list)               # pool/main/*.deb


def stock_installed(apt: PrivateApt, packages: tuple[str, ...],
                    packages_txt: Path | None) -> tuple[str, list[tuple[str, str]]]:
    """(where it came from, (package, version) the stock image holds)."""
    if packages_txt is not None and packages_txt.is_file():
        pairs = [tuple(line.split(" ", 1)) for line in packages_txt.read_text().splitlines() if " " in line]
        return str(packages_txt), [(p[0], p[1]) for p in pairs]
    minbase = [s["Package"] for s in apt.list_stanzas()
               if s.get("Essential") == "yes" or s.get("Priority") == "required"]
    return "simulated", apt.simulate([*sorted(set(minbase)), "apt", *packages])


def build_debian_repo(*, apt_root: Path, out: Path, mirror: str, suite: str, stock_packages: tuple[str, ...],
                      packages_txt: Path | None, groups: dict[str, list[str]],
                      publish: Callable[[Path], None], log: Callable[[str], None] = print) -> DebianRepoResult:
    apt = PrivateApt(apt_root)
    apt.setup(f"deb [signed-by={DEBIAN_KEYRING}] {mirror} {suite} main\n")
    # Start from an empty status so the update and the minbase simulation see the whole suite.
    (apt_root / "var/lib/dpkg/status").write_text("")
    log(f"apt-get update ({mirror} {suite}) in {apt_root}")
    apt.update()
    source, installed = stock_installed(apt, stock_packages, packages_txt)
    count = apt.write_status(installed, apt.list_stanzas())
    log(f"stock image: {count} packages ({source})")
    result = DebianRepoResult(source, count)
    pool = out / "pool" / "main"
    shutil.rmtree(out, ignore_errors=True)
    pool.mkdir(parents=True)
    for group, packages in groups.items():
        archives = apt.download_only(packages)
        result.groups[group] = [a.name.rsplit("_", 1)[0].replace("%3a", ":").replace("_", "=", 1)
                                for a in archives]
        log(f"group {group}: {len(archives)} packages to add to the stock image")
        for a in archives:
            target = pool / a.name
            if not target.exists():
                os.link(a, target) if a.stat().st_dev == pool.stat().st_dev else shutil.copy2(a, target)
    result.files = sorted(f"pool/main/{p.name}" for p in pool.glob("*.deb"))
    publish(out)
    return result
