"""Reading import files: CSV (UTF-8, optional BOM) or JSON Lines, row by row, from a path
or an uploaded stream, never holding the whole file. A row that cannot be read (bad JSON,
an oversized field, broken UTF-8) becomes a row with the ``__error__`` key, so it is
reported as invalid and the rows around it still count."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from registry.errors import quote

# No real field of any import kind comes near this; a longer one is a broken row.
MAX_FIELD = 10_000
MAX_LINE = 1 << 20
csv.field_size_limit(MAX_FIELD)

Rows = Iterator[dict[str, str | None]]


class TableError(ValueError):
    """The file as a whole cannot be read (wrong format, no header)."""


def read_table(path: Path) -> tuple[list[str], Rows]:
    """(header, rows) of a CSV or JSON Lines file."""
    if not path.exists():
        raise TableError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".json", ".csv", ".txt", ""):
        raise TableError(f"unsupported file type {suffix!r}: use .csv or .jsonl")
    return read_stream(open(path, "rb"), path.name)


def table_from_bytes(data: bytes, filename: str) -> tuple[list[str], Rows]:
    """The same for bytes in memory (tests, small bodies)."""
    return read_stream(io.BytesIO(data), filename)


def read_stream(handle: BinaryIO, name: str) -> tuple[list[str], Rows]:
    """(header, rows) of a seekable binary stream: JSON Lines if it starts with '{' or is
    named so, CSV otherwise. The rows iterator closes the stream when done."""
    head = handle.read(4096)
    handle.seek(0)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") or name.endswith((".jsonl", ".ndjson")):
        return _jsonl(handle, name)
    return _csv(handle, name)


def _too_long(row: dict[str, str | None]) -> str | None:
    for k, v in row.items():
        if v is not None and len(v) > MAX_FIELD:
            return f"{quote(k)}: longer than {MAX_FIELD:,} characters"
    return None


def _utf8(values: Iterable[object]) -> bool:
    """False when a value holds bytes that were not UTF-8 (decoded as surrogates)."""
    for v in values:
        if isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _csv(handle: BinaryIO, name: str) -> tuple[list[str], Rows]:
    # Undecodable bytes survive as surrogates, so one broken row is refused, not the file.
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.DictReader(text)
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        text.close()
        raise TableError(f"{name}: the header row cannot be read: {exc}") from exc
    if not header:
        text.close()
        raise TableError(f"{name} has no header row")
    if not _utf8(header):
        text.close()
        raise TableError(f"{name} is not UTF-8 text (the header row)")

    def rows() -> Rows:
        try:
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield {"__error__": f"line {reader.line_num}: {exc}"}
                    continue
                clean = {k.strip() if k else "__extra__": v for k, v in row.items()}
                extra = clean.get("__extra__")
                if isinstance(extra, list):
                    clean["__extra__"] = ",".join(extra)
                problem = _too_long(clean)
                if problem is None and not _utf8(clean.values()):
                    problem = f"line {reader.line_num}: not UTF-8 text"
                yield {"__error__": problem} if problem else clean
        finally:
            text.close()

    return header, rows()


def _lines(handle: BinaryIO) -> Iterator[bytes]:
    """Lines of at most MAX_LINE bytes; a longer one is yielded cut (and then refused)."""
    while True:
        line = handle.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while True:  # skip the rest of the oversized line
                rest = handle.readline(MAX_LINE)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line


def _jsonl(handle: BinaryIO, name: str) -> tuple[list[str], Rows]:
    first = None
    for line in _lines(handle):
        if line.strip():
            try:
                first = orjson.loads(line.removeprefix(codecs.BOM_UTF8))
            except orjson.JSONDecodeError:
                first = None
            break
    handle.seek(0)
    header = [str(k) for k in first] if isinstance(first, dict) else []
    if not header:
        handle.close()
        raise TableError(f"{name}: the first line is not a JSON object")

    def rows() -> Rows:
        try:
            for line in _lines(handle):
                line = line.removeprefix(codecs.BOM_UTF8)
                if not line.strip():
                    continue
                if len(line) > MAX_LINE:
                    yield {"__error__": f"line longer than {MAX_LINE:,} bytes"}
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield {"__error__": f"not valid JSON: {exc}"}
                    continue
                if not isinstance(obj, dict):
                    yield {"__error__": "line is not a JSON object"}
                    continue
                if any(isinstance(v, dict | list) for v in obj.values()):
                    yield {"__error__": "a value is an object or a list, not a plain value"}
                    continue
                row = {str(k): None if v is None else str(v) for k, v in obj.items()}
                problem = _too_long(row)
                yield {"__error__": problem} if problem else row
        finally:
            handle.close()

    return header, rows()
