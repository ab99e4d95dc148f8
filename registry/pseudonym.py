"""Keyed pseudonyms: ClickHouse and the visit indexes never hold a raw ID number.

A person is keyed by HMAC-SHA256(secret, id) truncated to 128 bits (hex): stable for
joins across tables, useless without the secret (DESIGN.md, Privacy).
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymizer:
    """Turns personal ID numbers into keyed pseudonyms."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("pseudonym secret must be at least 16 bytes")
        self._key = secret

    def __call__(self, person_id: str) -> str:
        return hmac.new(self._key, person_id.encode(), hashlib.sha256).hexdigest()[:32]
