"""Where imagegen's data (profiles/, cloud-init/, schema/) lives: beside the package in a checkout or an editable
install, inside it (imagegen/_data/) in an installed wheel, or wherever IMAGEGEN_DATA points."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _has_data(root: Path) -> bool:
    return (root / "profiles").is_dir() and (root / "cloud-init").is_dir()


@cache
def data_dir() -> Path:
    env = os.environ.get("IMAGEGEN_DATA")
    candidates = [Path(env)] if env else [_PACKAGE.parent, _PACKAGE / "_data"]
    for root in candidates:
        if _has_data(root):
            return root
    raise RuntimeError(f"imagegen data not found under {' or '.join(map(str, candidates))} (profiles/, "
                       "cloud-init/); reinstall imagegen (pip install .) or set IMAGEGEN_DATA to a checkout")
