"""Errors that carry every problem found in a plan, each naming field, value and fix."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    field: str
    value: object
    message: str
    fix: str = ""

    def __str__(self) -> str:
        shown = _show(self.value)
        text = f"{_field(self.field)}: {self.message}"
        if shown is not None:
            text += f" (got {shown})"
        if self.fix:
            text += f"; {self.fix}"
        return text


_MISSING = object()


SHOWN_CHARS = 60


def _show(value: object) -> str | None:
    """A bounded, one-line rendering of a bad value: never the whole of a huge or alias-expanded value."""
    if value is _MISSING:
        return None
    if isinstance(value, (dict, list, tuple, set)):
        return _short(reprlib_repr(value))
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return _short(repr(value[:SHOWN_CHARS + 1]))
    return _short(repr(value))


def _field(path: str) -> str:
    """A field path as one bounded line: plan keys are user data too (a key may hold a newline)."""
    if path.isprintable() and len(path) <= 2 * SHOWN_CHARS:
        return path
    return _short(repr(path[:SHOWN_CHARS + 1]))


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS + 2 else text[:SHOWN_CHARS - 3] + "..."


def reprlib_repr(value: object) -> str:
    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxstring, r.maxother = 2, 4, 4, 30, 30
    return r.repr(value)


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
