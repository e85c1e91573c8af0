"""Seed ISOs read back by pycdlib and by external readers (isoinfo, xorriso); byte-identical on rebuild."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pycdlib
import pytest

from imagegen.seediso import build_seed_iso

from .conftest import Rendered, require_tool

NAMES = ("meta-data", "network-config", "user-data")


def _iso(r: Rendered, node: str) -> bytes:
    return r.artifacts[f"seeds/{node}.iso"].data


def _first_seed(r: Rendered, tmp_path: Path) -> tuple[str, Path]:
    """The plan's first node and its seed ISO written to a file, for the external readers."""
    node = r.plan.nodes[0].name
    path = tmp_path / "seed.iso"
    path.write_bytes(_iso(r, node))
    return node, path


def _expected(r: Rendered, node: str) -> dict[str, bytes]:
    return {n: r.artifacts[f"nodes/{node}/{n}"].data for n in NAMES}


def test_pycdlib_reads_rock_ridge_and_joliet(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    for node in r.plan.nodes:
        iso = pycdlib.PyCdlib()
        iso.open_fp(io.BytesIO(_iso(r, node.name)))
        try:
            assert iso.pvd.volume_identifier.decode().strip() == "cidata"
            for name, data in _expected(r, node.name).items():
                for kwargs in ({"rr_path": f"/{name}"}, {"joliet_path": f"/{name}"}):
                    buf = io.BytesIO()
                    iso.get_file_from_iso_fp(buf, **kwargs)
                    assert buf.getvalue() == data, (node.name, name, kwargs)
        finally:
            iso.close()


def test_isoinfo_label_names_and_contents(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    isoinfo = require_tool("isoinfo")
    r = rendered["single"]
    node, path = _first_seed(r, tmp_path)
    info = subprocess.run([isoinfo, "-d", "-i", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: cidata" in info
    assert "Rock Ridge signatures version 1 found" in info and "Joliet with UCS level 3 found" in info
    listing = subprocess.run([isoinfo, "-R", "-f", "-i", str(path)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(listing) == [f"/{n}" for n in NAMES]
    for name, data in _expected(r, node).items():
        got = subprocess.run([isoinfo, "-R", "-x", f"/{name}", "-i", str(path)], capture_output=True,
                             check=True).stdout
        assert got == data


def test_xorriso_extracts_same_files(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    xorriso = require_tool("xorriso")
    r = rendered["kube-vip"]
    node, path = _first_seed(r, tmp_path)
    out = tmp_path / "x"
    subprocess.run([xorriso, "-osirrox", "on", "-indev", str(path), "-extract", "/", str(out)],
                   capture_output=True, check=True)
    for name, data in _expected(r, node).items():
        assert (out / name).read_bytes() == data
    pvd = subprocess.run([xorriso, "-indev", str(path), "-pvd_info"], capture_output=True, text=True,
                         check=True).stdout
    assert "Volume Id    : cidata" in pvd


def test_deterministic_across_time_zones(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    files = {"user-data": b"#cloud-config\n", "meta-data": b"instance-id: x\n", "network-config": b"version: 2\n"}
    first = build_seed_iso(files)
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        second = build_seed_iso(dict(reversed(list(files.items()))))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert first == second
    assert build_seed_iso({**files, "user-data": b"#cloud-config\n# changed\n"}) != first


def test_a_reused_layout_gives_the_bytes_pycdlib_builds() -> None:
    """Nodes whose files have the same names and sizes share one layout: the image built from it, with another
    node's bytes copied in, is byte for byte what pycdlib builds from scratch for that node (zero-length files
    and config-drive directories included), and the cached layout holds none of the first node's bytes."""
    import random

    from imagegen import seediso

    rng = random.Random(7)
    for volume, names in (("cidata", ["user-data", "meta-data", "network-config", "vendor-data"]),
                          ("config-2", ["openstack/latest/meta_data.json", "openstack/latest/user_data",
                                        "openstack/latest/network_data.json"])):
        sizes = {name: rng.choice([0, 1, 2047, 2048, 2049, 70_000]) for name in names}
        first = {name: rng.randbytes(size) for name, size in sizes.items()}
        second = {name: rng.randbytes(size) for name, size in sizes.items()}
        seediso._LAYOUTS.clear()
        assert seediso.build_iso(first, volume) == seediso._pycdlib_iso(first, volume)[0]  # builds the layout
        blank, _ = seediso._LAYOUTS[(volume, tuple((n, sizes[n]) for n in sorted(sizes)))]
        assert not any(data in blank for data in first.values() if len(data) >= 2047)
        reused = seediso.build_iso(second, volume)
        assert reused == seediso._pycdlib_iso(second, volume)[0]
