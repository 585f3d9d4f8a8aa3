"""Templates and ``if:`` expressions, evaluated in Jinja2's immutable sandbox.

Templates are untrusted input: they are never passed to ``eval``. Three
shapes, chosen when a value is compiled:

- ``"{{ a.b.c }}"``: a plain dotted path. Walked through dicts and lists by
  hand (no attribute access at all), which is also the hot path of the engine.
- ``"{{ expr }}"``: one expression and nothing else. Evaluated with
  ``compile_expression``, so the result keeps its type: an object, a list, a
  number, ``null``. This is what "a template may produce a structured value" means.
- anything else with ``{{`` or ``{%``: rendered to a string. Objects and lists
  inside it are written as JSON, ``null`` as the empty string.

Names a template can read: ``trigger`` (``input_data``, ``type``,
``details``), ``nodes.<id>`` (``outputs``, ``status``, ``error``), ``system``
(``run_id``, ``timestamp_utc_iso``, ``graph_name``, ``graph_version``,
``node_id``, ``attempt``) and ``null``. Missing keys read as ``null``, so
``x != null`` works as in the seeds.

Every render has a budget (``TemplateBudget``: steps, the size of every value
it builds, integer bits, time; see ``_template_budget``); past it the render
fails with ``TemplateBudgetExceeded`` naming the node, the field and the limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.environment import Template as JinjaTemplate
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser

from .._errors import TemplateBudgetExceeded, TemplateError
from ._template_budget import (
    DEFAULT_BUDGET,
    BudgetedEnvironment,
    Exceeded,
    TemplateBudget,
    account,
    budget_tree,
    done,
    rendering,
    wrap_filters,
)

__all__ = ["Compiled", "Template", "TemplateBudget", "compile_value", "is_template", "walk"]

ROOTS = frozenset({"trigger", "nodes", "system", "null"})
Ref = tuple[str, ...]
Path = tuple[str | int, ...]
Scope = Mapping[str, Any]

_SIMPLE = re.compile(r"^\s*\{\{\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*\}\}\s*$")
_WHOLE = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


class _Null(ChainableUndefined):
    """A missing value: equal to ``null``, falsy, and chainable (``a.b.c`` of nothing)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, Undefined)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(None)


def _finalize(value: Any) -> Any:
    if value is None or isinstance(value, Undefined):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        account().size(value, "the output")  # before json.dumps expands shared parts
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


class _Environment(BudgetedEnvironment):
    def unsafe_undefined(self, obj: Any, attribute: Any) -> Undefined:
        # Jinja would hand back an Undefined that raises only when printed; a
        # whole-value template could then turn it into null. Refuse at once.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__} is unsafe")


_ENV = _Environment(undefined=_Null, finalize=_finalize, autoescape=False)
_ENV.globals.clear()
_ENV.globals["null"] = None
wrap_filters(_ENV.filters)


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


