"""The Jinja environment over `cloud-init/`: strict (an undefined name is an error, never an empty string)."""

from __future__ import annotations

import shlex
from functools import cache
from typing import Any

import jinja2

from imagegen.resources import data_dir


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir() / "cloud-init")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        autoescape=False,
        # Shell's ${#array[@]} would open a Jinja comment; templates comment with {## ... ##} instead.
        comment_start_string="{##",
        comment_end_string="##}",
    )
    # Shell templates quote every value with `sh` (shlex.quote); `tojson` is JSON, not shell quoting.
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env


@cache
def _expression(text: str) -> Any:
    return environment().compile_expression(text, undefined_to_none=False)


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """Evaluate a profile's `when`/`foreach` expression against a node's context."""
    return _expression(expression)(**context)


@cache
def environment_over(subdir: str) -> jinja2.Environment:
    """The same strict environment (filters, undefined, comment syntax) loading from another data directory,
    e.g. `profiles/images/scripts` for the image builder's scripts. `environment()` itself is unchanged."""
    return environment().overlay(loader=jinja2.FileSystemLoader(str(data_dir() / subdir)))
