"""What a node image contains, parsed once from an image spec (profiles/images/*.yaml) into frozen values.

Everything here is pure: the spec, the choices made by command-line flags, and the cache key that names a build.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from imagegen.errors import UsageError

# Bump when the way an image is assembled changes in a way the rendered build scripts do not show
# (disk layout, conversion options): every cached image is then rebuilt once.
RECIPE_VERSION = 3

_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_MODULE_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


class Kernel(enum.Enum):
    """Kernel flavour: the cloud kernel boots faster and is smaller, the generic one carries VMware's drivers."""

    CLOUD = "cloud"
    GENERIC = "generic"


class ImageFormat(enum.Enum):
    QCOW2 = "qcow2"
    QCOW2_COMPRESSED = "qcow2c"
    RAW = "raw"
    VMDK = "vmdk"
    OVA = "ova"

    @property
    def suffix(self) -> str:
        return {
            ImageFormat.QCOW2: ".qcow2",
            ImageFormat.QCOW2_COMPRESSED: ".compressed.qcow2",
            ImageFormat.RAW: ".raw",
            ImageFormat.VMDK: ".vmdk",
            ImageFormat.OVA: ".ova",
        }[self]


@dataclass(frozen=True)
class ImageSpec:
    """A fully resolved image: the kernel is chosen, packages are flat and sorted, the bundle is a path or None."""

    name: str
    description: str
    suite: str
    mirror: str
    kernel: Kernel
    packages: tuple[str, ...]
    required_modules: tuple[str, ...]
    remove_files: tuple[str, ...]
    disk_size_gib: int
    formats: tuple[ImageFormat, ...]
    bundle: Path | None = None
    # Installed for some roles, started only where a node's bootstrap enables them.
    disabled_services: tuple[str, ...] = ()

    @property
    def artefact_name(self) -> str:
        """Base name of the image files: node-cloud, node-generic."""
        return f"{self.name}-{self.kernel.value}"

    def identity(self) -> dict[str, object]:
        """The inputs that shape the image's bytes (formats are derived outputs, so not part of it)."""
        return {
            "name": self.name,
            "suite": self.suite,
            "mirror": self.mirror,
            "kernel": self.kernel.value,
            "packages": list(self.packages),
            "required_modules": list(self.required_modules),
            "remove_files": list(self.remove_files),
            "disabled_services": list(self.disabled_services),
            "disk_size_gib": self.disk_size_gib,
        }


def _problem(field: str, value: object, message: str, fix: str) -> UsageError:
    return UsageError(f"image spec: {field}: {message} (got {value!r}); {fix}")


def _str_list(data: Mapping[str, object], field: str, pattern: re.Pattern[str], required: bool,
              where: str = "") -> list[str]:
    value = data.get(field)
    field = where + field
    if value is None:
        if required:
            raise _problem(field, value, "missing", f"give {field} as a list")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _problem(field, value, "must be a list of strings", f"write {field}: [a, b]")
    for item in value:
        if not pattern.match(item):
            raise _problem(field, item, "not a valid name", f"fix the entry in {field}")
    return value


def parse_formats(text: str) -> tuple[ImageFormat, ...]:
    """`qcow2,raw,vmdk` -> formats; order kept, duplicates dropped."""
    known = {f.value: f for f in ImageFormat}
    out: list[ImageFormat] = []
    for item in (p.strip() for p in text.split(",")):
        if item not in known:
            raise UsageError(f"--formats: unknown format {item!r}; choose from {', '.join(known)}")
        if known[item] not in out:
            out.append(known[item])
    if not out:
        raise UsageError("--formats: empty; give at least one of " + ", ".join(known))
    return tuple(out)