class Template:
    """One compiled template string. ``refs`` are the dotted names it reads."""

    __slots__ = (
        "_evaluate",
        "_path",
        "budget",
        "expression",
        "field",
        "node",
        "refs",
        "source",
        "text",
    )

    def __init__(
        self,
        source: str,
        *,
        expression: bool = False,
        budget: TemplateBudget = DEFAULT_BUDGET,
        node: str | None = None,
        field: str | None = None,
    ):
        """``expression=True`` reads a bare ``x != null`` (no braces) as one expression.
        ``budget`` bounds each render; ``node`` and ``field`` name where the template
        is, for the error that says it went past the budget."""
        self.source = source
        self.expression = expression
        self.budget = budget
        self.node = node
        self.field = field
        self.text = False  # renders to a string whatever it reads (a mixed template)
        self._path: tuple[str, tuple[str, ...]] | None = None
        simple = _SIMPLE.match(source)
        if simple and not expression:
            path = tuple(simple.group(1).split("."))
            self.refs: list[Ref] = [path]
            _check_path(source, path)
            if path[0] not in ROOTS:
                raise TemplateError(
                    source, f"unknown name {path[0]!r}; templates read {', '.join(sorted(ROOTS))}"
                )
            self._evaluate: Callable[[Scope], Any] = _path_evaluator(path)
            self._path = path[0], path[1:]
            return
        whole = _WHOLE.match(source)
        body = None
        if expression and not is_template(source):
            body = source
        elif whole and "{{" not in whole.group(1) and "}}" not in whole.group(1):
            body = whole.group(1)
        if body is not None:
            tree = _parse(source, "{{" + body + "}}")
            self.refs = _analyse(source, tree)
            self._evaluate = _evaluator(source, _expression_evaluator, body.strip())
        else:
            tree = _parse(source, source)
            self.refs = _analyse(source, tree)
            self._evaluate = _evaluator(source, _string_evaluator, source)
            self.text = True

    def render(self, scope: Scope) -> Any:
        if self._path is not None:
            # A plain path (``{{ nodes.a.outputs.v }}``) only reads: nothing to
            # account against the budget, nothing that raises.
            root, rest = self._path
            return walk(scope.get(root), rest)
        token = rendering(self.budget)
        try:
            return self._evaluate(scope)
        except TemplateError:
            raise
        except Exceeded as exc:
            raise TemplateBudgetExceeded(
                self.source, exc.what, exc.limit, exc.value, node=self.node, field=self.field
            ) from None
        except SecurityError as exc:
            raise TemplateError(self.source, f"refused by the sandbox: {exc}") from None
        except Exception as exc:
            raise TemplateError(self.source, f"{type(exc).__name__}: {exc}") from None
        finally:
            done(token)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def _evaluator(
    source: str, evaluator: Callable[[str], Callable[[Scope], Any]], text: str
) -> Callable[[Scope], Any]:
    """Compiles now, so a graph with an unknown filter fails validation, not a run."""
    try:
        return evaluator(text)
    except TemplateSyntaxError as exc:  # also TemplateAssertionError: "no filter named …"
        raise TemplateError(source, f"syntax error: {exc.message}") from None


def _parse(source: str, text: str) -> nodes.Template:
    try:
        return _ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(source, f"syntax error: {exc.message}") from None


def _check_path(source: str, path: Ref) -> None:
    for part in path:
        if part.startswith("_"):
            raise TemplateError(source, f"names starting with '_' are not readable ({part!r})")


def walk(value: Any, parts: Iterable[str]) -> Any:
    """``value`` followed down ``parts`` (mapping keys, list indexes); None where
    the path leads nowhere."""
    for part in parts:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _path_evaluator(path: Ref) -> Callable[[Scope], Any]:
    root, rest = path[0], path[1:]

    def evaluate(scope: Scope) -> Any:
        return walk(scope.get(root), rest)

    return evaluate


@lru_cache(maxsize=4096)
def _compiled_expression(body: str) -> JinjaTemplate:
    """``body`` as a template that stores its value in ``result`` (what Jinja's
    ``compile_expression`` builds), with the budget's rewrites applied."""
    parser = Parser(_ENV, body, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    expr.set_environment(_ENV)
    tree = nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)], lineno=1)
    return _ENV.from_string(budget_tree(tree))


@lru_cache(maxsize=4096)
def _compiled_string(source: str) -> JinjaTemplate:
    return _ENV.from_string(budget_tree(_ENV.parse(source)))


def _expression_evaluator(body: str) -> Callable[[Scope], Any]:
    compiled = _compiled_expression(body)

    def evaluate(scope: Scope) -> Any:
        context = compiled.new_context(dict(scope))
        for _ in compiled.root_render_func(context):
            pass
        value = context.vars.get("result")
        if isinstance(value, list | tuple | dict):
            account().size(value, "the result")  # before _plain copies shared parts
        return _plain(value)

    return evaluate


def _string_evaluator(source: str) -> Callable[[Scope], Any]:
    compiled = _compiled_string(source)

    def evaluate(scope: Scope) -> Any:
        acc = account()
        pieces: list[str] = []
        total = 0
        for piece in compiled.root_render_func(compiled.new_context(dict(scope))):
            total += len(piece)
            acc.allow_size(total, "the rendered text")
            pieces.append(piece)
        return "".join(pieces)

    return evaluate


