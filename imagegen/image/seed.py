"""A minimal NoCloud seed for image boot checks; node seeds come from `imagegen render`.

It only proves an image reaches cloud-init's final stage; the ISO itself is written by imagegen.seediso.
"""

from __future__ import annotations

from pathlib import Path

from imagegen.seediso import build_seed_iso


def trivial_seed_files(hostname: str, final_message: str) -> dict[str, bytes]:
    user_data = (
        "#cloud-config\n"
        f"hostname: {hostname}\n"
        # cloud-init prints final_message on /dev/console, i.e. the serial port in imagegen images.
        f'final_message: "{final_message}"\n'
    )
    meta_data = f"instance-id: {hostname}\nlocal-hostname: {hostname}\n"
    return {"user-data": user_data.encode(), "meta-data": meta_data.encode()}


def write_trivial_seed(path: Path, *, hostname: str, final_message: str) -> None:
    path.write_bytes(build_seed_iso(trivial_seed_files(hostname, final_message)))
