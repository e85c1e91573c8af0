"""Writes the partitioned disk image as a plain file: sfdisk, mkfs.fat and mke2fs at byte offsets.

No loop devices and no mounts: this host's kernel has neither partition scanning on loop devices nor vfat.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from imagegen.image.layout import SECTOR, DiskLayout
from imagegen.image.proc import run


def write_disk(raw: Path, layout: DiskLayout, rootfs: Path, log: IO[str]) -> None:
    with raw.open("wb") as f:
        f.truncate(layout.total)  # sparse: only written blocks take space
    run(["sfdisk", "--no-reread", "--no-tell-kernel", str(raw)], log, step="partition (sfdisk)",
        input_text=layout.sfdisk_script())
    esp = layout.esp
    # -s 1: with bigger clusters a 126 MiB FAT32 is too small to be valid and OVMF falls back to its shell.
    run(["mkfs.fat", "-F", "32", "-s", "1", "-n", "EFI", "-i", layout.esp_volume_id,
         "--offset", str(esp.start // SECTOR), str(raw), str(esp.size // 1024)], log, step="ESP (mkfs.fat)")
    root = layout.root
    # GRUB 2.06 cannot read ext4 with orphan_file or metadata_csum_seed (e2fsprogs 1.47 defaults).
    run(["mke2fs", "-t", "ext4", "-F", "-q", "-b", "4096", "-L", "root", "-U", layout.root_fs_uuid,
         "-O", "^orphan_file,^metadata_csum_seed", "-E", f"offset={root.start}", "-d", str(rootfs),
         str(raw), f"{root.size // 1024}k"], log, step="root filesystem (mke2fs -d)", timeout=1200)
