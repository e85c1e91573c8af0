"""Offline Kubernetes bundle: format (pure), packing/verifying/disk images (I/O), docker-archive writer."""

from imagegen.bundle.format import (
    DISK_LABEL,
    FORMAT_VERSION,
    BundleFormatError,
    Manifest,
)
from imagegen.bundle.pack import (
    BundleError,
    PackSpec,
    make_disk,
    pack_bundle,
    verify_bundle,
)

__all__ = [
    "DISK_LABEL",
    "FORMAT_VERSION",
    "BundleError",
    "BundleFormatError",
    "Manifest",
    "PackSpec",
    "make_disk",
    "pack_bundle",
    "verify_bundle",
]
