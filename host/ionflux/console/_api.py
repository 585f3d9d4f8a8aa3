"""The console's one seam to the host: the HTTP API, called with the session's token.

Every read and every action of the console is a request to the same app any
client calls (``/ionwall/...``, ``/runs/...``, ``/graphs/...``), made in
process (httpx's ASGI transport, no socket) with ``Authorization: Bearer`` of
the session's IONWALL token. It passes the same door, the same scope checks,
the same audit entries: the console can do nothing its token could not do
from ``curl``.
"""

from __future__ import annotations

from typing import Any

import httpx

#: The console's calls never leave the process; the name only fills in URLs.
BASE = "http://console.internal"


class ApiRefused(Exception):
    """An API call of the console answered an error: its status and the API's detail."""

    def __init__(self, status: int, detail: Any):
        self.status = status
        self.detail = detail
        message = detail.get("message") if isinstance(detail, dict) else None
        super().__init__(f"HTTP {status}: {message or detail}")


class Api:
    """The API as one session sees it."""

    def __init__(self, app: Any, authorization: str) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE,
            headers={"Authorization": authorization, "Accept": "application/json"},
            timeout=30.0,
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v not in (None, "")}
        return _answer(await self._client.get(path, params=query))

    async def post(self, path: str, body: Any = None, **headers: str) -> Any:
        return _answer(await self._client.post(path, json=body, headers=headers))


def _answer(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = {"message": response.text[:500]}
    if response.status_code >= 400:
        raise ApiRefused(response.status_code, data.get("detail", data))
    return data


__all__ = ["Api", "ApiRefused"]
