"""The Faust app: topics and the thin ``record_scans`` agent.

Batches come from ``stream.take_events`` (acked only after the body finishes), so a
crash replays at most the unfinished batch, which the recorder treats idempotently.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaProducer
from faust.transport.drivers.aiokafka import Producer as FaustKafkaProducer
from faust.types import ProducerT
from pydantic import ValidationError

from infra import topics
from infra.clients import ClickHouseExposureSink, Clients
from infra.replays import ReplayMarks
from infra.settings import Settings
from infra.sink import (
    ClickHouseRows,
    KafkaResidentSink,
    KafkaRows,
    KafkaVisitSink,
    SinkRecordError,
    Table,
)
from infra.sink import decode as decode_rows
from streams.alerts import AlertRaiser
from streams.cases import add_case_agent
from streams.guard import Guard
from streams.rows import RowWriter
from streams.scans import RawRecord, ScanRecorder, bounded
from streams.statuses import StatusUpdater
from streams.tracer import Tracer
from tracing.events import (
    SHORT_TEXT,
    DeadLetter,
    ExposureFlagged,
    ReportStatusChanged,
    validation_errors,
)
from tracing.reports import REPORT_RETENTION, late_record
from tracing.visits import Visit

log = logging.getLogger(__name__)


class FaustDeadLetters:
    """The dead-letter port on a Faust topic."""

    def __init__(self, topic: faust.TopicT) -> None:
        self.topic = topic

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        futures = [await self.topic.send(value=d.model_dump_json().encode()) for d in letters]
        for f in futures:
            await f
        log.warning("%d record(s) sent to the dead-letter topic", len(letters))


def _flag_json(e: ExposureFlagged) -> bytes:
    """The record of a flag (the model's fields; orjson writes datetimes as ISO 8601)."""
    return orjson.dumps({name: getattr(e, name) for name in ExposureFlagged.model_fields})


def _flag_row(raw: bytes | None) -> ExposureFlagged:
    """A flag read back from ``exposures``: parsed with orjson, checked field by field
    only when the fast path finds something off (then pydantic names the problem)."""
    body = orjson.loads(raw or b"")
    if not isinstance(body, dict) or set(body) != set(ExposureFlagged.model_fields):
        return ExposureFlagged.model_validate_json(raw or b"")
    plain = (
        body["tier"] in ("F1", "F2")
        and body["reason"] in ("co-location", "household")
        and type(body["version"]) is int
        and 0 <= body["version"] < 2**63  # as the model
        and type(body["withdrawn"]) is bool
        and type(body["overlap_minutes"]) in (int, float)
        and body["overlap_minutes"] >= 0
        and all(type(body[k]) is str and len(body[k]) <= SHORT_TEXT for k in _FLAG_TEXT)
        and (body["checkpoint_id"] is None or type(body["checkpoint_id"]) is str)
        and len(body["checkpoint_id"] or "") <= SHORT_TEXT
    )
    try:
        if plain:
            for name in ("overlap_start", "overlap_end", "flagged_at"):
                stamp = datetime.fromisoformat(body[name])
                if stamp.tzinfo is None or not 2000 <= stamp.year <= 2200:  # as the model
                    raise ValueError(name)
                body[name] = stamp
            return ExposureFlagged.model_construct(**body)
    except (TypeError, ValueError):
        pass
    return ExposureFlagged.model_validate_json(raw or b"")


_FLAG_TEXT = ("exposure_id", "report_id", "person_key", "via_key", "district", "rule_version")


class KafkaTracingOut:
    """The tracer's outputs, sent with the process's idempotent ``acks=all`` producer:
    exposures keyed by person, report status keyed by report, late visits back to their
    report on ``f0-reports``. Each call returns once every record is acknowledged."""

    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self.producer = producer
        self.exposures_topic = settings.topic(topics.EXPOSURES)
        self.status_topic = settings.topic(topics.REPORT_STATUS)
        self.reports_topic = settings.topic(topics.F0_REPORTS)

    async def _all(self, sends: list[tuple[str, bytes, bytes]]) -> None:
        futures = [await self.producer.send(topic, value, key=key) for topic, key, value in sends]
        await asyncio.gather(*futures)

    async def exposures(self, events: Sequence[ExposureFlagged]) -> None:
        await self._all(
            [(self.exposures_topic, e.person_key.encode(), _flag_json(e)) for e in events]
        )

    async def status(self, event: ReportStatusChanged) -> None:
        await self._all(
            [(self.status_topic, event.report_id.encode(), event.model_dump_json().encode())]
        )

    async def late(self, items: Sequence[tuple[str, Visit]]) -> None:
        await self._all([(self.reports_topic, r.encode(), late_record(r, v)) for r, v in items])


def _abandon(step: str) -> None:
    """Stopped mid-batch while waiting on a store: exit at once, uncommitted, so the batch
    is replayed on restart instead of acknowledged undone."""
    log.critical("stopped while %s was still failing: exiting uncommitted", step)
    logging.shutdown()
    os._exit(75)


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


class _IdempotentProducer(FaustKafkaProducer):
    """Faust's aiokafka producer asks for idempotence only inside transactions
    (``processing_guarantee="exactly_once"``); ours always does, with ``acks=all``, like
    ``infra.kafka_io.make_producer``: a send retried across a leader change (a broker of
    the cluster lost) is never written twice."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _IdempotentApp(faust.App):
    """A Faust app whose producer (dead letters, Faust's own topics) is idempotent."""

    def _new_producer(self) -> ProducerT:
        return _IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


def _faust_app(settings: Settings, app_id: str) -> faust.App:
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    return _IdempotentApp(
        app_id,
        broker=broker_urls(settings.kafka_bootstrap),
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        datadir=str(settings.data_dir / "faust" / app_id),  # not the working directory
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        producer_acks=-1,  # dead letters are durable on every in-sync replica
        consumer_auto_offset_reset="earliest",
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.batch_size,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=3.0,
        stream_buffer_maxsize=max(4 * settings.batch_size, 8192),
        consumer_max_fetch_size=8 << 20,
        producer_max_request_size=8 << 20,
        logging_config={"version": 1, "disable_existing_loggers": False},
        loghandlers=[],
    )


def _guard(app: faust.App, settings: Settings, clients: Clients) -> Guard:
    dead_topic = app.topic(settings.topic(topics.DEAD_LETTERS), value_serializer="raw")
    return Guard(FaustDeadLetters(dead_topic), clients.health, abandon=_abandon)


def make_app(settings: Settings, clients: Clients) -> faust.App:
    """The worker: validation, Redis state, tracing and alerts. Stateless (its state is in
    Redis, its position in Kafka), so any number share the topics' partitions; it never
    waits on ClickHouse: what it would insert goes to ``store-rows`` (see infra.sink)."""
    app = _faust_app(settings, settings.app_id)
    rows = KafkaRows(clients.producer, settings.topic(topics.STORE_ROWS))
    scans_topic = app.topic(
        settings.topic(topics.SCANS), value_serializer="raw", key_serializer="raw"
    )
    guard = _guard(app, settings, clients)

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), value_serializer="raw", key_serializer="raw")

    reports_topic = raw_topic(topics.F0_REPORTS)
    exposures_topic = raw_topic(topics.EXPOSURES)
    tracer = Tracer(
        store=clients.tracing,
        candidates=clients.candidates,
        people=clients.residents,
        out=KafkaTracingOut(clients.producer, settings),
        guard=guard,
        pseudonymize=clients.pseudonymize,
        rulebook=clients.exposure_rules,
        topic=reports_topic.get_topic_name(),
    )
    rulebook = clients.exposure_rules
    recorder = ScanRecorder(
        index=clients.index,
        sink=KafkaVisitSink(rows),
        places=clients.checkpoints,
        guard=guard,
        pseudonymize=clients.pseudonymize,
        topic=scans_topic.get_topic_name(),
        dwell=lambda ts, kind: rulebook.for_(ts.date()).dwell(kind),
        join=tracer.join,
        marks=ReplayMarks(
            clients.redis, settings.redis_prefix, settings.app_id, scans_topic.get_topic_name()
        ),
        # No age check against the worker's clock: the API refused stale scans when they
        # arrived, and a replay under lag must give the same answers as live (event time).
        max_age=None,
    )

    @app.agent(scans_topic, name="record_scans")
    async def record_scans(stream: faust.StreamT) -> None:
        # take_events lives on faust.Stream; the StreamT interface does not declare it.
        batches = stream.take_events(  # type: ignore[attr-defined]
            settings.batch_size, within=settings.batch_seconds
        )
        async for events in batches:
            batch = [RawRecord(e.value, e.message.partition, e.message.offset) for e in events]
            for part in bounded(batch, settings.batch_max_bytes):
                await recorder.record(part)

    health_topic = app.topic(
        settings.topic(topics.HEALTH_RECORDS), value_serializer="raw", key_serializer="raw"
    )
    updater = StatusUpdater(
        residents=clients.residents,
        sink=KafkaResidentSink(rows, clients.pseudonymize),
        applied=clients.ledger,
        guard=guard,
        rules=clients.rules,
        topic=health_topic.get_topic_name(),
    )

    @app.agent(health_topic, name="update_statuses")
    async def update_statuses(stream: faust.StreamT) -> None:
        batches = stream.take_events(  # type: ignore[attr-defined]  # see record_scans
            200, within=settings.batch_seconds
        )
        async for events in batches:
            batch = [RawRecord(e.value, e.message.partition, e.message.offset) for e in events]
            for part in bounded(batch, settings.batch_max_bytes):
                await updater.apply(part)

    @app.agent(reports_topic, name="trace_exposures")
    async def trace_exposures(stream: faust.StreamT) -> None:
        batches = stream.take_events(  # type: ignore[attr-defined]  # see record_scans
            100, within=0.01
        )
        async for events in batches:
            await tracer.handle(
                [RawRecord(e.value, e.message.partition, e.message.offset) for e in events]
            )

    exposures_name = exposures_topic.get_topic_name()

    status_topic = raw_topic(topics.REPORT_STATUS)
    raiser = AlertRaiser(
        alerts=clients.alerts,
        reports=clients.tracing,
        places=clients.checkpoints,
        guard=guard,
        exposures_topic=exposures_name,
        status_topic=status_topic.get_topic_name(),
    )

    @app.agent(exposures_topic, name="raise_alerts")
    async def raise_alerts(stream: faust.StreamT) -> None:
        """Flags into officials' alerts (a second reader of ``exposures``, beside the
        ClickHouse sink, so an alert never waits on an analytics insert)."""
        batches = stream.take_events(  # type: ignore[attr-defined]  # see record_scans
            500, within=0.02
        )
        async for events in batches:
            await raiser.on_exposures(
                [RawRecord(e.value, e.message.partition, e.message.offset) for e in events]
            )

    @app.agent(status_topic, name="raise_venue_alerts")
    async def raise_venue_alerts(stream: faust.StreamT) -> None:
        """Finished and withdrawn reports into owners' venue alerts."""
        batches = stream.take_events(  # type: ignore[attr-defined]  # see record_scans
            100, within=0.05
        )
        async for events in batches:
            await raiser.on_statuses(
                [RawRecord(e.value, e.message.partition, e.message.offset) for e in events]
            )

    @app.timer(interval=600.0)
    async def prune_intervals() -> None:
        try:
            await clients.tracing.prune()
            expired = await tracer.expire(REPORT_RETENTION)
            if expired:
                log.info("forgot %d report(s) past the retention", expired)
        except Exception as exc:  # a store away: the next round tries again
            log.warning("pruning expired tracing state failed: %s", exc)

    @app.timer(interval=3600.0)
    async def forget_old_scans() -> None:
        """Trim dedup marks older than the tracing window (late scans older are refused)."""
        window = timedelta(days=settings.visit_window_days)
        try:
            await clients.index.forget_before((datetime.now(UTC) - window).timestamp())
        except Exception as exc:  # a store away: the next hour tries again
            log.warning("trimming old dedup marks failed: %s", exc)

    return app


