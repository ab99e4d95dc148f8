"""ClickHouse writes through Kafka: workers send rows, the store's owner writes them.

The embedded ClickHouse (chDB) allows one process per data path, and a worker must never
wait on an analytics insert. So a worker turns what it would insert into rows (already
pseudonymous, versioned by the worker's clock) and sends them, acknowledged by every
in-sync replica, to ``store-rows``; the sink (``dancu up --role store``: the chDB process,
or any number of them against a ClickHouse server) consumes that topic and inserts. Every
table written this way is a ReplacingMergeTree on the row's own key, so a replayed record
collapses and the arrival order of two records never matters.

One Kafka record is ``{"table": name, "columns": [...], "rows": [[...], ...]}`` (orjson,
datetimes as ISO 8601), at most ~1 MiB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from infra.clickhouse import VISIT_COLUMNS, ClickHouse, visit_rows
from infra.residents import HEALTH_RECORD_COLUMNS, health_record_row
from registry.residents import ANALYTICS_COLUMNS, analytics_row
from tracing.events import HealthRecordImported
from tracing.visits import Visit

RECORD_BYTES = 1 << 20


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    datetimes: frozenset[str]  # columns sent as ISO 8601 text, parsed back by the sink


TABLES = {
    t.name: t
    for t in (
        Table("visits", tuple(VISIT_COLUMNS), frozenset({"t_in", "t_out", "recorded_at"})),
        Table("residents", tuple(ANALYTICS_COLUMNS), frozenset({"updated_at"})),
        Table("health_records", tuple(HEALTH_RECORD_COLUMNS), frozenset({"applied_at"})),
    )
}


class SinkRecordError(ValueError):
    """A ``store-rows`` record the sink cannot write; the message names the problem."""


def encode(table: str, rows: Sequence[Sequence[object]]) -> list[bytes]:
    """``rows`` of ``table`` as records of at most ~1 MiB each."""
    columns = list(TABLES[table].columns)
    head = b'{"table":' + orjson.dumps(table) + b',"columns":' + orjson.dumps(columns)
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for row in rows:
        item = orjson.dumps(row)
        if part and size + len(item) > RECORD_BYTES:
            out.append(head + b',"rows":[' + b",".join(part) + b"]}")
            part, size = [], 0
        part.append(item)
        size += len(item) + 1
    if part:
        out.append(head + b',"rows":[' + b",".join(part) + b"]}")
    return out


def decode(value: bytes | None) -> tuple[Table, list[list[object]]]:
    """A record back into its table and typed rows, or :class:`SinkRecordError`."""
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise SinkRecordError(f"not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SinkRecordError("a store-rows record is a JSON object")
    table = TABLES.get(str(body.get("table")))
    if table is None:
        raise SinkRecordError(f"unknown table {str(body.get('table'))[:40]!r}")
    if body.get("columns") != list(table.columns):
        raise SinkRecordError(f"columns of {table.name} do not match its schema")
    rows = body.get("rows")
    if not isinstance(rows, list):
        raise SinkRecordError("rows must be a list")
    width = len(table.columns)
    stamps = [i for i, c in enumerate(table.columns) if c in table.datetimes]
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            raise SinkRecordError(f"a row of {table.name} must have {width} values")
        for i in stamps:
            try:
                stamp = datetime.fromisoformat(row[i])
            except (TypeError, ValueError):
                raise SinkRecordError(
                    f"{table.columns[i]} is not an ISO 8601 time: {str(row[i])[:40]!r}"
                ) from None
            if not 2000 <= stamp.year <= 2200:  # a version column: a far future wins forever
                raise SinkRecordError(f"{table.columns[i]} is out of range: {row[i][:40]!r}")
            row[i] = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return table, rows


class KafkaRows:
    """Rows to ``store-rows`` with the process's idempotent ``acks=all`` producer; a call
    returns once every record is acknowledged."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, table: str, rows: Sequence[Sequence[object]], key: str) -> None:
        if not rows:
            return
        futures = [
            await self.producer.send(self.topic, value, key=key.encode())
            for value in encode(table, rows)
        ]
        await asyncio.gather(*futures)


class KafkaVisitSink:
    """The visit sink port of a worker: visit rows to the store's owner through Kafka."""

    def __init__(self, rows: KafkaRows) -> None:
        self.rows = rows

    async def insert(self, visits: Sequence[Visit], places: dict[str, dict[str, str]]) -> None:
        if visits:
            await self.rows.send(
                "visits", visit_rows(visits, places, datetime.now(UTC)), visits[0].scan_id
            )


class KafkaResidentSink:
    """The resident sink port of a worker: resident and health-record rows (pseudonymous)
    to the store's owner through Kafka."""

    def __init__(self, rows: KafkaRows, pseudonymize: Callable[[str], str]) -> None:
        self.rows = rows
        self.pseudonymize = pseudonymize

    async def upsert(
        self, residents: Sequence[dict[str, str]], facts: Sequence[HealthRecordImported]
    ) -> None:
        now = datetime.now(UTC)
        history = [health_record_row(e, self.pseudonymize, now) for e in facts]
        if history:
            await self.rows.send("health_records", history, str(history[0][0]))
        rows = [analytics_row(r, self.pseudonymize, r.get("source", ""), now) for r in residents]
        if rows:
            await self.rows.send("residents", rows, str(rows[0][0]))


class ClickHouseRows:
    """The sink's side: typed rows into their table (off the event loop)."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.ch = clickhouse

    def _insert(self, table: Table, rows: Sequence[Sequence[object]]) -> None:
        ch = self.ch
        ch.call(
            lambda c: c.insert(
                f"{ch.db}.{table.name}", list(rows), column_names=list(table.columns)
            )
        )

    async def insert(self, table: Table, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            await asyncio.to_thread(self._insert, table, rows)
