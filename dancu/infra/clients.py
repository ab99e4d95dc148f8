"""Clients built once per process and injected (STYLE.md §5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from dancu.infra.clickhouse import ClickHouse
from dancu.infra.kafka_io import KafkaLag, make_producer
from dancu.infra.redis_store import CheckpointDirectory, VisitIndex, make_redis
from dancu.infra.settings import Settings
from dancu.registry.pseudonym import Pseudonymizer
from dancu.tracing.visits import Visit


class ClickHouseVisitSink:
    """The visit sink port on ClickHouse, off the event loop."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.clickhouse = clickhouse

    async def insert(self, visits: Sequence[Visit], places: dict[str, dict[str, str]]) -> None:
        await asyncio.to_thread(self.clickhouse.insert_visits, visits, places)


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

    @classmethod
    async def open(cls, settings: Settings, clickhouse: ClickHouse | None = None) -> Clients:
        redis = make_redis(settings.redis_url)
        ch = clickhouse or ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
        await asyncio.to_thread(ch.migrate)
        producer = make_producer(settings)
        await producer.start()
        lag = KafkaLag(settings)
        await lag.start()
        return cls(
            settings=settings,
            redis=redis,
            clickhouse=ch,
            producer=producer,
            lag=lag,
            index=VisitIndex(
                redis, settings.redis_prefix, timedelta(days=settings.visit_window_days)
            ),
            checkpoints=CheckpointDirectory(redis, settings.redis_prefix),
            pseudonymize=Pseudonymizer(settings.pseudonym_secret.get_secret_value().encode()),
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.producer.stop()
        with contextlib.suppress(Exception):
            await self.lag.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
