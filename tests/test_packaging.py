"""An installed imagegen works outside the checkout: a wheel carries profiles/, cloud-init/ and schema/.

Builds the wheel (about 12 s here, so it stays in `make test`; pip with build isolation: setuptools comes from
the package index), installs it without dependencies into a fresh venv that borrows this venv's third-party
packages through a path entry (the editable install's finder is a .pth hook of this venv, so it stays inactive
there), and renders an example plan from a directory outside the checkout: the files must equal a render from the
checkout with the same state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT


def test_packages_list_covers_the_source_tree() -> None:
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {p.parent.relative_to(ROOT).as_posix().replace("/", ".") for p in (ROOT / "imagegen").rglob("__init__.py")}
    assert found == {p for p in listed if not p.startswith("imagegen._data.")}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_wheel_renders_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGEGEN_DATA", "PYTHONPATH")}
    # Built from a copy: pip builds in the source tree (build/), which concurrent test runs would share.
    src = tmp_path / "src"
    for name in ("imagegen", "profiles", "cloud-init", "schema"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(wheels)],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    if build.returncode != 0 and "No matching distribution" in build.stderr:
        pytest.skip("no package index to fetch setuptools from")
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("imagegen-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              str(wheel)], capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stderr
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "ha.yaml", work / "ha.yaml")
    where = subprocess.run([str(python), "-c", "import imagegen.resources as r; print(r.data_dir())"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout.strip()
    assert where.startswith(purelib) and not where.startswith(str(ROOT))
    state = tmp_path / "state"
    result = subprocess.run([str(venv / "bin" / "imagegen"), "render", "ha.yaml", "--out", "out", "--state",
                             str(state)], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (work / "out" / "seeds" / "cp-1.iso").is_file()
    schema = subprocess.run([str(venv / "bin" / "imagegen"), "init"], capture_output=True, text=True, cwd=work,
                            env=env, check=True).stdout.splitlines()[0]
    assert schema.startswith(f"# yaml-language-server: $schema={purelib}") and Path(schema.split("=", 1)[1]).is_file()

    checkout = subprocess.run([sys.executable, "-m", "imagegen", "render", str(work / "ha.yaml"), "--out",
                               str(tmp_path / "from-checkout"), "--state", str(state), "--quiet"],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert checkout.returncode == 0, checkout.stderr
    assert _tree(work / "out") == _tree(tmp_path / "from-checkout")
