"""NoCloud seed ISOs built in memory with pycdlib: ISO 9660 + Joliet + Rock Ridge, volume id `cidata`.

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
    return f"/{stem}{index:02d}.;1"


def build_seed_iso(files: Mapping[str, bytes]) -> bytes:
    """An ISO holding `files` (flat names such as user-data, meta-data, network-config) in sorted order."""
    out = io.BytesIO()
    with _fixed_clock():
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID,
                sys_ident="LINUX", app_ident_str="IMAGEGEN")
        for index, name in enumerate(sorted(files)):
            data = files[name]
            iso.add_fp(io.BytesIO(data), len(data), _iso9660_name(name, index), rr_name=name,
                       joliet_path=f"/{name}", file_mode=0o100444)
        iso.write_fp(out)
        iso.close()
    return out.getvalue()
