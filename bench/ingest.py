"""Ingest benchmark: N scans produced to Kafka and processed end to end — workers
(``record_scans`` → Redis indexes, rows → ``store-rows``) and the ClickHouse sink — timed
from the first produce until every scan is in Redis and ClickHouse. In the same run:

- the raw baseline: a bare aiokafka loop reading the same records;
- the **bare store floor**: the same visits written straight to Redis and ClickHouse by
  the same recorder with the same commands, no Kafka and no Faust (end to end should be
  at least half of it);
- the scaling curve: end to end with 1, 2 and 3 worker processes (``dancu up --workers N``
  on this machine), with the CPU each process used.

    python bench/ingest.py [--scans 200000] [--batch 100] [--workers 1,2,3]

--batch is the number of scans per Kafka record (a device batch, as POST /v1/scans
produces it); --batch 1 measures one scan per record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import orjson  # noqa: E402
import uvloop  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from infra import services  # noqa: E402
from infra.clients import ClickHouseVisitSink, Clients  # noqa: E402
from infra.kafka_io import create_topics, make_producer  # noqa: E402
from infra.settings import Settings  # noqa: E402
from streams.guard import Guard  # noqa: E402
from streams.scans import RawRecord, ScanRecorder, bounded  # noqa: E402
from tests.integration.conftest import Platform  # noqa: E402
from tests.integration.helpers import isolated_settings, make_scans  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def records_of(scans: list[dict[str, object]], batch: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of each Kafka record: ``batch`` scans per record, keyed by checkpoint."""
    out = []
    for i in range(0, len(scans), batch):
        chunk = scans[i : i + batch]
        value = orjson.dumps(chunk if batch > 1 else chunk[0])
        out.append((str(chunk[0]["checkpoint_id"]).encode(), value))
    return out


async def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    topic = settings.topic("scans")
    t0 = time.perf_counter()
    futures = [await producer.send(topic, value, key=key) for key, value in records]
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


class NoDeadLetters:
    async def send(self, letters: object) -> None:
        raise AssertionError(f"the floor dead-lettered {letters!r}")


async def store_floor(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    """The same records through the worker's recorder, straight into Redis and ClickHouse
    (the same lookups and writes, batches as the agent forms them): no Kafka, no Faust."""
    clients = await Clients.open(settings)
    recorder = ScanRecorder(
        index=clients.index,
        sink=ClickHouseVisitSink(clients.clickhouse),
        places=clients.checkpoints,
        guard=Guard(NoDeadLetters(), clients.health),
        pseudonymize=clients.pseudonymize,
        topic="scans",
        max_age=None,
    )
    raw = [RawRecord(value, 0, i) for i, (_, value) in enumerate(records)]
    try:
        t0 = time.perf_counter()
        for i in range(0, len(raw), settings.batch_size):
            for part in bounded(raw[i : i + settings.batch_size], settings.batch_max_bytes):
                await recorder.record(part)
        elapsed = time.perf_counter() - t0
        recorded = await clients.index.processed()
        distinct, _ = await asyncio.to_thread(clients.clickhouse.visit_totals)
    finally:
        await clients.close()
    expected = sum(len(orjson.loads(v)) if v.startswith(b"[") else 1 for _, v in records)
    assert recorded == distinct == expected, (recorded, distinct, expected)
    return elapsed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def end_to_end(
    base: Settings, workers: int, records: list[tuple[bytes, bytes]], n: int
) -> tuple[float, dict[str, float]]:
    """Seconds from the first produce until every scan is in Redis and ClickHouse, on a
    platform of ``workers`` worker processes (warmed up by one scan first), and the CPU
    seconds each process used meanwhile."""
    data = Path(tempfile.mkdtemp(prefix=f"dancu-bench-w{workers}-"))
    platform = Platform(base, data / "dancu")
    platform.up_args = ["--workers", str(workers)]
    s = platform.settings
    try:
        asyncio.run(create_topics(s))
        platform.start(timeout=180)
        warm = make_scans(1, seed=99)
        asyncio.run(produce(s, records_of(warm, 1)))
        platform.wait_processed(1, timeout=180)
        names = ["api", "store", *(f"worker-{i}" for i in range(1, workers + 1))]
        pids = {name: platform.pid_of(name) for name in names}
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.perf_counter()
        asyncio.run(produce(s, records))
        stats = platform.wait_processed(n + 1, timeout=1800)  # Redis, and no lag in Kafka
        elapsed = time.perf_counter() - t0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        assert stats["visits_total"] == n + 1, stats  # ClickHouse, through the sink
        return elapsed, cpu
    finally:
        platform.stop()
        platform.sign_out()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", default="1,2,3", help="worker counts to measure")
    args = parser.parse_args()
    base = Settings()
    services.start_all(base)
    scans = make_scans(args.scans, seed=3, checkpoints=500)
    records = records_of(scans, args.batch)
    n = args.scans

    floor_settings = isolated_settings(
        base, Path(tempfile.mkdtemp(prefix="dancu-bench-floor-")), f"f{uuid.uuid4().hex[:8]}"
    )
    floor = uvloop.run(store_floor(floor_settings, records))
    floor_rate = n / floor
    print(f"bare store floor (recorder → Redis + ClickHouse, no Kafka/Faust): {floor_rate:,.0f} "
          f"scans/s ({n:,} scans in {floor:.2f} s)")  # fmt: skip

    curve: list[tuple[int, float]] = []
    raw_rate = 0.0
    for workers in [int(w) for w in args.workers.split(",") if w.strip()]:
        e2e, cpu = end_to_end(base, workers, records, n)
        rate = n / e2e
        curve.append((workers, rate))
        used = ", ".join(f"{name} {sec:.1f}" for name, sec in cpu.items())
        print(
            f"end to end, {workers} worker(s) (produce → workers → Redis, sink → ClickHouse): "
            f"{rate:,.0f} scans/s ({n:,} scans in {e2e:.2f} s); CPU seconds: {used} "
            f"(total {sum(cpu.values()):.1f} over {e2e:.1f} s wall)"
        )
        if not raw_rate:  # the raw loop over the same records, in the same run
            tag = f"r{uuid.uuid4().hex[:8]}"
            raw_settings = isolated_settings(
                base, Path(tempfile.mkdtemp(prefix="dancu-bench-raw-")), tag
            )

            async def raw_run(s: Settings = raw_settings) -> float:
                await create_topics(s)
                await produce(s, records)
                return await raw_consume(s, len(records))

            raw_rate = n / uvloop.run(raw_run())
            print(f"raw aiokafka consume loop: {raw_rate:,.0f} scans/s")
    for workers, rate in curve:
        print(
            f"{workers} worker(s): end to end / bare store floor {rate / floor_rate:.2f} "
            f"(target ≥ 0.5); end to end / raw consume {rate / raw_rate:.3f}"
        )


if __name__ == "__main__":
    main()
