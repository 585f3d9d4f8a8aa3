"""What one template render may spend: steps, value sizes, integer bits, time.

Jinja's sandbox refuses escapes, not work: ``{{ n ** (n ** n) }}`` computes a
number with billions of digits in one C call that holds the GIL, and
``{{ s * 400000000 }}`` allocates gigabytes. So every way a template builds a
value is checked *before* the value is built, against the ``TemplateBudget``
of the render in progress (a context variable, so renders on several threads
and tasks keep their own accounts):

- operators ``*``, ``**``, ``+`` and ``%`` (``BudgetedEnvironment.call_binop``):
  the bits of an integer result, the size of a string or list result;
- every call of a method (``center``, ``ljust``, ``zfill``, ``expandtabs``,
  ``replace``, ``join``, ``format``, ``translate``, ``to_bytes``) and of a
  macro or ``loop()`` (``call``), and every filter (``wrap_filters``): known
  expanders are estimated from their arguments first, every result is measured;
- ``~`` (concatenation) and every ``{% for %}`` iteration, through a rewrite of
  the parsed template (``budget_tree``);
- the text a template writes, piece by piece.

"Size" counts characters of strings and items of lists and mappings, with a
shared sub-value counted each time it appears (as its JSON would hold it), so
a list of references to one big list cannot slip past. A step is one loop
iteration, call, filter or checked operator; the clock is a backstop checked
every few hundred steps and while measuring.
"""

from __future__ import annotations

import functools
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg


@dataclass(frozen=True, slots=True)
class TemplateBudget:
    """Limits of one render (``graph.template_*`` in the configuration)."""

    max_steps: int = 100_000
    max_value_bytes: int = 4 * 1024 * 1024
    max_int_bits: int = 4096
    timeout_s: float = 2.0


DEFAULT_BUDGET = TemplateBudget()


class Exceeded(Exception):
    """Raised inside a render; ``Template.render`` turns it into
    ``TemplateBudgetExceeded`` with the template, node and field."""

    def __init__(self, what: str, limit: str, value: int | float):
        self.what = what
        self.limit = limit
        self.value = value
        super().__init__(f"{what} ({limit} = {value})")


class Account:
    """What one render has spent so far."""

    __slots__ = ("budget", "deadline", "steps")

    def __init__(self, budget: TemplateBudget):
        self.budget = budget
        self.steps = 0
        self.deadline = time.monotonic() + budget.timeout_s

    def step(self, count: int = 1) -> None:
        before = self.steps
        self.steps += count
        if self.steps > self.budget.max_steps:
            raise Exceeded(
                f"more than {self.budget.max_steps} steps (loop iterations, calls, operators)",
                "graph.template_max_steps",
                self.budget.max_steps,
            )
        if before >> 8 != self.steps >> 8:
            self.clock()

    def clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise Exceeded(
                f"rendering took longer than {self.budget.timeout_s:g} s",
                "graph.template_timeout_ms",
                int(self.budget.timeout_s * 1000),
            )

    def allow_size(self, size: int | float, what: str) -> None:
        if size > self.budget.max_value_bytes:
            raise Exceeded(
                f"{what} would hold {_amount(size)} characters or items",
                "graph.template_max_value_bytes",
                self.budget.max_value_bytes,
            )

    def allow_bits(self, bits: int | float, what: str) -> None:
        if bits > self.budget.max_int_bits:
            raise Exceeded(
                f"{what} would be an integer of {_amount(bits)} bits",
                "graph.template_max_int_bits",
                self.budget.max_int_bits,
            )

    def size(self, value: Any, what: str = "a value") -> int:
        """The size of ``value`` (shared parts counted each time); refuses it past
        the budget, having looked at no more than the budget's worth."""
        limit = self.budget.max_value_bytes
        total = 0
        stack = [value]
        looked = 0
        while stack:
            item = stack.pop()
            if isinstance(item, str | bytes):
                total += len(item)
            elif isinstance(item, list | tuple | set | frozenset):
                total += 1 + len(item)
                stack.extend(x for x in item if not isinstance(x, int | float | bool))
            elif isinstance(item, Mapping):
                total += 1 + len(item)
                for key, sub in item.items():
                    if isinstance(key, str):
                        total += len(key)
                    if not isinstance(sub, int | float | bool):
                        stack.append(sub)
            else:
                total += 1
            if total > limit:
                self.allow_size(total, what)
            looked += 1
            if not looked & 0xFFF:
                self.clock()
        return total

    def size_of_sized(self, value: Any, what: str) -> None:
        """Measures a call's result when it is something that can be large."""
        if isinstance(value, str | bytes):
            self.allow_size(len(value), what)
        elif isinstance(value, list | tuple | set | frozenset | Mapping):
            self.size(value, what)


