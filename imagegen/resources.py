"""Where imagegen's data (profiles/, cloud-init/) lives: beside the package in a checkout or an editable install,
or wherever IMAGEGEN_DATA points."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path


@cache
def data_dir() -> Path:
    env = os.environ.get("IMAGEGEN_DATA")
    root = Path(env) if env else Path(__file__).resolve().parent.parent
    if not (root / "profiles").is_dir() or not (root / "cloud-init").is_dir():
        raise RuntimeError(f"imagegen data not found under {root} (profiles/, cloud-init/); "
                           "install from a checkout with 'pip install -e .' or set IMAGEGEN_DATA")
    return root
