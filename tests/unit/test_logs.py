"""The JSON log formatter: one object per line, the request ID, extras, and nothing that
identifies a person or opens a door."""

import io
import logging
import sys

import orjson
import pytest

from infra.logs import REQUEST_ID, JsonFormatter, configure_logging

TOKEN = "dcu_Q2hhbmdlIG1lIGlmIHlvdSBzZWUgbWUgaW4gYSBsb2c"
SIGNATURE = "9f" * 32
CCCD = "001090123456"


def line(msg: str = "hello", *args: object, exc: bool = False, **extra: object) -> dict:
    """Format one record the way a handler would and parse the line back."""
    logger = logging.getLogger("dancu.test")
    exc_info = None
    if exc:
        try:
            raise ValueError(f"no resident {CCCD}")
        except ValueError:
            exc_info = sys.exc_info()
    record = logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra
    )
    text = JsonFormatter().format(record)
    assert "\n" not in text
    return dict(orjson.loads(text))


def test_the_fields_of_a_line() -> None:
    out = line("scans %d", 3, route="/v1/scans", status=202)
    assert out["msg"] == "scans 3"
    assert out["level"] == "WARNING" and out["logger"] == "dancu.test"
    assert out["ts"].endswith("+00:00") and "T" in out["ts"]
    assert out["route"] == "/v1/scans" and out["status"] == 202
    assert "request_id" not in out


def test_the_request_id_comes_from_the_context() -> None:
    token = REQUEST_ID.set("req-42")
    try:
        assert line()["request_id"] == "req-42"
    finally:
        REQUEST_ID.reset(token)
    assert "request_id" not in line()


@pytest.mark.parametrize(
    "key",
    ["authorization", "Authorization", "x-signature", "device_key", "token", "person_id", "dob"],
)
def test_secret_and_personal_extras_are_redacted(key: str) -> None:
    out = line(**{key: f"Bearer {TOKEN}"})
    assert out[key] == "[redacted]"
    assert TOKEN not in orjson.dumps(out).decode()


def test_an_authorization_header_inside_an_extra_is_redacted() -> None:
    out = line(headers={"Authorization": f"Bearer {TOKEN}", "accept": "application/json"})
    assert out["headers"] == {"Authorization": "[redacted]", "accept": "application/json"}


def test_id_numbers_tokens_and_signatures_are_masked_in_any_text() -> None:
    out = line(
        "lookup of %s by %s",
        CCCD,
        f"Bearer {TOKEN}",
        detail=f"person {CCCD} signed {SIGNATURE} with {TOKEN}",
        ids=[CCCD, {"via": CCCD}],
    )
    text = orjson.dumps(out).decode()
    for secret in (CCCD, TOKEN, SIGNATURE):
        assert secret not in text
    assert out["msg"] == "lookup of [id] by Bearer [redacted]"
    assert out["ids"] == ["[id]", {"via": "[id]"}]


def test_numbers_that_are_not_ids_are_kept() -> None:
    out = line("took %d ms for %d rows", 12, 1_234_567_890_123, count=12345)
    assert out["msg"] == "took 12 ms for 1234567890123 rows" and out["count"] == 12345


def test_a_traceback_is_kept_and_masked() -> None:
    out = line("failed", exc=True)
    assert "ValueError: no resident [id]" in out["exc"] and CCCD not in out["exc"]


def test_values_json_cannot_hold_become_text() -> None:
    out = line(obj=object(), raw=b"bytes " + CCCD.encode())
    assert out["obj"].startswith("<object object") and out["raw"] == "bytes [id]"


def test_configure_logging_writes_json_lines_once() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("httpx").level
    try:
        configure_logging("INFO")
        configure_logging("INFO")  # a second call adds no second handler
        handlers = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(handlers) == 1
        stream = io.StringIO()
        handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("dancu.x").info("ready", extra={"port": 8765})
        assert orjson.loads(stream.getvalue())["port"] == 8765
        # httpx logs whole URLs (person IDs in paths) at INFO: kept quiet
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(saved[2])
