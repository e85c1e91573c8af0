"""apt in a private root: its own sources, lists, archives and dpkg status under one directory, selected with
APT_CONFIG, so nothing on the host changes and nothing is installed anywhere (only --download-only, download and
-s). The status file says what the stock image already holds, so apt resolves only what a node would add."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Fields a dpkg status stanza carries (a Packages stanza without Filename, Size and hashes).
_STATUS_FIELDS = ("Package", "Essential", "Priority", "Section", "Installed-Size", "Maintainer", "Architecture",
                  "Multi-Arch", "Source", "Version", "Replaces", "Provides", "Depends", "Pre-Depends", "Recommends",
                  "Suggests", "Breaks", "Conflicts", "Enhances", "Description")
_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) ")


class AptError(RuntimeError):
    pass


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """deb822 stanzas (Packages, status) as ordered field dicts; continuation lines kept with their field."""
    out: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        key = ""
        for line in block.split("\n"):
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            out.append(fields)
    return out


class PrivateApt:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "apt.conf"

    def setup(self, sources: str) -> None:
        """Directories, apt.conf and sources.list (one-line format); keeps lists and archives already there."""
        r = self.root
        for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d", "etc/apt/trusted.gpg.d",
                  "etc/apt/keyrings", "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
                  "var/lib/dpkg", "var/log/apt"):
            (r / d).mkdir(parents=True, exist_ok=True)
        status = r / "var/lib/dpkg/status"
        if not status.exists():
            status.write_text("")
        (r / "etc/apt/sources.list").write_text(sources)
        self.config.write_text("\n".join([
            f'Dir "{r}/";',
            f'Dir::State::status "{status}";',
            'APT::Architecture "amd64";',
            'APT::Architectures { "amd64"; };',
            'APT::Install-Recommends "false";',
            'APT::Sandbox::User "root";',   # the private root is under root's 0700 home: no _apt downloads
            'Debug::NoLocking "true";',
            'Acquire::Retries "3";',
            'Acquire::Languages "none";',
            'Acquire::GzipIndexes "false";',
            "",
        ]))

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "APT_CONFIG": str(self.config), "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}

    def run(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(["apt-get", "-q", *args], capture_output=True, text=True, env=self.env, cwd=cwd,
                              check=False)
        if done.returncode != 0:
            raise AptError(f"apt-get {' '.join(args)} (APT_CONFIG={self.config}):\n{done.stdout[-3000:]}"
                           f"{done.stderr[-3000:]}")
        return done.stdout

    def update(self) -> str:
        return self.run("update")

    def simulate(self, packages: Iterable[str]) -> list[tuple[str, str]]:
        """(package, version) apt would install on top of the status file, in apt's order."""
        out = self.run("-s", "install", *packages)
        return [(m.group(1), m.group(2)) for m in map(_INST.match, out.splitlines()) if m]

    def download_only(self, packages: Iterable[str]) -> list[Path]:
        """`apt-get install --download-only`: the archives apt fetched (or had) for these packages."""
        wanted = self.simulate(packages)
        self.run("install", "-y", "--download-only", *packages)
        archives = self.root / "var/cache/apt/archives"
        return [self.archive(archives, name, version) for name, version in wanted]

    @staticmethod
    def archive(directory: Path, name: str, version: str) -> Path:
        # apt's archive names: the epoch's ':' becomes '%3a'.
        found = sorted(directory.glob(f"{name}_{version.replace(':', '%3a')}_*.deb"))
        if not found:
            raise AptError(f"{name} {version}: no archive in {directory}")
        return found[0]

    def list_stanzas(self) -> list[dict[str, str]]:
        """Every stanza of the Packages lists apt update fetched."""
        out: list[dict[str, str]] = []
        for f in sorted((self.root / "var/lib/apt/lists").glob("*_Packages")):
            out += parse_stanzas(f.read_text(errors="replace"))
        return out

    def write_status(self, installed: Iterable[tuple[str, str]], stanzas: list[dict[str, str]]) -> int:
        """Mark these (package, version) installed, with their fields from `stanzas`; returns how many."""
        by_key = {(s["Package"], s.get("Version", "")): s for s in stanzas}
        blocks = []
        for name, version in sorted(set(installed)):
            s = by_key.get((name, version), {"Package": name, "Version": version, "Architecture": "amd64",
                                             "Description": "(not in the lists)"})
            fields = {k: s[k] for k in _STATUS_FIELDS if k in s}
            fields["Description"] = fields.get("Description", "").split("\n")[0]
            lines = [f"Package: {name}", "Status: install ok installed"]
            lines += [f"{k}: {v}" for k, v in fields.items() if k != "Package"]
            blocks.append("\n".join(lines) + "\n")
        (self.root / "var/lib/dpkg/status").write_text("\n".join(blocks))
        return len(blocks)
