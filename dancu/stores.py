"""The stores a CLI command opens for itself (when no running process owns them): one
place that builds and closes the Redis, ClickHouse and Kafka adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from infra.clickhouse import ClickHouse
from infra.kafka_io import KafkaHealthRecords, create_topics, make_producer
from infra.ledger import ImportLedger
from infra.redis_store import CheckpointDirectory, VisitIndex, make_redis
from infra.residents import ClickHouseRegistry, ResidentStore
from infra.secrets import pseudonym_key
from infra.settings import Settings
from registry.pseudonym import Pseudonymizer


@dataclass
class Stores:
    settings: Settings
    residents: ResidentStore
    ledger: ImportLedger
    places: CheckpointDirectory
    index: VisitIndex
    pseudonymize: Pseudonymizer
    clickhouse: ClickHouse | None = None
    analytics: ClickHouseRegistry | None = None
    health_records: KafkaHealthRecords | None = None


@asynccontextmanager
async def open_stores(
    settings: Settings, *, clickhouse: bool = False, kafka: bool = False
) -> AsyncIterator[Stores]:
    """Redis always; ClickHouse (migrated) and a Kafka producer when asked; all closed after."""
    async with AsyncExitStack() as stack:
        redis = make_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        pseudonymize = Pseudonymizer(pseudonym_key(settings))
        residents = ResidentStore(redis, settings.redis_prefix, pseudonymize)
        stack.callback(residents.close_sync)
        index = VisitIndex(redis, settings.redis_prefix, timedelta(days=settings.visit_window_days))
        stack.callback(index.close_sync)
        stores = Stores(
            settings=settings,
            residents=residents,
            ledger=ImportLedger(redis, settings.redis_prefix, settings.data_dir.resolve()),
            places=CheckpointDirectory(redis, settings.redis_prefix),
            index=index,
            pseudonymize=pseudonymize,
        )
        if clickhouse:
            ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
            stack.callback(ch.close)
            await asyncio.to_thread(ch.migrate)
            stores.clickhouse = ch
            stores.analytics = ClickHouseRegistry(ch)
        if kafka:
            await create_topics(settings)
            producer = make_producer(settings)
            await producer.start()
            stack.push_async_callback(producer.stop)
            stores.health_records = KafkaHealthRecords(producer, settings, pseudonymize)
        yield stores
