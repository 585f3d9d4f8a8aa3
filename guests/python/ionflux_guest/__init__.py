"""Typed helpers over componentize-py's bindings for the `ionflux:transform` world.

A transform is a class ``WitWorld`` with ``run(self, input: str) -> str``::

    import ionflux_guest as ion
    from ionflux_guest import Transform


    class WitWorld(Transform):
        def handle(self, data: dict) -> dict:
            ion.log.info("upper-casing")
            return {"text": data["text"].upper()}

``Transform.run`` parses the input as a JSON object, calls ``handle`` and
serialises its answer; an ``ImportError_`` raised by a helper (or by
``handle``) becomes ``run``'s error with the same case.

Every import answers an error as an exception here: ``Denied`` (IONWALL
refused: the message names the scope), ``NotFound``, ``Invalid``,
``TooLarge``, ``Unavailable``, ``Failed``; all are ``GuestImportError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import wit_world
from componentize_py_types import Err
from wit_world.imports import bus as _bus
from wit_world.imports import config as _config
from wit_world.imports import http as _http
from wit_world.imports import log as _log
from wit_world.imports import pod as _pod
from wit_world.imports import types as _types

__all__ = [
    "Denied",
    "Failed",
    "GuestImportError",
    "Invalid",
    "NotFound",
    "Response",
    "TooLarge",
    "Transform",
    "Unavailable",
    "bus",
    "config",
    "http",
    "log",
    "pod",
]


class GuestImportError(Exception):
    """An import answered an error; ``case`` is its WIT case name."""

    case = "failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wit(self) -> Any:
        return _TO_WIT[self.case](self.message)


class Denied(GuestImportError):
    """IONWALL refused the call: the message names the scope and the reason."""

    case = "denied"


class NotFound(GuestImportError):
    case = "not-found"


class Invalid(GuestImportError):
    case = "invalid"


class TooLarge(GuestImportError):
    case = "too-large"


class Unavailable(GuestImportError):
    case = "unavailable"


class Failed(GuestImportError):
    case = "failed"


_FROM_WIT: dict[type, type[GuestImportError]] = {
    _types.Error_Denied: Denied,
    _types.Error_NotFound: NotFound,
    _types.Error_Invalid: Invalid,
    _types.Error_TooLarge: TooLarge,
    _types.Error_Unavailable: Unavailable,
    _types.Error_Failed: Failed,
}
_TO_WIT: dict[str, Any] = {cls.case: wit for wit, cls in _FROM_WIT.items()}


def _raise(err: Err[Any]) -> GuestImportError:
    value = err.value
    return _FROM_WIT.get(type(value), Failed)(str(getattr(value, "value", value)))


class _Log:
    """``log.write`` (scope ``emit_log:<level>``)."""

    def write(self, level: str, message: str) -> None:
        try:
            _log.write(_log.Level[level.upper()], message)
        except Err as err:
            raise _raise(err) from None

    def debug(self, message: str) -> None:
        self.write("debug", message)

    def info(self, message: str) -> None:
        self.write("info", message)

    def warn(self, message: str) -> None:
        self.write("warn", message)

    def error(self, message: str) -> None:
        self.write("error", message)


class _Config:
    """``config.get`` (scope ``read_config:<key>``): the value, or None if unset."""

    def get(self, key: str) -> str | None:
        try:
            return _config.get(key)
        except Err as err:
            raise _raise(err) from None


class _Pod:
    """IONPOD (scopes ``read_pod_data:<path or CID>``, ``write_pod_data:<path>``)."""

    def get(self, reference: str) -> str:
        try:
            return _pod.get(reference)
        except Err as err:
            raise _raise(err) from None

    def put(self, path: str, data: str) -> str:
        """Stores ``data`` under ``path``; returns its CID."""
        try:
            return _pod.put(path, data)
        except Err as err:
            raise _raise(err) from None


class _Bus:
    """``bus.publish`` (scope ``publish_nats_topic:<subject>``)."""

    def publish(self, subject: str, payload: str | dict[str, Any] | list[Any]) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        try:
            _bus.publish(subject, text)
        except Err as err:
            raise _raise(err) from None


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


class _Http:
    """``http.fetch`` (scope ``http_fetch:<host>[:<port>]``); redirects are not followed."""

    def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: str | None = None,
        timeout_ms: int | None = None,
    ) -> Response:
        request = _http.Request(
            method=method,
            url=url,
            headers=[_http.Header(name=k, value=v) for k, v in headers or []],
            body=body,
            timeout_ms=timeout_ms,
        )
        try:
            answer = _http.fetch(request)
        except Err as err:
            raise _raise(err) from None
        return Response(answer.status, [(h.name, h.value) for h in answer.headers], answer.body)


log = _Log()
config = _Config()
pod = _Pod()
bus = _Bus()
http = _Http()


class Transform(wit_world.WitWorld):
    """``run`` for a JSON object in and a JSON value out; subclass it as ``WitWorld``."""

    def handle(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError("a transform overrides handle(data)")

    def run(self, input: str) -> str:
        try:
            data = json.loads(input)
        except ValueError as exc:
            raise Err(_types.Error_Invalid(f"input is not JSON: {exc}")) from None
        if not isinstance(data, dict):
            raise Err(_types.Error_Invalid("input must be a JSON object"))
        try:
            return json.dumps(self.handle(data), ensure_ascii=False)
        except GuestImportError as exc:
            raise Err(exc.to_wit()) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise Err(_types.Error_Invalid(f"{type(exc).__name__}: {exc}")) from None
