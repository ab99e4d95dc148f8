"""The ClickHouse sink through Kafka: workers send rows on ``store-rows`` and the store's
owner writes them. What travels is pseudonymous, like ClickHouse itself, and a record
the sink cannot write goes to ``dead-letters`` with its reason while the good ones land."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer

from infra import topics
from infra.kafka_io import make_producer
from infra.replays import replay_key
from infra.sink import encode
from tests.chaos import scenario as sc
from tests.chaos.support import clickhouse
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration


def topic_values(platform: Platform, name: str, at_least: int) -> list[bytes]:
    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            platform.settings.topic(name),
            bootstrap_servers=platform.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        out: list[bytes] = []
        try:
            deadline = time.monotonic() + 60
            while len(out) < at_least and time.monotonic() < deadline:
                got = await consumer.getmany(timeout_ms=1000)
                out.extend(m.value or b"" for ms in got.values() for m in ms)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def produce(platform: Platform, values: list[bytes], partition: int | None = None) -> None:
    async def send() -> None:
        producer = make_producer(platform.settings)
        await producer.start()
        try:
            topic = platform.settings.topic(topics.STORE_ROWS)
            await asyncio.gather(
                *[await producer.send(topic, v, partition=partition) for v in values]
            )
        finally:
            await producer.stop()

    asyncio.run(send())


def test_rows_travel_pseudonymous_and_bad_ones_are_dead_lettered(
    platform: Platform, tmp_path: Path
) -> None:
    path = tmp_path / "residents.csv"
    path.write_text(sc.residents_csv([]), encoding="utf-8")
    assert platform.run_cli("import", "residents", str(path)).returncode == 0
    platform.start()
    assert platform.api("steward").post("/v1/checkpoints", json=sc.checkpoints()).status_code == 201
    scans = sc.visits()
    r = platform.as_device(*sc.CHECKPOINTS).post("/v1/scans", json=scans)
    assert r.status_code == 202, r.text
    platform.wait_processed(len(scans), timeout=120)

    values = topic_values(platform, topics.STORE_ROWS, 1)
    assert values and "visits" in {orjson.loads(v)["table"] for v in values}
    for v in values:
        for pid in sc.IDS.values():
            assert pid.encode() not in v  # pseudonyms only, as in ClickHouse

    good = encode(
        "visits",
        [["sink-good-1", "k", "chaos-cp1", sc.DISTRICT, "", sc.T0.isoformat(),
          sc.T0.isoformat(), "gate", sc.T0.isoformat()]],
    )  # fmt: skip
    bad = [
        b"not json",
        orjson.dumps({"table": "users", "columns": [], "rows": []}),
        orjson.dumps({"table": "visits", "columns": ["scan_id"], "rows": [["x"]]}),
        encode("visits", [["sink-bad-1", "k", "cp", "d", "w", "yesterday", "x", "gate", "x"]])[0],
    ]
    produce(platform, [*bad, *good])
    wait_stored(platform, len(scans) + 1)
    letters = [orjson.loads(v) for v in topic_values(platform, topics.DEAD_LETTERS, len(bad))]
    mine = [d for d in letters if d["topic"] == platform.settings.topic(topics.STORE_ROWS)]
    reasons = sorted(str(d["reason"]) for d in mine)
    assert len(mine) == len(bad), reasons
    assert any("not valid JSON" in x for x in reasons)
    assert any("unknown table 'users'" in x for x in reasons)
    assert any("columns of visits do not match" in x for x in reasons)
    assert any("t_in is not an ISO 8601 time" in x for x in reasons)


def visit(scan_id: str, minute: int) -> list[object]:
    t = (sc.T0 + timedelta(minutes=minute)).isoformat()
    return [scan_id, "k", "replay-cp", sc.DISTRICT, "", t, t, "gate", t]


def test_a_replayed_record_is_counted_once_by_the_hourly_views(
    platform: Platform, tmp_path: Path
) -> None:
    """A worker stopped between its send and its commit sends rows again, marked as such;
    a sink stopped between its insert and its commit reads records again at or below its
    replay mark. Either way the table would collapse the rows, but the dashboard's
    insert-time hourly views would count them twice: the sink writes only what is missing."""
    platform.start()
    first = [visit("replay-a", 1), visit("replay-b", 2)]
    produce(platform, encode("visits", first))
    wait_stored(platform, 2)
    # The worker's replay: the same rows marked, with one it had not sent yet.
    produce(platform, encode("visits", [*first, visit("replay-c", 3)], replayed=True))
    wait_stored(platform, 3)
    # A first send and its resend close enough to reach the sink in one batch.
    e = [visit("replay-e", 5)]
    produce(platform, [*encode("visits", e), *encode("visits", e, replayed=True)], partition=0)
    wait_stored(platform, 4)
    # The sink's own replay: records at or below its mark come again, unmarked.
    s = platform.settings
    key = replay_key(s.redis_prefix, s.sink_group, s.topic(topics.STORE_ROWS))
    marks = redis.Redis.from_url(s.redis_url)
    try:
        marks.hset(key, mapping={str(p): 10**12 for p in range(64)})
        produce(platform, encode("visits", [*first, visit("replay-d", 4)]))
        wait_stored(platform, 5)
        assert int(marks.hget(key, "0") or 0) == 10**12  # a mark is never lowered
    finally:
        marks.close()
    platform.stop()
    raw, hourly, by_checkpoint = clickhouse(
        platform,
        "SELECT count() FROM {db}.visits WHERE checkpoint_id = 'replay-cp'",
        "SELECT sum(scans) FROM {db}.scans_hourly WHERE district = '" + sc.DISTRICT + "'",
        "SELECT sum(visits) FROM {db}.checkpoint_visits_hourly WHERE checkpoint_id = 'replay-cp'",
    )
    assert raw == [[5]] and hourly == [[5]] and by_checkpoint == [[5]]


def wait_stored(platform: Platform, n: int) -> None:
    deadline = time.monotonic() + 120
    stats: dict[str, object] = {}
    while time.monotonic() < deadline:
        stats = platform.stats()
        if stats["visits_total"] == n and stats["lag"] == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"not stored in 120 s: {stats}")
