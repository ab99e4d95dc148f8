"""The public API's link to the store's owner: routes that read or write ClickHouse
(analytics, audit, rebuild, checkpoint registration) are served by the process that owns
it; an API process without ClickHouse forwards them there, unchanged."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from api.asgi import answer

# (method, path) served by the store's owner.
STORE_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", r"/v1/stats/live"),
    ("GET", r"/v1/quality"),
    ("GET", r"/v1/audit"),
    ("POST", r"/v1/admin/rebuild"),
    ("POST", r"/v1/imports/[^/]+"),  # CPU-heavy: off the process answering the gates
    ("POST", r"/v1/checkpoints"),
    ("PUT", r"/v1/checkpoints/[^/]+"),
    ("GET", r"/v1/analytics/.+"),  # the dashboard's ClickHouse aggregates
    ("GET", r"/v1/levels"),
)
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host"}


class StoreProxy:
    """ASGI middleware forwarding :data:`STORE_ROUTES` to ``store_url``."""

    def __init__(self, app: ASGIApp, store_url: str) -> None:
        self.app = app
        self.routes = [(m, re.compile(p)) for m, p in STORE_ROUTES]
        self.client = httpx.AsyncClient(base_url=store_url, timeout=600)

    def _forwarded(self, method: str, path: str) -> bool:
        return any(m == method and p.fullmatch(path) for m, p in self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._forwarded(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return

        async def body() -> AsyncIterator[bytes]:  # streamed on: an upload is never held
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return

        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        # The raw (still percent-encoded) path: forwarded exactly as the client sent it.
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        try:
            r = await self.client.request(
                scope["method"],
                raw_path,
                params=scope.get("query_string", b"").decode("latin-1"),
                content=body(),
                headers=headers,
            )
        except httpx.InvalidURL:
            await answer(send, 400, b'{"error": "the request path cannot be forwarded"}')
            return
        except httpx.HTTPError as exc:
            await answer(
                send,
                503,
                b'{"error": "the store is unavailable, retry shortly (%s)"}'
                % type(exc).__name__.encode(),
            )
            return
        out = [(k.encode(), v.encode()) for k, v in r.headers.items() if k.encode() not in _HOP]
        await answer(send, r.status_code, r.content, out)

    async def aclose(self) -> None:
        await self.client.aclose()