def parse_spec(data: object, *, kernel: str | None = None, bundle: Path | None = None,
               formats: tuple[ImageFormat, ...] | None = None) -> ImageSpec:
    """Validate a loaded spec document and apply command-line choices. Raises UsageError naming the field."""
    if not isinstance(data, dict):
        raise _problem("(document)", type(data).__name__, "must be a mapping", "see profiles/images/node.yaml")
    known_keys = {"name", "description", "suite", "mirror", "kernel", "disk_size_gib", "formats",
                  "kernel_packages", "packages", "required_modules", "remove_files", "disabled_services"}
    for key in data:
        if key not in known_keys:
            raise _problem(str(key), data[key], "unknown setting", f"use one of {', '.join(sorted(known_keys))}")

    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _problem("name", name, "must be lower-case letters, digits and dashes", "e.g. name: node")
    suite = data.get("suite", "bookworm")
    if suite != "bookworm":
        raise _problem("suite", suite, "only Debian 12 is supported", "use suite: bookworm")
    mirror = data.get("mirror", "http://deb.debian.org/debian")
    if not isinstance(mirror, str) or not re.match(r"^(https?|file)://\S+$", mirror):
        raise _problem("mirror", mirror, "must be an http(s):// or file:// URL", "e.g. http://deb.debian.org/debian")

    kernel_text = kernel if kernel is not None else data.get("kernel", "cloud")
    try:
        chosen = Kernel(kernel_text)
    except ValueError:
        raise _problem("kernel", kernel_text, "unknown kernel flavour", "use cloud or generic") from None

    kernel_packages = data.get("kernel_packages")
    if not isinstance(kernel_packages, dict) or chosen.value not in kernel_packages:
        raise _problem("kernel_packages", kernel_packages, f"needs an entry for {chosen.value!r}",
                       f"add kernel_packages: {{{chosen.value}: [linux-image-...]}}")
    kpkgs = _str_list(kernel_packages, chosen.value, _PACKAGE_RE, required=True, where="kernel_packages.")
    if not any(p.startswith("linux-image-") for p in kpkgs):
        raise _problem(f"kernel_packages.{chosen.value}", kpkgs, "has no linux-image-* package", "add one")

    groups = data.get("packages")
    if not isinstance(groups, dict) or not groups:
        raise _problem("packages", groups, "must map group names to package lists", "see profiles/images/node.yaml")
    packages: set[str] = set(kpkgs)
    for group in groups:
        packages.update(_str_list(groups, str(group), _PACKAGE_RE, required=True, where="packages."))
    # The image is useless without these; saying so here beats a build that fails four minutes later.
    for needed in ("cloud-init", "openssh-server", "grub-pc-bin", "grub-efi-amd64-bin", "systemd-sysv"):
        if needed not in packages:
            raise _problem("packages", needed, "required package missing", f"add {needed} to a package group")

    size = data.get("disk_size_gib", 8)
    if not isinstance(size, int) or isinstance(size, bool) or not 2 <= size <= 2048:
        raise _problem("disk_size_gib", size, "must be an integer between 2 and 2048", "e.g. disk_size_gib: 8")

    if formats is None:
        spec_formats = data.get("formats", ["qcow2"])
        if not isinstance(spec_formats, list) or not spec_formats:
            raise _problem("formats", spec_formats, "must be a non-empty list", "e.g. formats: [qcow2]")
        formats = parse_formats(",".join(str(f) for f in spec_formats))

    remove = _str_list(data, "remove_files", re.compile(r"^/[\w./@+-]+$"), required=False)
    disabled = _str_list(data, "disabled_services", re.compile(r"^[\w@.-]+\.(service|socket|timer)$"),
                         required=False)
    description = data.get("description", "")
    return ImageSpec(
        name=name,
        description=str(description),
        suite=suite,
        mirror=mirror.rstrip("/"),
        kernel=chosen,
        packages=tuple(sorted(packages)),
        required_modules=tuple(sorted(set(_str_list(data, "required_modules", _MODULE_RE, required=False)))),
        remove_files=tuple(sorted(set(remove))),
        disabled_services=tuple(sorted(set(disabled))),
        disk_size_gib=size,
        formats=formats,
        bundle=bundle,
    )


def with_formats(spec: ImageSpec, formats: tuple[ImageFormat, ...]) -> ImageSpec:
    return replace(spec, formats=formats)


def identity_key(spec: ImageSpec, *, bundle_digest: str | None) -> str:
    """Hash of what goes into the image (spec + bundle content); disk identifiers derive from it."""
    doc = {"recipe_version": RECIPE_VERSION, "spec": spec.identity(), "bundle": bundle_digest}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_key(identity: str, recipe: Mapping[str, str]) -> str:
    """Content address of a build: the identity plus the exact texts the build writes and runs.

    `recipe` maps names to rendered files and scripts; a change in any of them is a new image.
    """
    doc = {
        "identity": identity,
        "recipe": {k: hashlib.sha256(v.encode()).hexdigest() for k, v in sorted(recipe.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
