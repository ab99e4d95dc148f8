"""The Faust app: topics and the thin ``record_scans`` agent.

Batches come from ``stream.take_events`` (acked only after the body finishes), so a
crash replays at most the unfinished batch, which the recorder treats idempotently.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import faust

from infra import topics
from infra.clients import ClickHouseResidentSink, ClickHouseVisitSink, Clients
from infra.settings import Settings
from streams.guard import Guard
from streams.scans import RawRecord, ScanRecorder, bounded
from streams.statuses import StatusUpdater
from tracing.events import DeadLetter

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


def _abandon(step: str) -> None:
    """Stopped mid-batch while waiting on a store: exit at once, uncommitted, so the batch
    is replayed on restart instead of acknowledged undone."""
    log.critical("stopped while %s was still failing: exiting uncommitted", step)
    logging.shutdown()
    os._exit(75)


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


def make_app(settings: Settings, clients: Clients) -> faust.App:
    """Build the Faust app and its agents over already-built clients."""
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.kafka_bootstrap),
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        producer_acks=-1,  # dead letters are durable on every in-sync replica
        consumer_auto_offset_reset="earliest",
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.batch_size,
        stream_buffer_maxsize=max(4 * settings.batch_size, 8192),
        consumer_max_fetch_size=8 << 20,
        producer_max_request_size=8 << 20,
        logging_config={"version": 1, "disable_existing_loggers": False},
        loghandlers=[],
    )
    scans_topic = app.topic(
        settings.topic(topics.SCANS), value_serializer="raw", key_serializer="raw"
    )
    dead_topic = app.topic(settings.topic(topics.DEAD_LETTERS), value_serializer="raw")
    guard = Guard(FaustDeadLetters(dead_topic), clients.health, abandon=_abandon)
    recorder = ScanRecorder(
        index=clients.index,
        sink=ClickHouseVisitSink(clients.clickhouse),
        places=clients.checkpoints,
        guard=guard,
        pseudonymize=clients.pseudonymize,
        topic=scans_topic.get_topic_name(),
        dwell=timedelta(minutes=settings.dwell_minutes),
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
        sink=ClickHouseResidentSink(clients.clickhouse, clients.pseudonymize),
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

    @app.timer(interval=3600.0)
    async def forget_old_scans() -> None:
        """Trim dedup marks older than the tracing window (late scans older are refused)."""
        window = timedelta(days=settings.visit_window_days)
        try:
            await clients.index.forget_before((datetime.now(UTC) - window).timestamp())
        except Exception as exc:  # a store away: the next hour tries again
            log.warning("trimming old dedup marks failed: %s", exc)

    return app
