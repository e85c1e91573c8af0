"""The Jinja environment over `cloud-init/`: strict (an undefined name is an error, never an empty string)."""

from __future__ import annotations

import shlex
from functools import cache
from typing import Any

import jinja2
import jinja2.meta

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


def _names_read(env: jinja2.Environment, source: str) -> tuple[frozenset[str], tuple[str | None, ...]]:
    ast = env.parse(source)
    return frozenset(jinja2.meta.find_undeclared_variables(ast)), tuple(jinja2.meta.find_referenced_templates(ast))


@cache
def _source_names(source: str) -> tuple[frozenset[str], tuple[str | None, ...]]:
    return _names_read(environment(), source)


def expression_names(expression: str) -> frozenset[str]:
    """The context names a `when`/`foreach` expression reads."""
    return _source_names("{{ (" + expression + ") }}")[0]


def string_names(text: str) -> frozenset[str] | None:
    """The context names an inline template (a profile's templated path or template name) reads; None when it
    includes another template."""
    names, referenced = _source_names(text)
    return None if referenced else names


def template_names(name: str) -> frozenset[str] | None:
    """The context names template `name` reads, through every template it includes or imports; None when that
    cannot be told (a template name computed at render time). Read from the current sources, not cached across
    calls: a caller keeps the answer for as long as the sources cannot change (one render)."""
    env = environment()
    assert env.loader is not None
    seen: set[str] = set()
    names: set[str] = set()
    todo: list[str | None] = [name]
    while todo:
        current = todo.pop()
        if current is None:
            return None
        if current in seen:
            continue
        seen.add(current)
        source = env.loader.get_source(env, current)[0]
        read, referenced = _source_names(source)
        names |= read
        todo.extend(referenced)
    return frozenset(names)
