"""Credentials, pure: API tokens for people (only their hash is stored), and requests
signed by checkpoint devices (HMAC-SHA256 over method, path, timestamp and the body's
hash; a timestamp outside the allowed skew, or a signature seen before, is refused).

Roles (the access issue): ``device``, ``official``, ``epidemiologist``, ``steward``,
``owner``, ``admin``. Wiring every route to them is the access issue's next step; this
module holds the rules that the credential store and the API middleware share.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from registry.signing import sign

Role = Literal["device", "official", "epidemiologist", "steward", "owner", "admin"]
ROLES: tuple[Role, ...] = ("device", "official", "epidemiologist", "steward", "owner", "admin")
TOKEN_PREFIX = "dcu_"
MAX_SKEW_S = 300  # a signed request's timestamp may be this far from ours


def new_token() -> str:
    """A bearer token for a person: shown once, stored only as its hash."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_device_key() -> str:
    """A device's signing key (the device and dancu both hold it)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


def verify(
    key: str,
    method: str,
    path: str,
    timestamp: str | None,
    body: bytes,
    signature: str | None,
    now: float,
    nonce: str | None = None,
) -> Verdict:
    """Is this request signed with ``key``, now? (Replays are the caller's check: a
    signature is remembered for twice the allowed skew.)"""
    if not timestamp or not signature:
        return Verdict(False, "signed requests need X-Timestamp and X-Signature")
    try:
        ts = int(timestamp)
    except ValueError:
        return Verdict(False, "X-Timestamp: not a number of seconds")
    if abs(now - ts) > MAX_SKEW_S:
        return Verdict(False, f"X-Timestamp: more than {MAX_SKEW_S} s from the server's clock")
    if nonce is not None and not (1 <= len(nonce) <= 64 and nonce.isascii()):
        return Verdict(False, "X-Nonce: 1 to 64 ASCII characters")
    if not signature.isascii():
        return Verdict(False, "X-Signature: 64 hexadecimal digits (HMAC-SHA256)")
    expected = sign(key, method, path, ts, body, nonce or "")
    if not hmac.compare_digest(expected, signature.lower()):
        return Verdict(False, "X-Signature: does not match the request")
    return Verdict(True)
