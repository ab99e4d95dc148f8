"""httpx authentication for dancu's clients: a person's bearer token, or a checkpoint
device's signature (HMAC over method, path with query, timestamp and body; see
:mod:`registry.signing`). The device side's own module (a device talks HTTP only); also
used by the simulator, benchmarks and tests."""

from __future__ import annotations

import secrets
import time
from collections.abc import Generator

import httpx

from registry.signing import sign


class BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class DeviceAuth(httpx.Auth):
    """Signs every request with the device's key (a fresh timestamp and nonce each time,
    so a retried request is a new signature, never a refused replay)."""

    requires_request_body = True

    def __init__(self, device_id: str, key: str) -> None:
        self.device_id = device_id
        self.key = key

    def headers(self, method: str, target: str, body: bytes) -> dict[str, str]:
        ts = int(time.time())
        nonce = secrets.token_hex(8)
        return {
            "X-Device-Id": self.device_id,
            "X-Timestamp": str(ts),
            "X-Nonce": nonce,
            "X-Signature": sign(self.key, method, target, ts, body, nonce),
        }

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("latin-1")
        request.headers.update(self.headers(request.method, target, request.content))
        yield request
