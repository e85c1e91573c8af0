"""Reading a plan's YAML defensively: one person writes it, and it is run as root on many machines.

PyYAML's SafeLoader already refuses Python objects. What it still lets through, and what this loader adds:
- duplicate keys (PyYAML keeps the last one silently): an error naming both lines;
- nesting deeper than MAX_DEPTH (PyYAML recurses and dies with RecursionError on 5000 levels): an error;
- alias bombs ("billion laughs": a few lines whose aliases expand to millions of values): the composed graph's
  expanded size is counted (memoised per node, so counting is linear in the document) and refused above
  MAX_VALUES before anything walks or prints the constructed data.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 64
MAX_VALUES = 200_000

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class PlanYamlError(ValueError):
    """The document is not acceptable as a plan, with a one-line reason and where."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def _where(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _check_graph(root: yaml.Node) -> None:
    """Depth and expanded size of a composed node graph, without recursion."""
    sizes: dict[int, int] = {}
    # Iterative post-order walk: (node, depth, children_done).
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise PlanYamlError(f"nesting deeper than {MAX_DEPTH} levels at {_where(node)}",
                                "a plan is a few levels deep; remove the extra nesting")
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not done:
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(child), 1) for child in children)
        if total > MAX_VALUES:
            raise PlanYamlError(f"expands to more than {MAX_VALUES} values through YAML aliases "
                                f"(at {_where(node)})", "write the values out; a plan never needs that many")
        sizes[id(node)] = total
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise PlanYamlError(
                            f"duplicate key '{key.value[:40]}' at {_where(key)} (first at {_where(seen[key.value])})",
                            "keep one of them: YAML would silently use the last")
                    seen[key.value] = key


def load(text: str) -> Any:
    """Parse one YAML document with the checks above; raises yaml.YAMLError or PlanYamlError."""
    loader = _Base(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_graph(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()
