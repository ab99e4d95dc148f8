"""api.flood.FloodGuard over a stub app whose requests stay in flight until released: over
a cap the answer is 429 with Retry-After and a JSON error, given before the body is read;
other clients and the gate's pool go on; every slot is given back."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from api.flood import FloodGuard, FloodLimits, MiB

LIMITS = FloodLimits(per_client=3, per_address=5, general=6, gate=6, streams=2, body_bytes=10 * MiB)


class Held:
    """An ASGI app that answers 200 once released; counts the bodies it read."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.bodies_read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.started += 1
        await self.release.wait()
        if scope["method"] == "POST":
            await receive()
            self.bodies_read += 1
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def scope(
    path: str = "/v1/stats/live",
    method: str = "GET",
    ip: str = "10.0.0.1",
    device: str | None = None,
    token: str | None = None,
    length: int | None = None,
    chunked: bool = False,
) -> dict[str, Any]:
    headers = []
    if device:
        headers.append((b"x-device-id", device.encode()))
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "client": (ip, 5000),
    }


class Call:
    def __init__(self, guard: FloodGuard, s: dict[str, Any]) -> None:
        self.messages: list[dict[str, Any]] = []
        self.receives = 0

        async def receive() -> dict[str, Any]:
            self.receives += 1
            return {"type": "http.request", "body": b"x", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            self.messages.append(message)

        self.task = asyncio.create_task(guard(s, receive, send))

    @property
    def status(self) -> int | None:
        return self.messages[0]["status"] if self.messages else None

    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    def error(self) -> str:
        return str(orjson.loads(self.messages[1]["body"])["error"])


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_client_over_its_cap_gets_429_at_once_others_go_on() -> None:
    app = Held()
    guard = FloodGuard(app, LIMITS)
    held = [Call(guard, scope(method="POST", device="dev-a", length=100)) for _ in range(3)]
    await settle()
    over = Call(guard, scope(method="POST", device="dev-a", length=100))
    await settle()
    assert over.task.done() and over.status == 429
    assert over.headers()[b"retry-after"] == b"1"
    assert over.headers()[b"content-type"] == b"application/json"
    assert "too many requests in flight from this client (3)" in over.error()
    assert over.receives == 0  # refused before its body was read
    # the same device ID claimed from elsewhere, and another credential from here: served
    elsewhere = Call(guard, scope(method="POST", ip="10.0.0.2", device="dev-a", length=100))
    other = Call(guard, scope(token="t1"))
    await settle()
    assert elsewhere.status is None and other.status is None and app.started == 5
    # a sixth in flight from this address, whatever it claims: the address's cap
    fifth = Call(guard, scope(token="t2"))
    address_cap = Call(guard, scope(token="t3"))
    await settle()
    assert fifth.status is None
    assert address_cap.status == 429 and "from this address (5)" in address_cap.error()
    app.release.set()
    await asyncio.gather(*(c.task for c in [*held, elsewhere, other, fifth]))
    assert [c.status for c in held] == [200, 200, 200]
    assert guard.clients == {} and guard.addresses == {} and guard.body_bytes == 0
    assert guard.pools == {"general": 0, "gate": 0, "streams": 0}
    assert guard.refused == 2


async def test_a_full_general_pool_leaves_the_gate_its_own() -> None:
    app = Held()
    guard = FloodGuard(app, LIMITS)
    general = [Call(guard, scope(ip=f"10.1.0.{i}")) for i in range(6)]
    await settle()
    busy = Call(guard, scope(ip="10.1.0.99"))
    gate = Call(guard, scope("/v1/gate/check", "POST", ip="10.2.0.1", device="gate-1", length=80))
    health = Call(guard, scope("/healthz", ip="10.1.0.1"))  # liveness is never braked
    await settle()
    assert busy.status == 429 and "6 requests of this kind" in busy.error()
    assert gate.status is None and health.status is None
    app.release.set()
    await asyncio.gather(*(c.task for c in [*general, gate, health]))
    assert gate.status == 200 and health.status == 200


async def test_large_bodies_share_a_byte_budget_small_ones_do_not() -> None:
    app = Held()
    guard = FloodGuard(app, LIMITS)
    large = [
        Call(guard, scope("/v1/scans", "POST", ip=f"10.3.0.{i}", device="d", length=4 * MiB))
        for i in range(2)
    ]
    await settle()
    third = Call(guard, scope("/v1/scans", "POST", ip="10.3.0.9", device="d", length=4 * MiB))
    chunked = Call(guard, scope("/v1/imports/x", "POST", ip="10.3.0.8", token="s", chunked=True))
    small = Call(guard, scope("/v1/gate/check", "POST", ip="10.3.0.7", device="g", length=90))
    await settle()
    assert third.status == 429 and "MiB of request bodies" in third.error()
    assert chunked.status == 429 and third.receives == 0 and chunked.receives == 0
    assert small.status is None
    assert guard.body_bytes == 8 * MiB
    app.release.set()
    await asyncio.gather(*(c.task for c in [*large, small]))
    assert guard.body_bytes == 0 and app.bodies_read == 3


async def test_a_failing_request_gives_its_slot_back() -> None:
    app = Held()
    app.release.set()
    guard = FloodGuard(app, LIMITS)
    for _ in range(5):
        call = Call(guard, scope("/boom", ip="10.4.0.1"))
        with pytest.raises(RuntimeError):
            await call.task
    assert guard.clients == {} and guard.pools["general"] == 0
    ok = Call(guard, scope(ip="10.4.0.1"))
    await ok.task
    assert ok.status == 200
