"""Clients built once per process and injected (STYLE.md §5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from infra.alerts import AlertStore
from infra.audit import AuditDrain
from infra.clickhouse import ClickHouse, visit_rows
from infra.credentials import Credentials
from infra.faults import AgentHealth
from infra.kafka_io import KafkaHealthRecords, KafkaLag, make_producer
from infra.ledger import ImportLedger
from infra.redis_store import CheckpointDirectory, VisitIndex, make_redis
from infra.residents import ClickHouseRegistry, ResidentStore
from infra.secrets import pseudonym_key
from infra.settings import Settings
from infra.staff import StaffStore
from infra.tracing_store import ClickHouseCandidates, TieredCandidates, TracingStore
from infra.webhooks import WebhookStore
from registry.cards import RuleBook, load_rulebook
from registry.pseudonym import Pseudonymizer
from tracing.events import ExposureFlagged
from tracing.rules import ExposureRuleBook, load_exposure_rules
from tracing.visits import Visit

EXPOSURE_COLUMNS = [
    "exposure_id",
    "report_id",
    "person_key",
    "tier",
    "via_key",
    "reason",
    "checkpoint_id",
    "district",
    "overlap_start",
    "overlap_end",
    "overlap_minutes",
    "rule_version",
    "flagged_at",
    "withdrawn",
    "version",
]


class ClickHouseExposureSink:
    """The ``exposures`` table (pseudonymous), fed from the ``exposures`` topic."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.ch = clickhouse

    def _insert(self, events: Sequence[ExposureFlagged]) -> None:
        rows = [
            [
                e.exposure_id,
                e.report_id,
                e.person_key,
                e.tier,
                e.via_key,
                e.reason,
                e.checkpoint_id or "",
                e.district,
                e.overlap_start,
                e.overlap_end,
                e.overlap_minutes,
                e.rule_version,
                e.flagged_at,
                int(e.withdrawn),
                e.version,
            ]
            for e in events
        ]
        ch = self.ch
        ch.call(lambda c: c.insert(f"{ch.db}.exposures", rows, column_names=EXPOSURE_COLUMNS))

    async def insert(self, events: Sequence[ExposureFlagged]) -> None:
        if events:
            await asyncio.to_thread(self._insert, events)


class ClickHouseVisitSink:
    """The visit sink port on ClickHouse, off the event loop."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.clickhouse = clickhouse

    async def insert(
        self,
        visits: Sequence[Visit],
        places: dict[str, dict[str, str]],
        again: Collection[str] = frozenset(),
        lanes: Mapping[str, int] | None = None,
    ) -> None:
        await asyncio.to_thread(self._insert, visits, places, again)

    def _insert(
        self, visits: Sequence[Visit], places: dict[str, dict[str, str]], again: Collection[str]
    ) -> None:
        if again:  # possibly written before this process's restart: only what is missing
            repeat = [v for v in visits if v.scan_id in again]
            written = self.clickhouse.written_scans(visit_rows(repeat, places, datetime.now(UTC)))
            visits = [v for v in visits if v.scan_id not in written]
        self.clickhouse.insert_visits(visits, places)


@dataclass
class Clients:
    settings: Settings
    redis: Redis
    clickhouse: ClickHouse
    producer: AIOKafkaProducer
    lag: KafkaLag
    index: VisitIndex
    checkpoints: CheckpointDirectory
    pseudonymize: Pseudonymizer
    residents: ResidentStore
    ledger: ImportLedger
    health_records: KafkaHealthRecords
    analytics: ClickHouseRegistry
    rules: RuleBook
    health: AgentHealth
    audit: AuditDrain
    credentials: Credentials
    staff: StaffStore
    tracing: TracingStore
    candidates: TieredCandidates
    exposure_rules: ExposureRuleBook
    alerts: AlertStore
    webhooks: WebhookStore
    owns_store: bool = True  # False in an API process that forwards analytics to the store

    @classmethod
    async def open(
        cls, settings: Settings, clickhouse: ClickHouse | None = None, *, owns_store: bool = True
    ) -> Clients:
        redis = make_redis(settings.redis_url)
        # The client connects on first use: an API process that does not own the store
        # never opens it (chDB allows one process per data path).
        ch = clickhouse or ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
        if owns_store:
            await asyncio.to_thread(ch.migrate)
        producer = make_producer(settings)
        await producer.start()
        lag = KafkaLag(settings)
        await lag.start()
        pseudonymize = Pseudonymizer(pseudonym_key(settings))
        window = timedelta(days=settings.visit_window_days)
        index = VisitIndex(redis, settings.redis_prefix, window)
        return cls(
            settings=settings,
            redis=redis,
            clickhouse=ch,
            producer=producer,
            lag=lag,
            index=index,
            checkpoints=CheckpointDirectory(redis, settings.redis_prefix),
            pseudonymize=pseudonymize,
            residents=ResidentStore(redis, settings.redis_prefix, pseudonymize),
            ledger=ImportLedger(redis, settings.redis_prefix, settings.data_dir.resolve()),
            health_records=KafkaHealthRecords(producer, settings, pseudonymize),
            analytics=ClickHouseRegistry(ch),
            rules=load_rulebook(),
            health=AgentHealth(),
            audit=AuditDrain(redis, settings.redis_prefix, ch),
            credentials=Credentials(redis, settings.redis_prefix),
            staff=StaffStore(redis, settings.redis_prefix),
            tracing=TracingStore(redis, settings.redis_prefix, window),
            # Beyond the hot window the visits are in ClickHouse: a worker reads them from a
            # ClickHouse server; the embedded chDB is the store's process's alone, so there
            # a worker traces from the hot window only (and says so, TieredCandidates).
            candidates=TieredCandidates(
                index,
                ClickHouseCandidates(ch)
                if owns_store or not settings.embedded_clickhouse
                else None,
                window,
            ),
            exposure_rules=load_exposure_rules(settings.exposure_rules_file, settings.hold_above),
            alerts=AlertStore(redis, settings.redis_prefix, settings.redis_url),
            webhooks=WebhookStore(redis, settings.redis_prefix),
            owns_store=owns_store,
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.producer.stop()
        with contextlib.suppress(Exception):
            await self.lag.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        self.residents.close_sync()
        self.index.close_sync()
