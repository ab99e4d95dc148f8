"""Structured logs: one JSON object per line (``ts``, ``level``, ``logger``, ``msg``,
``request_id`` during a request, then the record's extras), for log shippers to parse.

Logs leave the process, so what would identify a person or open a door is taken out
before a line is written: extras whose key names a secret or a personal field
(authorization, token, key, signature, person_id, dob, address, qr, …) are replaced by
``[redacted]``, and in every text (message, extras, tracebacks) bearer tokens, dancu
tokens, hex signatures and 12-digit ID numbers (CCCD) are masked. Code should still
not log such things; this is the net under it.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from infra.auth import TOKEN_PREFIX

REQUEST_ID: ContextVar[str | None] = ContextVar("dancu_request_id", default=None)
"""The current HTTP request's ID (set by api.observe.RequestLog); copied into tasks and
threads started during the request, so their lines carry it too."""

REDACTED = "[redacted]"
# Fragments of extra keys whose values are never written (compared lower-case, '-' as '_').
SECRET_KEYS = (
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "signature",
    "key",
    "person_id",
    "id_number",
    "cccd",
    "dob",
    "birth",
    "full_name",
    "address",
    "phone",
    "qr",
)
PERSONAL_KEYS = frozenset({"name", "names", "person", "people", "persons"})
_TEXT_PATTERNS = (
    (re.compile(r"(?i)\bbearer\s+[^\s,;\"']+"), "Bearer " + REDACTED),
    (re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{8,}"), TOKEN_PREFIX + REDACTED),
    (re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])"), REDACTED),  # HMAC-SHA256
    (re.compile(r"(?<!\d)\d{12}(?!\d)"), "[id]"),  # a CCCD number
)
# Attributes every LogRecord has: anything else on a record is an extra.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
    "color_message",  # uvicorn's copy of the message with terminal colours
}
_MAX_DEPTH = 4
# httpx (the store proxy, webhooks) logs every request's full URL at INFO; aiokafka's
# connection logs every request and response at DEBUG, records' keys and values in them
# (ID numbers, escaped past the masks below).
QUIET_LOGGERS = ("httpx", "httpcore", "aiokafka.conn")


def redact_text(text: str) -> str:
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return k in PERSONAL_KEYS or any(fragment in k for fragment in SECRET_KEYS)


def redact(key: str, value: Any, depth: int = 0) -> Any:
    """``value`` fit to log under ``key``: secrets and personal fields replaced, texts
    masked, containers walked (to a small depth), anything else as its text."""
    if _secret_key(key):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value  # IDs are text here (a CCCD's leading zeros would not survive an int)
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {str(k): redact(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(key, v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return redact_text(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module's docstring for what is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            out["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = redact(key, value)
        if record.exc_info:
            out["exc"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = redact_text(record.exc_text)
        if record.stack_info:
            out["stack"] = redact_text(self.formatStack(record.stack_info))
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str | int = "WARNING") -> None:
    """Every logger of the process to stderr as JSON lines, once (a second call only
    changes the level). Uvicorn is told ``log_config=None`` so it keeps to this."""
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for chatty in QUIET_LOGGERS:  # whole URLs (paths with IDs, query strings), payloads
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
