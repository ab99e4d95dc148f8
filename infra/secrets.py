"""Secrets that must never be constants in the source: the pseudonym key comes from
``DANCU_PSEUDONYM_SECRET`` (required in production), or, in development and tests, from a
random key made once per data directory (file mode 0600), so every process sharing a data
directory pseudonymises alike and no two installations share a key. The token of
``GET /metrics`` is made the same way when ``DANCU_METRICS_TOKEN`` is unset, and so is
the key signing checkpoint posters when ``DANCU_POSTER_KEY`` is unset."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from infra.settings import Settings

KEY_FILE = "pseudonym.key"
METRICS_TOKEN_FILE = "metrics.token"
POSTER_KEY_FILE = "poster.key"


def pseudonym_key(settings: Settings) -> bytes:
    if settings.pseudonym_secret is not None:
        return settings.pseudonym_secret.get_secret_value().encode()
    return made_once(settings.data_dir.resolve() / KEY_FILE)


def metrics_token(settings: Settings) -> str:
    """The bearer token Prometheus sends to ``GET /metrics``: ``DANCU_METRICS_TOKEN``, or
    one made once in ``<data_dir>/metrics.token`` (mode 0600) for the operator to read."""
    if settings.metrics_token is not None:
        return settings.metrics_token.get_secret_value()
    return made_once(settings.data_dir.resolve() / METRICS_TOKEN_FILE).decode()


def poster_key(settings: Settings) -> bytes:
    """The HMAC key of checkpoint posters' QR codes: ``DANCU_POSTER_KEY``; else derived
    from ``DANCU_PSEUDONYM_SECRET`` (so API processes on separate machines, which share
    that secret, accept each other's posters); else one made once in
    ``<data_dir>/poster.key`` (mode 0600). Changing it voids every printed poster."""
    if settings.poster_key is not None:
        return settings.poster_key.get_secret_value().encode()
    if settings.pseudonym_secret is not None:
        secret = settings.pseudonym_secret.get_secret_value().encode()
        return hmac.new(secret, b"dancu poster key 1", hashlib.sha256).hexdigest().encode()
    return made_once(settings.data_dir.resolve() / POSTER_KEY_FILE)


def made_once(path: Path) -> bytes:
    """The random secret in ``path``, made there (mode 0600) if it is missing."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:  # O_EXCL: when two processes race, one key wins and both read it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process is writing it: wait for its key
        for _ in range(100):
            key = path.read_bytes().strip()
            if key:
                return key
            time.sleep(0.01)
        raise RuntimeError(f"{path} stays empty; remove it to make a new key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    return key
