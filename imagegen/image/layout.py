"""Disk geometry and identifiers of a node image: pure arithmetic, no I/O.

GPT with a BIOS boot partition (GRUB's core.img for SeaBIOS), an EFI system partition (GRUB for OVMF/UEFI) and
root last, so cloud-init's growpart can extend root when a VM's disk is bigger than the image.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

SECTOR = 512
MIB = 1024 * 1024
GIB = 1024 * MIB

BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_FS_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

# Fixed namespace so identifiers follow from the cache key alone: same inputs, same disk identifiers.
_NAMESPACE = uuid.UUID("6f1c7a52-3c1e-4e55-9a0c-5e2b8d0a4b11")


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    type_guid: str
    uuid: str
    start: int  # bytes
    size: int  # bytes

    @property
    def start_sector(self) -> int:
        return self.start // SECTOR

    @property
    def size_sectors(self) -> int:
        return self.size // SECTOR


@dataclass(frozen=True)
class DiskLayout:
    total: int
    disk_guid: str
    bios: Partition
    esp: Partition
    root: Partition
    root_fs_uuid: str
    esp_volume_id: str  # 8 hex digits, what mkfs.fat -i takes; fstab spells it XXXX-XXXX

    @property
    def esp_fs_uuid(self) -> str:
        return f"{self.esp_volume_id[:4]}-{self.esp_volume_id[4:]}".upper()

    def sfdisk_script(self) -> str:
        lines = ["label: gpt", f"label-id: {self.disk_guid}", "unit: sectors", "first-lba: 2048", ""]
        for p in (self.bios, self.esp, self.root):
            lines.append(f'start={p.start_sector}, size={p.size_sectors}, type={p.type_guid}, '
                         f'uuid={p.uuid}, name="{p.name}"')
        return "\n".join(lines) + "\n"


def _uid(key: str, what: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{key}/{what}")).upper()


def plan_disk(size_gib: int, key: str, *, esp_mib: int = 126) -> DiskLayout:
    """Partition a disk of `size_gib` GiB; identifiers derive from `key` (the build's cache key)."""
    total = size_gib * GIB
    bios = Partition(1, "bios", BIOS_BOOT_TYPE, _uid(key, "part-bios"), 1 * MIB, 1 * MIB)
    esp = Partition(2, "esp", ESP_TYPE, _uid(key, "part-esp"), bios.start + bios.size, esp_mib * MIB)
    root_start = esp.start + esp.size
    # 1 MiB spare at the end holds the backup GPT (33 sectors) and keeps the root size MiB-aligned.
    root = Partition(3, "root", LINUX_FS_TYPE, _uid(key, "part-root"), root_start, total - root_start - MIB)
    return DiskLayout(
        total=total,
        disk_guid=_uid(key, "disk"),
        bios=bios,
        esp=esp,
        root=root,
        root_fs_uuid=str(uuid.uuid5(_NAMESPACE, f"{key}/fs-root")),
        esp_volume_id=uuid.uuid5(_NAMESPACE, f"{key}/fs-esp").hex[:8],
    )


def disk_size_for(content_bytes: int, wanted_gib: int) -> int:
    """GiB needed so the root filesystem is at most ~75% full on first boot; never below the spec's size."""
    needed = (content_bytes * 4 // 3 + 512 * MIB + 128 * MIB + GIB - 1) // GIB
    return max(wanted_gib, needed)
