"""Logs that follow a run: every line written while a run or one of its guest
calls is in progress carries ``run_id``, ``graph``, ``node`` and ``grant_id``
(those known), in text (``key=value`` after the message) or as JSON lines
(``log.format: json``, ``ionflux up --log-format json``; python-json-logger
writes them).

The fields live in a context variable: ``bind(...)`` sets them for a block
(the trigger runner around a run, the graph's invoker around one guest call on
its worker thread) and the handler's filter copies them onto each record. Until
``configure()`` installs that handler nothing is bound (``enabled`` is False), so
a library user or a benchmark pays one attribute check per guest call.

A root module: every package may import it; it imports nothing of ionflux.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal

FIELDS = ("run_id", "graph", "node", "grant_id")

LogFormat = Literal["text", "json"]

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(ionflux_context)s"

_fields: ContextVar[dict[str, str] | None] = ContextVar("ionflux_log_fields", default=None)

# Set by configure(): whether anyone reads the fields (False: bind() is not called
# on the hot path).
enabled = False

# run id -> graph name, for the invoker on a worker thread (which knows the run id
# from its CallContext, not the graph).
_graphs: dict[str, str] = {}


def graph_of(run_id: str | None) -> str | None:
    return _graphs.get(run_id) if run_id is not None else None


@contextlib.contextmanager
def run_scope(run_id: str, graph: str) -> Iterator[None]:
    """The run ``run_id`` of ``graph`` is in progress: its lines, and its guest
    calls' lines on any thread, carry both."""
    fields = {**(_fields.get() or {}), "run_id": run_id}
    if graph:  # unknown for a run resumed by id
        _graphs[run_id] = fields["graph"] = graph
    token = _fields.set(fields)
    try:
        yield
    finally:
        _fields.reset(token)
        _graphs.pop(run_id, None)


@contextlib.contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Adds ``fields`` (those not None) to every line logged in this block."""
    given = {k: v for k, v in fields.items() if v is not None}
    token = _fields.set({**(_fields.get() or {}), **given})
    try:
        yield
    finally:
        _fields.reset(token)


def current() -> dict[str, str]:
    return dict(_fields.get() or {})


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (a field the caller passed in
    ``extra=`` wins) and renders them for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _fields.get()
        if bound:
            for key, value in bound.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        shown = [f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None)]
        record.ionflux_context = (" " + " ".join(shown)) if shown else ""
        return True


def formatter(format: LogFormat) -> logging.Formatter:
    if format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "taskName", "ionflux_context"],
        )
    return logging.Formatter(_TEXT)


def configure(format: LogFormat = "text", level: str | int = "INFO") -> logging.Handler:
    """Replaces the root logger's handlers with one on stderr in ``format``."""
    global enabled
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    enabled = True
    return handler


def call_fields(ctx: Any) -> dict[str, str | None]:
    """The log fields of an ``ionwall.CallContext``."""
    return {
        "run_id": ctx.run_id,
        "graph": graph_of(ctx.run_id),
        "node": ctx.node_id,
        "grant_id": ctx.grant_id,
    }
