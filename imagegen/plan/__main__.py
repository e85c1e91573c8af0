"""`python -m imagegen.plan --readme`: rewrite README.md's plan reference from the field table."""

from __future__ import annotations

import sys
from pathlib import Path

from imagegen.plan.fields import README, readme_with_reference


def main(argv: list[str]) -> int:
    if argv != ["--readme"]:
        print("usage: python -m imagegen.plan --readme", file=sys.stderr)
        return 2
    readme = Path(__file__).resolve().parents[2] / README  # the checkout's README.md
    readme.write_text(readme_with_reference(readme.read_text()))
    print(f"wrote the plan reference into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
