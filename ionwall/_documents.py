"""The one YAML loader for every document the host parses, with budgets.

Manifests, graphs, configuration and policy files are read by ``load_yaml``
(or ``compose_yaml`` when the caller wants the node tree and its line marks).
PyYAML's own loaders have no limits: a few hundred bytes of nested aliases
expand to gigabytes once anything walks or serialises the result, a deep
``[[[[…`` recurses until the interpreter gives up, and a large text is parsed
whole. Here:

- the size of the text is checked before a byte of it is parsed;
- libyaml's event stream (a state machine, no recursion) is composed into
  nodes by a small iterative composer that counts, as it goes, the nodes of
  the document *as if every alias were copied*, the nesting depth, and what
  aliases re-use (nodes and scalar characters); the first budget passed stops
  the parse at once, so refusing an alias bomb costs about what its text does;
- an alias to a node still being composed (a recursive document) is refused.

Every failure is a ``DocumentError`` naming the document; a budget passed is
a ``DocumentTooLarge`` naming the budget, its value and how to raise it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ._errors import DocumentError, DocumentTooLarge

# libyaml when PyYAML was built with it (the parser is ten times faster).
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """Budgets of one document. ``hint`` is appended to a refusal and says how
    the owner raises a limit (the lower layer does not know the config's shape)."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 100_000
    max_alias_expansion: int = 100_000
    hint: str = "raise documents.<limit> in the host's configuration if the document is trusted"


DEFAULT_LIMITS = DocumentLimits()


def check_size(data: str | bytes, document: str, limits: DocumentLimits = DEFAULT_LIMITS) -> None:
    """Refuses ``data`` past ``limits.max_bytes`` (UTF-8 bytes), before any parsing."""
    size = len(data)
    if isinstance(data, str) and size <= limits.max_bytes < size * 4:
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise DocumentTooLarge(
            document, "max_bytes", limits.max_bytes, f"{size} bytes", limits.hint
        )


def read_text(path: Path, limits: DocumentLimits = DEFAULT_LIMITS) -> str:
    """The text of ``path``, reading no more than ``limits.max_bytes`` + 1 bytes.
    Raises ``OSError`` when it cannot be read, ``DocumentError`` when it is not UTF-8."""
    with path.open("rb") as f:
        data = f.read(limits.max_bytes + 1)
    check_size(data, str(path), limits)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(str(path), f"not UTF-8 text: {exc}") from None


def load_yaml(text: str | bytes, document: str, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """The data of a single-document YAML ``text`` (None for an empty one)."""
    return _Load(text, document, limits).data()


def compose_yaml(
    text: str | bytes, document: str, limits: DocumentLimits = DEFAULT_LIMITS
) -> tuple[Node | None, Any]:
    """The composed node tree (with line marks) and the data of ``text``."""
    load = _Load(text, document, limits)
    return load.node, load.data()


class _Load:
    """One bounded parse: ``node`` is composed in the constructor."""

    def __init__(self, text: str | bytes, document: str, limits: DocumentLimits):
        check_size(text, document, limits)
        self.document = document
        self.limits = limits
        self.loader: Any = _Loader(text)  # PyYAML's stubs leave the event API untyped
        self.nodes = 0  # as if every alias were copied (set once composed)
        self.reused = 0  # nodes and scalar characters aliases re-use
        try:
            self.node = self._compose()
        except DocumentError:
            self.loader.dispose()
            raise
        except yaml.YAMLError as exc:
            self.loader.dispose()
            raise _malformed(document, exc) from None

    def data(self) -> Any:
        try:
            if self.node is None:
                return None
            return self.loader.construct_document(self.node)
        except yaml.YAMLError as exc:
            raise _malformed(self.document, exc) from None
        except Exception as exc:
            # PyYAML's constructors let their own errors through: ValueError for a
            # timestamp such as 2024-13-01 or an int past Python's digit limit,
            # IndexError for `!!float ""`. None of them may reach a caller.
            message = f"a value cannot be read: {type(exc).__name__}: {exc}"
            raise DocumentError(self.document, message) from None
        finally:
            self.loader.dispose()

    def _too_large(self, limit: str, value: int, found: str, event: Any) -> DocumentTooLarge:
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        return DocumentTooLarge(self.document, limit, value, found, self.limits.hint, line)

    def _compose(self) -> Node | None:
        loader = self.loader
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            loader.get_event()
            return None
        loader.get_event()  # DocumentStart
        node = self._compose_node()
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise DocumentError(
                self.document,
                "expected a single document, found another",
                event.start_mark.line + 1,
            )
        loader.get_event()
        return node

    def _compose_node(self) -> Node:
        """Iterative: a stack of open collections, each with what it measured so far."""
        loader, limits = self.loader, self.limits
        get_event, resolve = loader.get_event, loader.resolve
        max_nodes, max_depth = limits.max_nodes, limits.max_depth
        anchors: dict[str, Node] = {}
        # per anchored node: (nodes, scalar characters, height) as if aliases were copied
        sizes: dict[int, tuple[int, int, int]] = {}
        open_: set[int] = set()
        # frame: [node, pending mapping key or None, anchor, start nodes, start chars, height]
        stack: list[list[Any]] = []
        nodes = chars = 0
        while True:
            event = get_event()
            kind = type(event)
            height = 0
            if kind is ScalarEvent:
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(ScalarNode, event.value, event.implicit)
                node: Node = ScalarNode(
                    tag, event.value, event.start_mark, event.end_mark, style=event.style
                )
                nodes += 1
                chars += len(event.value)
                if event.anchor is not None:
                    self._anchor(anchors, event, node)
                    sizes[id(node)] = (1, len(event.value), 0)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                nodes += 1
                if len(stack) >= max_depth:
                    raise self._too_large(
                        "max_depth",
                        max_depth,
                        f"nesting deeper than {max_depth}",
                        event,
                    )
                node_class = MappingNode if kind is MappingStartEvent else SequenceNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(node_class, None, event.implicit)
                collection = node_class(
                    tag, [], event.start_mark, None, flow_style=event.flow_style
                )
                if event.anchor is not None:
                    self._anchor(anchors, event, collection)
                    open_.add(id(collection))
                stack.append([collection, None, event.anchor, nodes - 1, chars, 0])
                continue
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack.pop()
                node = frame[0]
                node.end_mark = event.end_mark
                height = frame[5] + 1
                if frame[2] is not None:
                    open_.discard(id(node))
                    sizes[id(node)] = (nodes - frame[3], chars - frame[4], height)
            elif kind is AliasEvent:
                node = self._alias(event, anchors, open_)
                n, c, height = sizes[id(node)]
                nodes += n
                chars += c
                self.reused += n + c
                if self.reused > limits.max_alias_expansion:
                    raise self._too_large(
                        "max_alias_expansion",
                        limits.max_alias_expansion,
                        f"aliases re-using more than {self.reused} nodes and characters",
                        event,
                    )
                if len(stack) + height > max_depth:
                    raise self._too_large(
                        "max_depth",
                        max_depth,
                        f"nesting deeper than {max_depth} through an alias",
                        event,
                    )
            else:  # pragma: no cover - the parser gives nothing else inside a document
                raise DocumentError(self.document, f"unexpected {kind.__name__}")
            if nodes > max_nodes:
                self.nodes = nodes
                raise self._too_large(
                    "max_nodes",
                    max_nodes,
                    f"more than {max_nodes} nodes, aliases counted as copies",
                    event,
                )
            if not stack:
                self.nodes = nodes
                return node
            parent = stack[-1]
            if height > parent[5]:
                parent[5] = height
            container = parent[0]
            if container.__class__ is SequenceNode:
                container.value.append(node)
            elif parent[1] is None:
                parent[1] = node
            else:
                container.value.append((parent[1], node))
                parent[1] = None

    def _alias(self, event: Any, anchors: dict[str, Node], open_: set[int]) -> Node:
        target = anchors.get(event.anchor) if event.anchor is not None else None
        if target is None:
            raise DocumentError(
                self.document, f"found undefined alias {event.anchor!r}", event.start_mark.line + 1
            )
        if id(target) in open_:
            raise DocumentError(
                self.document,
                f"recursive alias {event.anchor!r} (a node that contains itself)",
                event.start_mark.line + 1,
            )
        return target

    def _anchor(self, anchors: dict[str, Node], event: Any, node: Node) -> None:
        anchor = event.anchor
        if anchor is None:
            return
        if anchor in anchors:
            # PyYAML refuses a second anchor of one name too; keep its behaviour.
            raise DocumentError(
                self.document, f"found duplicate anchor {anchor!r}", event.start_mark.line + 1
            )
        anchors[anchor] = node


def _malformed(document: str, exc: yaml.YAMLError) -> DocumentError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        return DocumentError(
            document, f"malformed YAML: {message}", mark.line + 1 if mark else None
        )
    return DocumentError(document, f"malformed YAML: {exc}")
