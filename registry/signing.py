"""What a checkpoint device signs, and how (pure; shared by the device side, ``gate/``,
and the platform's check, ``infra/auth.py``): HMAC-SHA256 over the method, the path
with its query, the timestamp, the body's SHA-256 and an optional nonce."""

from __future__ import annotations

import hashlib
import hmac


def canonical(method: str, path: str, timestamp: int, body: bytes, nonce: str = "") -> bytes:
    """What a device signs: the method, the path (with its query), the timestamp and the
    SHA-256 of the body, one per line, then the nonce if the device sends one
    (``X-Nonce``: two identical requests in one second are then two signatures, not a
    replay)."""
    digest = hashlib.sha256(body).hexdigest()
    text = f"{method.upper()}\n{path}\n{timestamp}\n{digest}"
    return (text + f"\n{nonce}" if nonce else text).encode()


def sign(key: str, method: str, path: str, timestamp: int, body: bytes, nonce: str = "") -> str:
    message = canonical(method, path, timestamp, body, nonce)
    return hmac.new(key.encode(), message, "sha256").hexdigest()
