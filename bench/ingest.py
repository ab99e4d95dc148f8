"""Ingest benchmark: N scans produced to Kafka and processed end to end by the running Faust
worker (record_scans → Redis indexes + ClickHouse), timed from the first produce to the
last scan recorded; against a raw aiokafka consume loop over the same topic in the same run.

    python bench/ingest.py [--scans 200000] [--batch 100]

--batch is the number of scans per Kafka record (a device batch, as POST /v1/scans
produces it); --batch 1 measures one scan per record.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra import services
from infra.clients import Clients
from infra.kafka_io import create_topics, make_producer
from infra.settings import Settings
from streams.app import make_app
from tests.integration.helpers import isolated_settings, make_scans


async def produce(settings: Settings, scans: list[dict[str, object]], batch: int) -> float:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    topic = settings.topic("scans")
    t0 = time.perf_counter()
    futures = []
    for i in range(0, len(scans), batch):
        chunk = scans[i : i + batch]
        value = orjson.dumps(chunk if batch > 1 else chunk[0])
        futures.append(
            await producer.send(topic, value, key=str(chunk[0]["checkpoint_id"]).encode())
        )
    await asyncio.gather(*futures)
    await producer.stop()
    return time.perf_counter() - t0


async def raw_consume(settings: Settings, records: int) -> float:
    """The baseline: a bare aiokafka loop reading every record of the topic once."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    topic = settings.topic("scans")
    parts = await consumer._client.fetch_all_metadata()
    tps = [TopicPartition(topic, p) for p in parts.partitions_for_topic(topic) or ()]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    n, t0 = 0, time.perf_counter()
    while n < records:
        got = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        for msgs in got.values():
            for m in msgs:
                orjson.loads(m.value)  # the least any consumer does to see its scans
            n += len(msgs)
    elapsed = time.perf_counter() - t0
    await consumer.stop()
    return elapsed


async def wait_processed(clients: Clients, n: int) -> None:
    while await clients.index.processed() < n:
        await asyncio.sleep(0.02)


async def end_to_end(settings: Settings, scans: list[dict[str, object]], batch: int) -> float:
    """Seconds from the first produce to the last scan recorded, with the worker already
    running and assigned (a warm-up scan went through first)."""
    clients = await Clients.open(settings)
    app = make_app(settings, clients)
    await app.start()
    try:
        await produce(settings, scans[:1], 1)
        await asyncio.wait_for(wait_processed(clients, 1), 120)
        t0 = time.perf_counter()
        await produce(settings, scans[1:], batch)
        await wait_processed(clients, len(scans))
        elapsed = time.perf_counter() - t0
        distinct, _ = await asyncio.to_thread(clients.clickhouse.visit_totals)
        assert distinct == len(scans), f"ClickHouse holds {distinct}, expected {len(scans)}"
    finally:
        await app.stop()
        await clients.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    base = Settings()
    services.start_all(base)
    data = Path(tempfile.mkdtemp(prefix="dancu-bench-"))
    settings = isolated_settings(base, data, f"bench{tag}")
    scans = make_scans(args.scans, seed=3, checkpoints=500)
    records = (args.scans - 1 + args.batch - 1) // args.batch

    async def run() -> None:
        await create_topics(settings)
        n = args.scans
        e2e = await end_to_end(settings, scans, args.batch)
        raw = await raw_consume(settings, records + 1)
        raw_rate, e2e_rate = (n + 1) / raw, (n - 1) / e2e
        print(
            f"raw aiokafka consume loop: {raw_rate:,.0f} scans/s ({(records + 1) / raw:,.0f} "
            "records/s)"
        )
        print(
            f"end to end (produce → Faust → Redis + ClickHouse): {e2e_rate:,.0f} scans/s "
            f"({n - 1:,} scans in {e2e:.2f} s)"
        )
        print(f"ratio end-to-end / raw: {e2e_rate / raw_rate:.3f}")

    uvloop.run(run())


if __name__ == "__main__":
    main()
