"""Role profiles and distributions, read from `profiles/` (data, not code).

A profile names the files a role gets (each from a template, a generator or a state item), the package groups
it needs, the secret groups it may see and its first-boot steps. `include` merges another profile first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from imagegen import secretpolicy
from imagegen.resources import data_dir


@dataclass(frozen=True)
class FileSpec:
    path: str
    template: str = ""
    generator: str = ""
    state: str = ""
    mode: str = "0644"
    when: str = ""
    foreach: str = ""
    append: bool = False
    shell: bool = False
    secret: bool = False


@dataclass(frozen=True)
class StepSpec:
    name: str
    when: str = ""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    files: tuple[FileSpec, ...]
    packages: tuple[str, ...]
    secrets: tuple[str, ...]
    steps: tuple[StepSpec, ...]


@dataclass(frozen=True)
class Distro:
    name: str
    family: str
    codename: str
    cni_plugin_dir: str
    packages: dict[str, tuple[str, ...]]
    cri_dockerd_package: str
    mirror_components: tuple[str, ...] = ("main",)   # what a cluster.distro_mirror sources.list line names

    def package_names(self, groups: tuple[str, ...]) -> tuple[str, ...]:
        names: list[str] = []
        for group in groups:
            for name in self.packages[group]:
                if name not in names:
                    names.append(name)
        return tuple(names)


class ProfileError(Exception):
    pass


def _read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: must be a mapping")
    return data


def _file_spec(path: Path, raw: dict[str, Any]) -> FileSpec:
    allowed = set(FileSpec.__dataclass_fields__)
    unknown = set(raw) - allowed
    if unknown:
        raise ProfileError(f"{path}: unknown file keys {sorted(unknown)}")
    sources = [k for k in ("template", "generator", "state") if raw.get(k)]
    if len(sources) != 1:
        raise ProfileError(f"{path}: file {raw.get('path')} needs exactly one of template, generator, state")
    spec = FileSpec(**raw)
    if spec.state and secretpolicy.state_item_is_secret(spec.state):
        spec = FileSpec(**{**raw, "secret": True, "mode": secretpolicy.SECRET_MODE})
    return spec


@cache
def load_profile(role: str) -> Profile:
    root = data_dir() / "profiles"
    files: list[FileSpec] = []
    packages: list[str] = []
    secrets: list[str] = []
    steps: list[StepSpec] = []
    description = ""

    def merge(name: str, seen: tuple[str, ...]) -> None:
        nonlocal description
        if name in seen:
            raise ProfileError(f"profiles/{name}.yaml: include cycle {' -> '.join((*seen, name))}")
        path = root / f"{name}.yaml"
        if not path.exists():
            raise ProfileError(f"no profile {path}")
        data = _read(path)
        for inc in data.get("include", []):
            merge(inc, (*seen, name))
        description = data.get("description", description)
        files.extend(_file_spec(path, f) for f in data.get("files", []))
        packages.extend(p for p in data.get("packages", []) if p not in packages)
        for s in data.get("secrets", []):
            try:
                secrets.append(secretpolicy.group(s).value)
            except secretpolicy.SecretPolicyError as exc:
                raise ProfileError(f"{path}: {exc}") from None
        for st in data.get("steps", []):
            steps.append(StepSpec(st) if isinstance(st, str) else StepSpec(**st))

    merge(role, ())
    from imagegen.nodeprogram import check_steps  # nodeprogram builds on this module's FileSpec

    check_steps(role, (s.name for s in steps))
    return Profile(name=role, description=description, files=tuple(files), packages=tuple(packages),
                   secrets=tuple(secrets), steps=tuple(steps))


@cache
def load_distro(name: str) -> Distro:
    path = data_dir() / "profiles" / "distros" / f"{name}.yaml"
    data = _read(path)
    return Distro(name=name, family=data["family"], codename=data["codename"],
                  cni_plugin_dir=data["cni_plugin_dir"],
                  packages={k: tuple(v) for k, v in data["packages"].items()},
                  cri_dockerd_package=data["cri_dockerd_package"],
                  mirror_components=tuple(data["mirror_components"]))