def make_sink_app(settings: Settings, clients: Clients) -> faust.App:
    """The store's owner: ``store-rows``, ``exposures`` and ``report-status`` into
    ClickHouse, in a consumer group of its own (``<app id>-sink``). With the embedded chDB
    this is one process; against a ClickHouse server any number share the partitions.
    Every insert is idempotent (ReplacingMergeTree on the row's own key)."""
    app = _faust_app(settings, settings.sink_group)
    guard = _guard(app, settings, clients)

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), value_serializer="raw", key_serializer="raw")

    rows_topic = raw_topic(topics.STORE_ROWS)
    rows_name = rows_topic.get_topic_name()
    marks = ReplayMarks(clients.redis, settings.redis_prefix, settings.sink_group, rows_name)

    def row_letter(item: tuple[RawRecord, Table, list[object]], reason: str) -> DeadLetter:
        rec, table, row = item
        return DeadLetter(
            topic=rows_name,
            reason=f"{table.name}: {reason}",
            payload=orjson.dumps(row, default=str)[:10_000].decode("utf-8", "replace"),
            partition=rec.partition,
            offset=rec.offset,
        )

    rows_writer = RowWriter(ClickHouseRows(clients.clickhouse), guard, marks, row_letter)

    @app.agent(rows_topic, name="sink_rows")
    async def sink_rows(stream: faust.StreamT) -> None:
        """Workers' rows into their ClickHouse tables, one insert per table per batch; a
        row ClickHouse refuses is isolated and dead-lettered (see Guard.write_each)."""
        batches = stream.take_events(  # type: ignore[attr-defined]  # see record_scans
            200, within=settings.batch_seconds
        )
        async for events in batches:
            batch = [RawRecord(e.value, e.message.partition, e.message.offset) for e in events]
            # Bounded in bytes as well (records are up to 1 MiB): no insert, and no stretch
            # of decoding on the loop, grows with the batch.
            for part in bounded(batch, settings.batch_max_bytes):
                await write_rows(part)

    async def write_rows(records: Sequence[RawRecord]) -> None:
        by_table: dict[str, list[tuple[RawRecord, Table, list[object]]]] = {}
        replayed: set[int] = set()  # ids of the records their worker marked as resent
        dead = []
        for rec in records:
            try:
                table, found, again = decode_rows(rec.value)
            except SinkRecordError as exc:
                dead.append(
                    DeadLetter(
                        topic=rows_name,
                        reason=str(exc),
                        payload=(rec.value or b"")[:10_000].decode("utf-8", "replace"),
                        partition=rec.partition,
                        offset=rec.offset,
                    )
                )
                continue
            by_table.setdefault(table.name, []).extend((rec, table, r) for r in found)
            if again:
                replayed.add(id(rec))
        await guard.bury(dead)
        for items in by_table.values():
            await rows_writer.write(items, replayed)

    exposures_topic = raw_topic(topics.EXPOSURES)
    exposures_name = exposures_topic.get_topic_name()
    exposure_sink = ClickHouseExposureSink(clients.clickhouse)

    def exposure_letter(item: tuple[RawRecord, object], reason: str) -> DeadLetter:
        rec = item[0]
        return DeadLetter(
            topic=exposures_name,
            reason=reason,
            payload=(rec.value or b"")[:10_000].decode("utf-8", "replace"),
            partition=rec.partition,
            offset=rec.offset,
        )

    @app.agent(exposures_topic, name="store_exposures")
    async def store_exposures(stream: faust.StreamT) -> None:
        """The exposures topic into ClickHouse (idempotent: one row per exposure id and
        version survives)."""
        batches = stream.take_events(  # type: ignore[attr-defined]  # see record_scans
            1000, within=settings.batch_seconds
        )
        async for events in batches:
            good: list[tuple[RawRecord, ExposureFlagged]] = []
            dead = []
            for e in events:
                rec = RawRecord(e.value, e.message.partition, e.message.offset)
                try:
                    good.append((rec, _flag_row(rec.value)))
                except ValidationError as exc:
                    dead.append(exposure_letter((rec, None), "; ".join(validation_errors(exc))))
                except orjson.JSONDecodeError as exc:
                    dead.append(exposure_letter((rec, None), f"not valid JSON: {exc}"))
            await guard.bury(dead)
            await guard.write_each(
                "ClickHouse exposures insert",
                good,
                lambda items: exposure_sink.insert([x for _, x in items]),
                exposure_letter,
            )

    add_case_agent(app, settings, clients, guard)  # report-status → f0_cases (dashboard)
    return app
