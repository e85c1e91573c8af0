"""A minimal NoCloud seed ISO for image boot checks (label cidata, Joliet + Rock Ridge names).

Node seeds come from `imagegen render`; this one only proves an image reaches cloud-init's final stage.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pycdlib


def write_nocloud_seed(path: Path, files: Mapping[str, bytes]) -> None:
    """Write `files` (user-data, meta-data, network-config ...) to an ISO 9660 volume labelled cidata."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    try:
        for name, data in sorted(files.items()):
            short = "".join(c for c in name.upper() if c.isalnum())[:8]
            iso.add_fp(io.BytesIO(data), len(data), f"/{short}.;1", rr_name=name, joliet_path=f"/{name}")
        tmp = path.with_name(path.name + ".tmp")
        iso.write(str(tmp))
        tmp.rename(path)
    finally:
        iso.close()


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
    write_nocloud_seed(path, trivial_seed_files(hostname, final_message))