def _plain(value: Any) -> Any:
    """Jinja values back to JSON-able data: Undefined becomes null, tuples lists."""
    if isinstance(value, Undefined):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _analyse(source: str, tree: nodes.Template) -> list[Ref]:
    """The dotted names ``tree`` reads; refuses ``_private`` attributes and unknown roots."""
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    refs: list[Ref] = []

    def visit(node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateError(source, f"names starting with '_' are not readable ({node.attr!r})")
        if (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
            and node.arg.value.startswith("_")
        ):
            raise TemplateError(
                source, f"names starting with '_' are not readable ({node.arg.value!r})"
            )
        chain = _chain(node)
        if chain is not None:
            root = chain[0]
            if root not in stored and root != "loop":
                if root not in ROOTS:
                    raise TemplateError(
                        source, f"unknown name {root!r}; templates read {', '.join(sorted(ROOTS))}"
                    )
                refs.append(chain)
            for arg in _dynamic_args(node):
                visit(arg)
            return
        for child in node.iter_child_nodes():
            visit(child)

    visit(tree)
    return refs


def _chain(node: nodes.Node) -> Ref | None:
    if isinstance(node, nodes.Name):
        return (node.name,) if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        base = _chain(node.node)
        return None if base is None else (*base, node.attr)
    if isinstance(node, nodes.Getitem):
        base = _chain(node.node)
        if base is None:
            return None
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            return (*base, str(node.arg.value))
        return (*base, "*")
    return None


def _dynamic_args(node: nodes.Node) -> Iterator[nodes.Node]:
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Const):
            yield node.arg
        node = node.node


@dataclass(frozen=True, slots=True)
class Compiled:
    """A value from the graph file with its templates compiled: a tree of plain
    data in which every templated string is a ``Template``. ``located`` pairs
    each template with its path inside the value."""

    value: Any
    located: tuple[tuple[Path, Template], ...]

    @property
    def templates(self) -> list[Template]:
        return [t for _, t in self.located]

    @property
    def refs(self) -> list[Ref]:
        return [ref for _, t in self.located for ref in t.refs]

    def render(self, scope: Scope, *, keep: Callable[[Template], bool] | None = None) -> Any:
        """Renders every template; ``keep(t)`` true leaves ``t``'s source text in place
        (a dry run shows what it cannot resolve yet)."""
        if not self.located:
            return self.value
        return _render(self.value, scope, keep)


def compile_value(
    value: Any,
    errors: list[tuple[Path, TemplateError]] | None = None,
    *,
    budget: TemplateBudget = DEFAULT_BUDGET,
    node: str | None = None,
    field: str | None = None,
) -> Compiled:
    """Compiles every templated string inside ``value`` (dicts, lists, strings).

    With ``errors`` given, a template that does not compile is recorded there
    (with its path) and left as plain text; without, the first one raises.
    ``budget`` bounds every render; ``node`` and ``field`` (the field holding
    ``value``, e.g. ``inputs``) locate each template in budget errors.
    """
    located: list[tuple[Path, Template]] = []
    where = _Where(budget, node, field)
    compiled = _compile(value, (), located, errors, where)
    return Compiled(compiled, tuple(located))


@dataclass(frozen=True, slots=True)
class _Where:
    budget: TemplateBudget
    node: str | None
    field: str | None

    def field_at(self, path: Path) -> str | None:
        parts = [self.field] if self.field else []
        parts.extend(str(p) for p in path)
        return ".".join(parts) or None


def _compile(
    value: Any,
    path: Path,
    located: list[tuple[Path, Template]],
    errors: list[tuple[Path, TemplateError]] | None,
    where: _Where,
) -> Any:
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            template = Template(
                value, budget=where.budget, node=where.node, field=where.field_at(path)
            )
        except TemplateError as exc:
            if errors is None:
                raise
            errors.append((path, exc))
            return value
        located.append((path, template))
        return template
    if isinstance(value, dict):
        return {
            str(k): _compile(v, (*path, str(k)), located, errors, where) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_compile(v, (*path, i), located, errors, where) for i, v in enumerate(value)]
    return value


def _render(value: Any, scope: Scope, keep: Callable[[Template], bool] | None) -> Any:
    if isinstance(value, Template):
        if keep is not None and keep(value):
            return value.source
        return value.render(scope)
    if isinstance(value, dict):
        return {k: _render(v, scope, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, scope, keep) for v in value]
    return value
