"""The brake on floods: requests in flight are capped, and a request over a cap is answered
429 with ``Retry-After`` at once, before its body is read, so a flood costs a counter
rather than memory.

Caps, checked in this order (the first one hit answers):

- per client: requests in flight from one client (four times as many in the gate's pool:
  a gateway device fronts a site's gates), a client being its address *and* the
  credential it claims (a device ID, a bearer token's hash): so a flood from one place
  cannot take a device's slots even when it claims that device's ID (the claim is checked
  later, by :class:`api.access.Access`); and per address, whatever it claims;
- per pool: the gate's pool (``POST /v1/gate/check`` and ``POST /v1/scans``, what devices
  send at the door), open alert streams, and everything else each have their own global
  cap, so a flood of imports or dashboard reads never starves a gate of answers;
- large bodies: a request declaring more than :data:`SMALL_BODY` bytes (or sending a
  chunked body of unknown size) reserves its size from a global byte budget, so
  the bodies being read at once never hold more than the budget however many arrive.

Liveness (``/healthz``) is never braked: a probe must see the process as it is. Unread
bodies of refused requests are left to the server (uvicorn reads and drops them without
holding them), so the client gets its 429 after sending.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.asgi import answer
from infra.settings import Settings

KiB = 1 << 10
MiB = 1 << 20
SMALL_BODY = 64 * KiB  # a gate check, a scan or a form: counted by requests only
UNKNOWN_BODY = 4 * MiB  # a chunked body's reservation (the largest body held in memory)
GATE = frozenset({("POST", "/v1/gate/check"), ("POST", "/v1/scans")})
STREAMS = frozenset({("GET", "/v1/alerts/stream")})
UNBRAKED = frozenset({"/healthz"})
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class FloodLimits:
    per_client: int = 64
    per_address: int = 256
    general: int = 512  # every route not in the pools below
    gate: int = 1024
    streams: int = 1024
    body_bytes: int = 64 * MiB

    @classmethod
    def of(cls, settings: Settings) -> FloodLimits:
        n = settings.flood_in_flight
        return cls(
            per_client=settings.flood_per_client,
            per_address=4 * settings.flood_per_client,
            general=n,
            gate=2 * n,
            streams=2 * n,
            body_bytes=settings.flood_body_mib * MiB,
        )


class FloodGuard:
    """ASGI middleware: 429 + ``Retry-After`` + ``{"error": ...}`` over a cap."""

    def __init__(self, app: ASGIApp, limits: FloodLimits | None = None) -> None:
        self.app = app
        self.limits = limits or FloodLimits()
        self.clients: dict[str, int] = {}
        self.addresses: dict[str, int] = {}
        self.pools: dict[str, int] = {"general": 0, "gate": 0, "streams": 0}
        self.body_bytes = 0
        self.refused = 0

    def _pool(self, method: str, path: str) -> str:
        if (method, path) in GATE:
            return "gate"
        if (method, path) in STREAMS:
            return "streams"
        return "general"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNBRAKED:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        address = (scope.get("client") or ("?", 0))[0]
        client = f"{address}|{_claim(headers)}"
        pool = self._pool(scope["method"], scope["path"])
        cost = _body_cost(headers)
        why = self._over(client, address, pool, cost)
        if why is not None:
            self.refused += 1
            await answer(
                send,
                429,
                orjson.dumps({"error": f"{why}; retry in {RETRY_AFTER_S} s"}),
                [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(RETRY_AFTER_S).encode()),
                ],
            )
            return
        self.clients[client] = self.clients.get(client, 0) + 1
        self.addresses[address] = self.addresses.get(address, 0) + 1
        self.pools[pool] += 1
        self.body_bytes += cost
        try:
            await self.app(scope, receive, send)
        finally:
            self.body_bytes -= cost
            self.pools[pool] -= 1
            _release(self.addresses, address)
            _release(self.clients, client)

    def _over(self, client: str, address: str, pool: str, cost: int) -> str | None:
        """Which cap this request would pass (a sentence), or None."""
        lim = self.limits
        # A device at the door may front a site's gates (a gateway): four times the slots.
        mine = lim.per_client * (4 if pool == "gate" else 1)
        if self.clients.get(client, 0) >= mine:
            return f"too many requests in flight from this client ({mine})"
        if self.addresses.get(address, 0) >= lim.per_address:
            return f"too many requests in flight from this address ({lim.per_address})"
        cap = {"general": lim.general, "gate": lim.gate, "streams": lim.streams}[pool]
        if self.pools[pool] >= cap:
            return f"the server has {cap} requests of this kind in flight"
        if cost and self.body_bytes + cost > lim.body_bytes:
            return (
                f"the server is reading {lim.body_bytes // MiB} MiB of request bodies; "
                "send large bodies again shortly"
            )
        return None


def _claim(headers: dict[bytes, bytes]) -> str:
    """The credential a request claims (not yet checked): a device ID, a token's hash."""
    device = headers.get(b"x-device-id")
    if device:
        return "d:" + device[:64].decode("latin-1")
    authorization = headers.get(b"authorization")
    if authorization:  # hashed: the guard keeps no token
        return "t:" + hashlib.sha256(authorization).hexdigest()[:16]
    return ""


def _body_cost(headers: dict[bytes, bytes]) -> int:
    """The bytes a request's body reserves: 0 for small ones (counted by requests)."""
    declared = headers.get(b"content-length")
    if declared is None:
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        return UNKNOWN_BODY if chunked else 0
    if not declared.isdigit():
        return 0  # BodyLimit, inside, refuses it (400) before reading anything
    size = int(declared)
    return 0 if size <= SMALL_BODY else min(size, UNKNOWN_BODY)


def _release(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]  # bounded by the requests in flight, not by the clients ever seen
