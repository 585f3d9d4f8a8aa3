"""Request bodies: parsed and validated off the event loop, nested no deeper than allowed.

The door (``_guard``) has checked the caller and bounds the body's size
before a route reads it; this module turns the bytes into values. Work that
grows with what a caller sends (JSON, YAML, a graph's validation, a
manifest) runs on ``Bodies``' own small pool of threads, so the loop keeps
answering other requests (``/healthz`` included) while it runs; the pool's
size bounds how much of it runs at once, and the rest waits its turn. A body
under ``INLINE_BYTES`` is parsed on the loop: that takes microseconds, less
than the hand-off to a thread.

JSON nesting: the standard parser recurses per level and raises
``RecursionError`` near Python's recursion limit; that becomes
``JsonTooDeep``, and so does a value nested deeper than ``max_depth``,
measured without recursion. No Python exception's name reaches the caller.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from .._errors import JsonTooDeep, NotJson

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: Bodies up to this size are parsed on the event loop (well under a millisecond).
INLINE_BYTES = 16 * 1024


def parse_json(body: bytes, max_depth: int) -> Any:
    """``body`` as JSON (an empty body is ``{}``); raises ``NotJson`` or ``JsonTooDeep``."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except RecursionError:
        raise JsonTooDeep(max_depth) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJson(f"request body is not JSON: {exc}") from None
    check_depth(value, max_depth)
    return value


def check_depth(value: Any, max_depth: int) -> None:
    """Raises ``JsonTooDeep`` if ``value`` nests more than ``max_depth`` lists or objects."""
    if not isinstance(value, dict | list):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > max_depth:
            raise JsonTooDeep(max_depth)
        for item in container.values() if isinstance(container, dict) else container:
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))


def validate(model: type[M], value: Any) -> M:
    """``value`` as ``model``; a mismatch is the 422 FastAPI gives for a bad body."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


class Bodies:
    """Reads and parses request bodies; runs heavy parsing on ``threads`` threads."""

    def __init__(self, *, max_json_depth: int = 64, threads: int = 2) -> None:
        self.max_json_depth = max_json_depth
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the parsing threads; waits for a free one."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ionflux-parse")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def json(self, request: Request) -> Any:
        body = await request.body()
        if len(body) <= INLINE_BYTES:
            return parse_json(body, self.max_json_depth)
        return await self.call(parse_json, body, self.max_json_depth)

    async def model(self, request: Request, model: type[M]) -> M:
        body = await request.body()
        if len(body) <= INLINE_BYTES:
            return validate(model, parse_json(body, self.max_json_depth))
        return await self.call(_parse_model, model, body, self.max_json_depth)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _parse_model(model: type[M], body: bytes, max_depth: int) -> M:
    return validate(model, parse_json(body, max_depth))


def request_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a route that reads ``model`` through ``Bodies``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }
