"""Reading import files: CSV (UTF-8, optional BOM) or JSON Lines, row by row."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson


class TableError(ValueError):
    """The file as a whole cannot be read (wrong format, no header)."""


def read_table(path: Path) -> tuple[list[str], Iterator[dict[str, str | None]]]:
    """(header, rows) of a CSV or JSON Lines file. A bad JSON line becomes a row with the
    ``__error__`` key, so it is reported as invalid instead of stopping the import."""
    if not path.exists():
        raise TableError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl(path)
    if suffix in (".csv", ".txt", ""):
        return _csv(path)
    raise TableError(f"unsupported file type {suffix!r}: use .csv or .jsonl")


def _csv(path: Path) -> tuple[list[str], Iterator[dict[str, str | None]]]:
    handle = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the iterator
    try:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
    except UnicodeDecodeError as exc:
        handle.close()
        raise TableError(f"{path.name} is not UTF-8 text: {exc}") from exc
    if not header:
        handle.close()
        raise TableError(f"{path.name} has no header row")

    def rows() -> Iterator[dict[str, str | None]]:
        try:
            for row in reader:
                yield {k.strip() if k else "__extra__": v for k, v in row.items()}
        finally:
            handle.close()

    return header, rows()


def _jsonl(path: Path) -> tuple[list[str], Iterator[dict[str, str | None]]]:
    return _jsonl_handle(open(path, "rb"), path.name)


def _jsonl_handle(handle: BinaryIO, name: str) -> tuple[list[str], Iterator[dict[str, str | None]]]:
    first = None
    for line in handle:
        if line.strip():
            try:
                first = orjson.loads(line)
            except orjson.JSONDecodeError:
                first = None
            break
    handle.seek(0)
    header = list(first) if isinstance(first, dict) else []
    if not header:
        handle.close()
        raise TableError(f"{name}: the first line is not a JSON object")

    def rows() -> Iterator[dict[str, str | None]]:
        try:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield {"__error__": f"not valid JSON: {exc}"}
                    continue
                if not isinstance(obj, dict):
                    yield {"__error__": "line is not a JSON object"}
                    continue
                yield {str(k): None if v is None else str(v) for k, v in obj.items()}
        finally:
            handle.close()

    return header, rows()


def table_from_bytes(
    data: bytes, filename: str
) -> tuple[list[str], Iterator[dict[str, str | None]]]:
    """The same for an uploaded body (the API): JSON Lines if it starts with '{'."""
    if data.lstrip().startswith(b"{") or filename.endswith((".jsonl", ".ndjson")):
        return _jsonl_handle(io.BytesIO(data), filename)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(f"upload is not UTF-8 text: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise TableError("upload has no header row")
    return header, ({k.strip() if k else "__extra__": v for k, v in row.items()} for row in reader)
