"""Seed ISOs built in memory with pycdlib: ISO 9660 + Joliet + Rock Ridge; NoCloud's volume id `cidata` (and the
OpenStack config drive's `config-2`, imagegen.configdrive, through the same `build_iso`).

Deterministic: pycdlib stamps every date with time.time() in local time, so while an ISO is built its modules
see a clock fixed at SEED_EPOCH in UTC. The same files give the same bytes on any host, in any time zone.
"""

from __future__ import annotations

import io
import threading
import time as _time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pycdlib
import pycdlib.dates
import pycdlib.headervd
import pycdlib.pycdlib

SEED_EPOCH = 1577836800  # 2020-01-01T00:00:00Z
VOLUME_ID = "cidata"
_PATCHED = (pycdlib.dates, pycdlib.headervd, pycdlib.pycdlib)
_lock = threading.Lock()


class _FixedClock:
    @staticmethod
    def time() -> float:
        return float(SEED_EPOCH)

    @staticmethod
    def localtime(seconds: float | None = None) -> _time.struct_time:
        return _time.gmtime(SEED_EPOCH if seconds is None else seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(_time, name)


@contextmanager
def _fixed_clock() -> Iterator[None]:
    with _lock:
        # pycdlib's modules import `time` as a module attribute; it is swapped, not typed, hence setattr.
        saved = [getattr(m, "time") for m in _PATCHED]  # noqa: B009
        for m in _PATCHED:
            setattr(m, "time", _FixedClock())  # noqa: B010
        try:
            yield
        finally:
            for m, t in zip(_PATCHED, saved, strict=False):
                setattr(m, "time", t)  # noqa: B010


def _iso9660_name(name: str, index: int) -> str:
    """A level-1 name (8.3, upper case) that cannot clash; readers use the Rock Ridge/Joliet name instead."""
    stem = "".join(c for c in name.upper() if c.isalnum())[:6] or "FILE"
    return f"{stem}{index:02d}.;1"


def _iso9660_dir(name: str, index: int) -> str:
    stem = "".join(c for c in name.upper() if c.isalnum())[:6] or "DIR"
    return f"{stem}{index:02d}"


def build_iso(files: Mapping[str, bytes], volume_id: str) -> bytes:
    """An ISO 9660 + Joliet + Rock Ridge image of `files` ('a/b/name' paths, directories made as needed) in sorted
    order, against the fixed clock: the same files and volume id give the same bytes. Shared by the NoCloud seed
    and the OpenStack config drive."""
    out = io.BytesIO()
    with _fixed_clock():
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=volume_id,
                sys_ident="LINUX", app_ident_str="IMAGEGEN")
        dirs: dict[str, str] = {"": ""}  # Rock Ridge path -> ISO 9660 path
        for index, path in enumerate(sorted(files)):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                rr = "/".join(parts[:depth])
                if rr not in dirs:
                    dirs[rr] = f"{dirs['/'.join(parts[:depth - 1])]}/{_iso9660_dir(parts[depth - 1], len(dirs))}"
                    iso.add_directory(dirs[rr], rr_name=parts[depth - 1], joliet_path=f"/{rr}", file_mode=0o40555)
            data = files[path]
            parent = dirs["/".join(parts[:-1])]
            iso.add_fp(io.BytesIO(data), len(data), f"{parent}/{_iso9660_name(parts[-1], index)}",
                       rr_name=parts[-1], joliet_path=f"/{path}", file_mode=0o100444)
        iso.write_fp(out)
        iso.close()
    return out.getvalue()


def build_seed_iso(files: Mapping[str, bytes]) -> bytes:
    """A NoCloud seed: `files` (flat names such as user-data, meta-data, network-config) on a volume `cidata`."""
    return build_iso(files, VOLUME_ID)
