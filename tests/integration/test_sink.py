"""The ClickHouse sink through Kafka: workers send rows on ``store-rows`` and the store's
owner writes them. What travels is pseudonymous, like ClickHouse itself, and a record
the sink cannot write goes to ``dead-letters`` with its reason while the good ones land."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from infra import topics
from infra.kafka_io import make_producer
from infra.sink import encode
from tests.chaos import scenario as sc
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


def produce(platform: Platform, values: list[bytes]) -> None:
    async def send() -> None:
        producer = make_producer(platform.settings)
        await producer.start()
        try:
            topic = platform.settings.topic(topics.STORE_ROWS)
            await asyncio.gather(*[await producer.send(topic, v) for v in values])
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
    deadline = time.monotonic() + 120
    stats: dict[str, object] = {}
    while time.monotonic() < deadline:
        stats = platform.stats()
        if stats["visits_total"] == len(scans) + 1 and stats["lag"] == 0:
            break
        time.sleep(0.5)
    assert stats["visits_total"] == len(scans) + 1, stats
    letters = [orjson.loads(v) for v in topic_values(platform, topics.DEAD_LETTERS, len(bad))]
    mine = [d for d in letters if d["topic"] == platform.settings.topic(topics.STORE_ROWS)]
    reasons = sorted(str(d["reason"]) for d in mine)
    assert len(mine) == len(bad), reasons
    assert any("not valid JSON" in x for x in reasons)
    assert any("unknown table 'users'" in x for x in reasons)
    assert any("columns of visits do not match" in x for x in reasons)
    assert any("t_in is not an ISO 8601 time" in x for x in reasons)
