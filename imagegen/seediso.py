"""Seed ISOs built in memory with pycdlib: ISO 9660 + Joliet + Rock Ridge; NoCloud's volume id `cidata` (and the
OpenStack config drive's `config-2`, imagegen.configdrive, through the same `build_iso`).

Deterministic: pycdlib stamps every date with time.time() in local time, so while an ISO is built its modules
see a clock fixed at SEED_EPOCH in UTC. The same files give the same bytes on any host, in any time zone.
"""

from __future__ import annotations

import io
import threading
import time as _time
from collections import OrderedDict
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
_layout_lock = threading.Lock()


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


def _pycdlib_iso(files: Mapping[str, bytes], volume_id: str) -> tuple[bytes, tuple[int, ...] | None]:
    """The image pycdlib makes of `files` (sorted order, fixed clock), and where each file's data starts in it
    (None when that cannot be told)."""
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
        offsets = []
        for path in sorted(files):
            if not files[path]:
                offsets.append(0)  # no extent, nothing to copy
                continue
            record = iso.get_record(joliet_path=f"/{path}")
            offsets.append((record.inode or record).extent_location() * iso.logical_block_size)
        iso.close()
    image = out.getvalue()
    # Kept only when each file's bytes are where the record says: then the layout is sure to be reusable.
    if all(image[o:o + len(files[p])] == files[p] for o, p in zip(offsets, sorted(files), strict=True)):
        return image, tuple(offsets)
    return image, None


# An image depends on its files' names, sizes and contents only, and on the contents only as the bytes at each
# file's extent: nodes whose files have the same names and sizes (most nodes of a role) share one layout, built
# once by pycdlib, and get their own bytes copied in. Bounded: a cluster of all-different sizes just misses.
_LAYOUTS: OrderedDict[tuple[str, tuple[tuple[str, int], ...]], tuple[bytes, tuple[int, ...]]] = OrderedDict()
_MAX_LAYOUTS = 64


def build_iso(files: Mapping[str, bytes], volume_id: str) -> bytes:
    """An ISO 9660 + Joliet + Rock Ridge image of `files` ('a/b/name' paths, directories made as needed) in sorted
    order, against the fixed clock: the same files and volume id give the same bytes. Shared by the NoCloud seed
    and the OpenStack config drive."""
    names = sorted(files)
    key = (volume_id, tuple((name, len(files[name])) for name in names))
    with _layout_lock:
        layout = _LAYOUTS.get(key)
        if layout is not None:
            _LAYOUTS.move_to_end(key)
    if layout is None:
        image, offsets = _pycdlib_iso(files, volume_id)
        if offsets is not None:
            blank = bytearray(image)  # kept without this node's bytes (its user-data holds its secrets)
            for name, offset in zip(names, offsets, strict=True):
                blank[offset:offset + len(files[name])] = bytes(len(files[name]))
            with _layout_lock:
                _LAYOUTS[key] = (bytes(blank), offsets)
                while len(_LAYOUTS) > _MAX_LAYOUTS:
                    _LAYOUTS.popitem(last=False)
        return image
    template, offsets = layout
    copy = bytearray(template)
    for name, offset in zip(names, offsets, strict=True):
        data = files[name]
        copy[offset:offset + len(data)] = data
    return bytes(copy)


def build_seed_iso(files: Mapping[str, bytes]) -> bytes:
    """A NoCloud seed: `files` (flat names such as user-data, meta-data, network-config) on a volume `cidata`."""
    return build_iso(files, VOLUME_ID)
