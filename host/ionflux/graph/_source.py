"""YAML text to plain data, remembering the line every key and item came from.

Validation reports each problem with its line, so the loader keeps a map from
a path into the document (``("graph", 2, "inputs", "cid")``) to the 1-based
line of that key. PyYAML's composer already records marks on every node; we
walk the composed tree once, beside the safe constructor, instead of
subclassing the loader's internals.

The text is read by IONWALL's bounded loader (``ionwall.compose_yaml``): its
size, nesting, node count and alias expansion have budgets (``documents.*``),
so the walk below is bounded too; a refusal is a ``GraphValidationError``
whose ``reason`` is the ``DocumentTooLarge``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ionwall import DocumentError, DocumentLimits, compose_yaml

from .._errors import GraphProblem, GraphValidationError

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Source:
    """A parsed graph document: the data, where it came from and its line map."""

    data: Any
    text: str
    file: str | None = None
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor the map knows."""
        while True:
            found = self.lines.get(path)
            if found is not None or not path:
                return found
            path = path[:-1]


def parse_yaml(text: str, file: str | None = None, limits: DocumentLimits | None = None) -> Source:
    """Parses ``text`` within ``limits`` (the ``documents.*`` defaults when None);
    raises ``GraphValidationError`` for malformed YAML, a budget passed or duplicate keys."""
    try:
        node, data = compose_yaml(text, file or "<graph>", limits or default_limits())
    except DocumentError as exc:
        problem = GraphProblem(exc.problem, file=file, line=exc.line)
        raise GraphValidationError([problem], reason=exc) from exc
    lines: dict[Path, int] = {}
    problems: list[GraphProblem] = []
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _walk(node, (), lines, problems, file)
    if problems:
        raise GraphValidationError(problems)
    return Source(data=data, text=text, file=file, lines=lines)


def default_limits() -> DocumentLimits:
    """The ``documents.*`` defaults (the configuration's, when none are given)."""
    from ..config import DocumentSettings

    return DocumentSettings().limits()


def _walk(
    node: yaml.Node,
    path: Path,
    lines: dict[Path, int],
    problems: list[GraphProblem],
    file: str | None,
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                # PyYAML keeps the last value silently; a graph must not lose one.
                problems.append(
                    GraphProblem(f"duplicate key {key!r}", file=file, line=line, field=key)
                )
            seen.add(key)
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, problems, file)