_CURRENT: ContextVar[Account | None] = ContextVar("ionflux_template_account", default=None)


def account() -> Account:
    """The render in progress; outside one (Jinja folding constants while it
    compiles), a fresh account with the default budget."""
    found = _CURRENT.get()
    return found if found is not None else Account(DEFAULT_BUDGET)


def rendering(budget: TemplateBudget) -> Any:
    """Starts an account for one render: ``token = rendering(b)``, then ``done(token)``."""
    return _CURRENT.set(Account(budget))


def done(token: Any) -> None:
    _CURRENT.reset(token)


def _amount(value: int | float) -> str:
    if isinstance(value, float) and (math.isinf(value) or value > 1e18):
        return "an astronomical number of"
    return f"about {int(value):,}"


# -- operators ----------------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _check_binop(acc: Account, op: str, left: Any, right: Any) -> None:
    if op == "**":
        base, exp = _int(left), _int(right)
        if base is not None and exp is not None and exp > 0 and abs(base) > 1:
            acc.allow_bits(exp * math.log2(abs(base)), f"{base} ** {_short(exp)}")
    elif op == "*":
        a, b = _int(left), _int(right)
        if a is not None and b is not None:
            acc.allow_bits(a.bit_length() + b.bit_length(), "a product")
        elif b is not None and isinstance(left, str | bytes | list | tuple):
            _check_repeat(acc, left, b)
        elif a is not None and isinstance(right, str | bytes | list | tuple):
            _check_repeat(acc, right, a)
    elif op == "+":
        if isinstance(left, str | bytes) and isinstance(right, str | bytes):
            acc.allow_size(len(left) + len(right), "a concatenation")
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            acc.allow_size(acc.size(left) + acc.size(right), "a list concatenation")
    elif op == "%" and isinstance(left, str):
        _check_printf(acc, left, right)


def _check_repeat(acc: Account, value: str | bytes | list[Any] | tuple[Any, ...], n: int) -> None:
    if n <= 0:
        return
    unit = len(value) if isinstance(value, str | bytes) else acc.size(value, "a repeated list")
    acc.allow_size(unit * n, f"a repetition ({_short(n)} times)")


def _short(n: int) -> str:
    return str(n) if n.bit_length() < 64 else f"an integer of {n.bit_length()} bits"


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _check_printf(acc: Account, fmt: str, args: Any) -> None:
    """``fmt % args``: widths and precisions are what can make it large."""
    extra = 0
    star = False
    for match in _PRINTF.finditer(fmt):
        for group in match.group(1, 2):
            if group == "*":
                star = True
            elif group:
                extra += int(group)
    values = args if isinstance(args, tuple) else (args,)
    if star:
        extra += sum(abs(v) for v in values if isinstance(v, int))
    acc.allow_size(len(fmt) + extra + acc.size(values), "a formatted string")


_FORMATTER = string.Formatter()


