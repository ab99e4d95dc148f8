"""ClickHouse writes through Kafka: workers send rows, the store's owner writes them.

The embedded ClickHouse (chDB) allows one process per data path, and a worker must never
wait on an analytics insert. So a worker turns what it would insert into rows (already
pseudonymous, versioned by the worker's clock) and sends them, acknowledged by every
in-sync replica, to ``store-rows``; the sink (``dancu up --role store``: the chDB process,
or any number of them against a ClickHouse server) consumes that topic and inserts. Every
table written this way is a ReplacingMergeTree on the row's own key, so a replayed record
collapses and the arrival order of two records never matters.

One Kafka record is ``{"table": name, "columns": [...], "rows": [[...], ...]}`` (orjson,
datetimes as ISO 8601), at most ~1 MiB, with ``"replayed": true`` when the worker may have
sent these rows before (it was stopped between this send and its offset commit).

A table with insert-time views (``visits``, behind the dashboard's hourly counts) must not
receive a row twice, even though the table itself would collapse it: the view would count
it again. So of a record that may be a replay (one its worker marked, or one at or below
the sink's own replay mark in infra/replays.py: the sink stopped between an insert and
its commit), the sink writes only the rows ClickHouse does not hold yet. Every other
record is inserted as it comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

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
    # Tables with insert-time views: the column that names a row, which a replayed
    # record writes once only ("" for the others).
    counted_by: str = ""


TABLES = {
    t.name: t
    for t in (
        Table(
            "visits",
            tuple(VISIT_COLUMNS),
            frozenset({"t_in", "t_out", "recorded_at"}),
            counted_by="scan_id",
        ),
        Table("residents", tuple(ANALYTICS_COLUMNS), frozenset({"updated_at"})),
        Table("health_records", tuple(HEALTH_RECORD_COLUMNS), frozenset({"applied_at"})),
    )
}


class SinkRecordError(ValueError):
    """A ``store-rows`` record the sink cannot write; the message names the problem."""


class Decoded(NamedTuple):
    table: Table
    rows: list[list[object]]
    replayed: bool  # the sender may have sent these rows before


def encode(table: str, rows: Sequence[Sequence[object]], *, replayed: bool = False) -> list[bytes]:
    """``rows`` of ``table`` as records of at most ~1 MiB each."""
    columns = list(TABLES[table].columns)
    head = b'{"table":' + orjson.dumps(table) + b',"columns":' + orjson.dumps(columns)
    if replayed:
        head += b',"replayed":true'
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


def decode(value: bytes | None) -> Decoded:
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
    replayed = body.get("replayed", False)
    if not isinstance(replayed, bool):
        raise SinkRecordError("replayed must be true or false")
    return Decoded(table, rows, replayed)


class KafkaRows:
    """Rows to ``store-rows`` with the process's idempotent ``acks=all`` producer; a call
    returns once every record is acknowledged."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(
        self,
        table: str,
        rows: Sequence[Sequence[object]],
        key: str,
        *,
        replayed: bool = False,
        lane: int | None = None,
    ) -> None:
        await asyncio.gather(*await self.enqueue(table, rows, key, replayed=replayed, lane=lane))

    async def enqueue(
        self,
        table: str,
        rows: Sequence[Sequence[object]],
        key: str,
        *,
        replayed: bool = False,
        lane: int | None = None,
    ) -> list[asyncio.Future[object]]:
        """Hand the records to the producer; the futures resolve once each is
        acknowledged. ``lane``: the records of one lane go to one partition (the lane
        modulo the partitions), in order; without one, the key chooses."""
        if not rows:
            return []
        partition = None
        if lane is not None:
            partitions = sorted(await self.producer.partitions_for(self.topic))
            partition = partitions[lane % len(partitions)]
        return [
            await self.producer.send(self.topic, value, key=key.encode(), partition=partition)
            for value in encode(table, rows, replayed=replayed)
        ]


class KafkaVisitSink:
    """The visit sink port of a worker: visit rows to the store's owner through Kafka."""

    def __init__(self, rows: KafkaRows) -> None:
        self.rows = rows

    async def insert(
        self,
        visits: Sequence[Visit],
        places: dict[str, dict[str, str]],
        again: Collection[str] = frozenset(),
        lanes: Mapping[str, int] | None = None,
    ) -> None:
        """``again``: the scan IDs this worker may have sent before (marked for the sink);
        ``lanes``: each scan's partition on ``scans`` (see
        :class:`streams.scans.VisitSinkPort`). Every record is handed to the producer
        before any acknowledgement is awaited."""
        now = datetime.now(UTC)
        groups: dict[tuple[int | None, bool], list[Visit]] = {}
        for v in visits:
            lane = lanes.get(v.scan_id) if lanes else None
            groups.setdefault((lane, v.scan_id in again), []).append(v)
        futures: list[asyncio.Future[object]] = []
        for (lane, replayed), part in groups.items():
            rows = visit_rows(part, places, now)
            key = part[0].scan_id
            futures += await self.rows.enqueue("visits", rows, key, replayed=replayed, lane=lane)
        await asyncio.gather(*futures)


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

    async def written(self, table: Table, rows: Sequence[Sequence[object]]) -> set[str]:
        """The keys (``counted_by``) of ``rows`` that ClickHouse holds already."""
        if table.name != "visits":
            raise ValueError(f"no replay check for {table.name}")
        return await asyncio.to_thread(self.ch.written_scans, rows)
