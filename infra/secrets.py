"""Secrets that must never be constants in the source: the pseudonym key comes from
``DANCU_PSEUDONYM_SECRET`` (required in production), or, in development and tests, from a
random key made once per data directory (file mode 0600), so every process sharing a data
directory pseudonymises alike and no two installations share a key."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from infra.settings import Settings

KEY_FILE = "pseudonym.key"


def pseudonym_key(settings: Settings) -> bytes:
    if settings.pseudonym_secret is not None:
        return settings.pseudonym_secret.get_secret_value().encode()
    path = settings.data_dir.resolve() / KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:  # O_EXCL: when two processes race, one key wins and both read it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Path(path).read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    return key
