"""Request bodies refused early: a per-route byte limit checked against ``Content-Length``
before anything is read, and again while the body streams in (a client may lie or send
chunked), so an oversized body never costs more memory than its limit."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.asgi import answer

KiB = 1 << 10
MiB = 1 << 20
# (method, path pattern, limit): the first match wins.
DEFAULT_LIMITS: tuple[tuple[str, str, int], ...] = (
    ("POST", r"/v1/imports/[^/]+", 256 * MiB),  # streamed to a spool file, never held whole
    ("POST", r"/v1/scans", 4 * MiB),  # 10,000 scans of ~300 bytes
    ("*", r".*", 64 * KiB),
)


class BodyTooLarge(Exception):
    pass


def _human(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // KiB} KiB"


class BodyLimit:
    """ASGI middleware: 413 with a clear message above the route's limit."""

    def __init__(self, app: ASGIApp, limits: Sequence[tuple[str, str, int]] = DEFAULT_LIMITS):
        self.app = app
        self.limits = [(m, re.compile(p), n) for m, p, n in limits]

    def limit_for(self, method: str, path: str) -> int:
        for m, pattern, n in self.limits:
            if m in ("*", method) and pattern.fullmatch(path):
                return n
        return 64 * KiB

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(send, 400, "Content-Length is not a number")
                return
            if int(declared) > limit:
                await _refuse(send, 413, self._message(scope, limit))
                return
        received = 0
        over = started = False

        async def limited_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # A route may turn the read error into its own answer (FastAPI answers 400
            # "error parsing the body"); the client gets the 413 that explains it.
            nonlocal started
            if over:
                if not started:
                    started = True
                    await _refuse(send, 413, self._message(scope, limit))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                started = True
                await _refuse(send, 413, self._message(scope, limit))

    @staticmethod
    def _message(scope: Scope, limit: int) -> str:
        return (
            f"request body larger than {_human(limit)}, the limit for "
            f"{scope['method']} {scope['path'][:80]}"
        )


async def _refuse(send: Send, status: int, message: str) -> None:
    await answer(
        send,
        status,
        orjson.dumps({"error": message}),
        [(b"content-type", b"application/json"), (b"connection", b"close")],
    )


class ServerTiming:
    """ASGI middleware: ``Server-Timing: app;dur=<ms>`` on every response, the time spent
    inside this process (what a device's latency is made of, besides the network)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                headers = [
                    *message.get("headers", []),
                    (b"server-timing", f"app;dur={ms:.3f}".encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)
