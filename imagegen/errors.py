"""Errors that carry every problem found in a plan, each naming field, value and fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    field: str
    value: object
    message: str
    fix: str = ""

    def __str__(self) -> str:
        shown = _show(self.value)
        text = f"{self.field}: {self.message}"
        if shown is not None:
            text += f" (got {shown})"
        if self.fix:
            text += f"; {self.fix}"
        return text


_MISSING = object()


def _show(value: object) -> str | None:
    if value is _MISSING:
        return None
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return repr(value)


MISSING = _MISSING


class PlanError(Exception):
    """A plan failed validation; `problems` lists all of them, in plan order."""

    def __init__(self, problems: list[Problem], source: str = "plan") -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        head = f"{self.source}: {count} problem{'s' if count != 1 else ''}"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


class UsageError(Exception):
    """Bad input that is not a plan (state directory, arguments): exit status 2."""