def _check_format(acc: Account, fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``fmt.format(...)``: the widths in each field's spec; nested fields refused."""
    extra = 0
    for _literal, field, spec, _conversion in _FORMATTER.parse(fmt):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise Exceeded(
                "a format spec with a nested field cannot be estimated",
                "graph.template_max_value_bytes",
                acc.budget.max_value_bytes,
            )
        extra += sum(int(n) for n in re.findall(r"\d+", spec))
    acc.allow_size(len(fmt) + extra + acc.size((args, dict(kwargs))), "a formatted string")


# -- method calls ---------------------------------------------------------------


def _width(args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str, index: int = 0) -> int:
    value = kwargs.get(name, args[index] if len(args) > index else 0)
    return value if isinstance(value, int) else 0


def _check_method(acc: Account, owner: Any, name: str, args: tuple[Any, ...], kw: Any) -> None:
    if isinstance(owner, str | bytes):
        n = len(owner)
        if name in ("center", "ljust", "rjust"):
            acc.allow_size(max(n, _width(args, kw, "width")), f"{name}()")
        elif name == "zfill":
            acc.allow_size(max(n, _width(args, kw, "width")), "zfill()")
        elif name == "expandtabs":
            size = _width(args, kw, "tabsize") if args or "tabsize" in kw else 8
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            acc.allow_size(n + tabs * size, name)
        elif name == "replace" and len(args) >= 2:
            _check_replace(acc, owner, args[0], args[1], args[2] if len(args) > 2 else -1)
        elif name == "join" and args:
            items = args[0]
            if not isinstance(items, list | tuple | str | bytes):
                return  # an iterator: the result is measured once joined
            acc.allow_size(acc.size(items) + n * len(items), "join()")
        elif name in ("format", "format_map") and isinstance(owner, str):
            if name == "format_map":
                _check_format(acc, owner, (), args[0] if args else {})
            else:
                _check_format(acc, owner, args, kw)
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max(
                (len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1
            )
            acc.allow_size(n * max(longest, 1), "translate()")
    elif isinstance(owner, int) and name == "to_bytes":
        acc.allow_size(_width(args, kw, "length"), "to_bytes()")


def _check_replace(acc: Account, owner: Any, old: Any, new: Any, count: Any) -> None:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return
    try:
        found = len(owner) + 1 if not old else owner.count(old)
    except TypeError:
        return
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    acc.allow_size(len(owner) + found * max(len(new) - len(old), 0), "replace()")


# -- filters --------------------------------------------------------------------


def _filter_checks(acc: Account, name: str, args: tuple[Any, ...], kw: Mapping[str, Any]) -> None:
    """Estimates the result of the filters that can build far more than they read
    (``args[0]`` is the filtered value)."""
    value = args[0] if args else None
    rest = args[1:]
    if name == "center":
        acc.allow_size(max(len(str(value)), _width(rest, kw, "width")), "center")
    elif name == "indent":
        width = kw.get("width", rest[0] if rest else 4)
        per_line = width if isinstance(width, int) else len(str(width))
        text = str(value)
        acc.allow_size(len(text) + (text.count("\n") + 1) * per_line, "indent")
    elif name == "format":
        _check_printf(acc, str(value), tuple(rest) or tuple(kw.values()))
    elif name == "replace" and len(rest) >= 2:
        count = kw.get("count", rest[2] if len(rest) > 2 else None)
        _check_replace(acc, str(value), rest[0], rest[1], count if count is not None else -1)
    elif name == "join":
        sep = kw.get("d", rest[0] if rest else "")
        if isinstance(value, list | tuple):
            acc.allow_size(acc.size(value) + len(str(sep)) * len(value), "join")
    elif name == "wordwrap":
        text = str(value)
        width = _width(rest, kw, "width") or 79
        wrap = kw.get("wrapstring", rest[2] if len(rest) > 2 else None) or "\n"
        lines = len(text) // max(width, 1) + text.count(" ") + text.count("\n") + 1
        acc.allow_size(len(text) + lines * len(str(wrap)), "wordwrap")
    elif name in ("batch", "slice"):
        count = _width(rest, kw, "linecount" if name == "batch" else "slices")
        size = len(value) if isinstance(value, list | tuple | str) else 0
        acc.allow_size(size + count, name)
    elif name == "tojson":
        indent = kw.get("indent", rest[0] if rest else None)
        per_level = indent if isinstance(indent, int) else len(str(indent or ""))
        size = acc.size(value)
        acc.allow_size(size * (1 + per_level * min(_depth(value), 64)), "tojson")
    elif name in ("string", "pprint", "list", "sum", "urlize"):
        size = acc.size(value, name)
        if name == "urlize":
            extra = sum(len(str(v)) for v in list(rest) + list(kw.values()) if v)
            acc.allow_size(size + (size // 4 + 1) * (extra + 64), "urlize")


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | tuple):
            deepest = max(deepest, level)
            stack.extend((x, level + 1) for x in item if isinstance(x, list | tuple | Mapping))
        elif isinstance(item, Mapping):
            deepest = max(deepest, level)
            stack.extend(
                (x, level + 1) for x in item.values() if isinstance(x, list | tuple | Mapping)
            )
        if level > 64:
            break
    return deepest


def _budgeted_sum(original: Callable[..., Any]) -> Callable[..., Any]:
    """``sum`` of lists is quadratic in Python; with a list ``start``, concatenate once."""

    @functools.wraps(original)
    def do_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if not isinstance(start, list | tuple):
            return original(environment, iterable, attribute, start)
        acc = account()
        items = list(iterable)
        if attribute is not None:
            getter = environment.getattr
            items = [getter(item, attribute) for item in items]
        result = list(start)
        for item in items:
            acc.step()
            result.extend(item)
            acc.allow_size(len(result), "sum")
        return result if isinstance(start, list) else tuple(result)

    return do_sum


def _counted(items: Iterable[Any], what: str) -> Iterator[Any]:
    """Items of a filter's lazy result: one step each, their sizes added up."""
    acc = account()
    total = 0
    for item in items:
        acc.step()
        if isinstance(item, str | bytes | list | tuple | Mapping):
            total += acc.size(item, what)
            acc.allow_size(total, what)
        yield item


def wrap_filters(filters: dict[str, Callable[..., Any]]) -> None:
    """Puts the budget around every filter of ``filters`` (in place)."""
    for name, original in list(filters.items()):
        filters[name] = _wrap_filter(name, _budgeted_sum(original) if name == "sum" else original)


def _wrap_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if _PassArg.from_obj(original) is not None else 0

    @functools.wraps(original)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        acc = account()
        acc.step()
        _filter_checks(acc, name, args[skip:], kwargs)
        result = original(*args, **kwargs)
        if isinstance(result, Iterator) and not isinstance(result, str | bytes):
            return _counted(result, name)
        acc.size_of_sized(result, name)
        return result

    return filtered


# -- the environment --------------------------------------------------------------


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every operator, call and iteration accounted."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//", "-"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        acc = account()
        acc.step()
        _check_binop(acc, operator_, left, right)
        result = self.binop_table[operator_](left, right)
        acc.size_of_sized(result, f"the result of {operator_!r}")
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        acc = account()
        acc.step()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox's str.format wrapper
        owner = getattr(target, "__self__", None)
        if owner is not None:
            _check_method(acc, owner, getattr(target, "__name__", ""), args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        acc.size_of_sized(result, f"the result of {getattr(target, '__name__', 'a call')}()")
        return result

    def budget_iter(self, iterable: Any) -> Iterator[Any]:
        """What every ``{% for %}`` iterates: one step per item."""
        acc = account()
        for item in iterable:
            acc.step()
            yield item

    def budget_concat(self, parts: list[Any]) -> str:
        """``a ~ b ~ c``: measured before the text is built."""
        acc = account()
        acc.step()
        texts = []
        total = 0
        for part in parts:
            if isinstance(part, str):
                text = part
            else:
                acc.size(part, "a concatenation")
                text = str(part)
            total += len(text)
            acc.allow_size(total, "a concatenation")
            texts.append(text)
        return "".join(texts)


def budget_tree(tree: nodes.Template) -> nodes.Template:
    """Routes every ``for`` iterable and every ``~`` through the environment's
    accounting methods (in place; returns ``tree``)."""
    for loop in tree.find_all(nodes.For):
        loop.iter = _env_call("budget_iter", [cast(nodes.Expr, loop.iter)], loop.iter.lineno)
    for node in list(tree.find_all(nodes.Concat)):
        replacement = _env_call(
            "budget_concat",
            [nodes.List(list(node.nodes), lineno=node.lineno)],
            node.lineno,
        )
        _replace(tree, node, replacement)
    return tree


def _env_call(name: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
    return nodes.Call(
        nodes.EnvironmentAttribute(name, lineno=lineno), args, [], None, None, lineno=lineno
    )


def _replace(tree: nodes.Node, old: nodes.Node, new: nodes.Node) -> None:
    """Replaces ``old`` by ``new`` wherever a node of ``tree`` holds it."""
    for parent in [tree, *tree.find_all(nodes.Node)]:
        for field in parent.fields:
            value = getattr(parent, field, None)
            if value is old:
                setattr(parent, field, new)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
