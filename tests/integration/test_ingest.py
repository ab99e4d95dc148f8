"""10,000 scans through the real Kafka → Faust → Redis + ClickHouse, exactly once."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import timedelta

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from infra.redis_store import VisitIndex
from tests.integration.conftest import Platform
from tests.integration.helpers import make_scans

pytestmark = pytest.mark.integration
N = 10_000


def checkpoints_of(scans: list[dict[str, object]]) -> list[str]:
    return sorted({str(s["checkpoint_id"]) for s in scans})


async def post_all(url: str, scans: list[dict[str, object]], device: httpx.Auth) -> int:
    """Post the first 500 one by one, the rest in device batches of 1-400 (signed by
    ``device``, a gateway of every checkpoint they name)."""
    accepted = 0
    async with httpx.AsyncClient(base_url=url, timeout=60, auth=device) as http:
        singles, rest = scans[:500], scans[500:]
        for i in range(0, len(singles), 50):
            rs = await asyncio.gather(
                *(http.post("/v1/scans", json=s) for s in singles[i : i + 50])
            )
            assert all(r.status_code == 202 for r in rs), [r.text for r in rs][:3]
            accepted += sum(r.json()["accepted"] for r in rs)
        i, size = 0, 1
        while i < len(rest):
            r = await http.post("/v1/scans", json={"scans": rest[i : i + size]})
            assert r.status_code == 202, r.text
            accepted += r.json()["accepted"]
            i += size
            size = size % 400 + 37
    return accepted


async def redis_counts(platform: Platform) -> tuple[int, int]:
    redis = Redis.from_url(platform.settings.redis_url, decode_responses=True)
    try:
        index = VisitIndex(redis, platform.settings.redis_prefix, timedelta(days=21))
        return await index.count_indexed()
    finally:
        await redis.aclose()


def test_ten_thousand_scans_exactly_once_then_resend_then_rebuild(platform: Platform) -> None:
    platform.start()
    scans = make_scans(N, seed=11)
    device = platform.device(*checkpoints_of(scans))
    assert asyncio.run(post_all(platform.url, scans, device)) == N
    stats = platform.wait_processed(N)
    assert stats["scans_processed"] == N
    assert stats["visits_total"] == N
    assert sum(stats["visits_by_district"].values()) == N
    assert asyncio.run(redis_counts(platform)) == (N, N)

    # The same scans re-sent (a device that retried everything): still 10,000.
    assert asyncio.run(post_all(platform.url, scans, device)) == N
    stats = platform.wait_processed(N)
    assert stats["scans_processed"] == N and stats["visits_total"] == N
    assert asyncio.run(redis_counts(platform)) == (N, N)

    # A device of other checkpoints is refused the whole batch (nothing sent).
    r = httpx.post(
        f"{platform.url}/v1/scans", json=scans[:20], auth=platform.device("cp-elsewhere")
    )
    assert r.status_code == 403 and "may not act for checkpoint" in r.json()["error"]

    # Redis emptied → `dancu rebuild` restores the indexes from ClickHouse.
    platform.stop()
    asyncio.run(forget_all(platform))
    assert asyncio.run(redis_counts(platform)) == (0, 0)
    result = platform.run_cli("rebuild")
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["visits_restored"] == N
    assert asyncio.run(redis_counts(platform)) == (N, N)


async def forget_all(platform: Platform) -> None:
    """Everything the platform keeps in Redis is lost (its own keys only: other tests
    share this Redis)."""
    redis = Redis.from_url(platform.settings.redis_url)
    try:
        async for key in redis.scan_iter(match=f"{platform.settings.redis_prefix}*", count=1000):
            await redis.delete(key)
    finally:
        await redis.aclose()


async def produce_raw(platform: Platform, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=platform.settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        topic = platform.settings.topic("scans")
        futures = [
            await producer.send(topic, v, key=str(i % 13).encode()) for i, v in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_dead_letters(platform: Platform, n: int, timeout: float = 60) -> list[dict]:
    consumer = AIOKafkaConsumer(
        platform.settings.topic("dead-letters"),
        bootstrap_servers=platform.settings.kafka_bootstrap,
        group_id=f"dlq-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[dict] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    out.extend(orjson.loads(m.value) for m in msgs)
    finally:
        await consumer.stop()
    return out


def test_malformed_records_go_to_dead_letters_and_good_ones_are_processed(
    platform: Platform,
) -> None:
    platform.start()
    good = make_scans(300, seed=5)
    bad_id = {**good[0], "scan_id": "bad-id", "person_id": "099090123456"}
    missing = {k: v for k, v in good[1].items() if k != "person_id"} | {"scan_id": "missing"}
    future = {**good[2], "scan_id": "future", "ts": "2099-01-01T00:00:00+07:00"}
    values = [orjson.dumps(s) for s in good[:100]]
    values += [b"{this is not json", orjson.dumps(bad_id), orjson.dumps(missing)]
    values += [orjson.dumps([*good[100:200], future])]  # a batch with one bad item
    values += [orjson.dumps(s) for s in good[200:]]
    asyncio.run(produce_raw(platform, values))
    stats = platform.wait_processed(300)
    assert stats["scans_processed"] == 300 and stats["visits_total"] == 300
    letters = asyncio.run(read_dead_letters(platform, 4))
    reasons = sorted(d["reason"] for d in letters)
    assert len(letters) == 4
    assert any(r.startswith("not valid JSON") for r in reasons)
    assert any("unknown province code 099" in r for r in reasons)
    assert any("person_id: Field required" in r for r in reasons)
    assert any("in the future" in r for r in reasons)
    assert all(d["topic"] == platform.settings.topic("scans") for d in letters)


def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(platform: Platform) -> None:
    platform.start()
    scans = make_scans(N, seed=23)
    values = [orjson.dumps(s) for s in scans]  # one scan per record: many small commits
    asyncio.run(produce_raw(platform, values[: N // 2]))
    seen = 0
    for _ in range(400):
        seen = int(platform.stats()["scans_processed"])
        if seen >= 1000:
            break
        asyncio.run(asyncio.sleep(0.05))
    platform.stop(signal.SIGKILL)
    assert 0 < seen <= N // 2
    asyncio.run(produce_raw(platform, values[N // 2 :]))  # arrives while the worker is dead
    platform.start()
    stats = platform.wait_processed(N)
    assert stats["scans_processed"] == N
    assert stats["visits_total"] == N
    assert asyncio.run(redis_counts(platform)) == (N, N)
