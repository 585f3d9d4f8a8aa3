"""YAML text to plain data, remembering the line every key and item came from.

Validation reports each problem with its line, so the loader keeps a map from
a path into the document (``("graph", 2, "inputs", "cid")``) to the 1-based
line of that key. PyYAML's composer already records marks on every node; we
walk the composed tree once, beside the safe constructor, instead of
subclassing the loader's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .._errors import GraphProblem, GraphValidationError

Path = tuple[str | int, ...]

# libyaml when PyYAML was built with it: ten times faster on large graphs, same marks.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def parse_yaml(text: str, file: str | None = None) -> Source:
    """Parses ``text``; raises ``GraphValidationError`` for malformed YAML or duplicate keys."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise GraphValidationError(
            [GraphProblem(f"malformed YAML: {message}", file=file, line=line)]
        ) from exc
    except yaml.YAMLError as exc:
        raise GraphValidationError([GraphProblem(f"malformed YAML: {exc}", file=file)]) from exc
    lines: dict[Path, int] = {}
    problems: list[GraphProblem] = []
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _walk(node, (), lines, problems, file)
    if problems:
        raise GraphValidationError(problems)
    return Source(data=data, text=text, file=file, lines=lines)


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
