"""Bounded state on the real Redis: the checkpoint cache stays bounded and forgets junk
IDs, a change invalidates it; visit keys are trimmed by event time on every write."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from infra.redis_store import CheckpointDirectory, VisitIndex
from infra.settings import Settings
from tracing.visits import Visit

pytestmark = pytest.mark.integration


async def test_checkpoint_cache_is_bounded_and_invalidated(base_settings: Settings) -> None:
    redis = Redis.from_url(base_settings.redis_url, decode_responses=True)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    try:
        places = CheckpointDirectory(redis, prefix, max_entries=50)
        for i in range(500):  # a flood of unknown IDs
            assert (await places.lookup([f"junk-{i}"]))[f"junk-{i}"] == {}
        assert len(places._cache) <= 50
        await places.put_many([{"checkpoint_id": "cp1", "type": "hospital", "district": "x"}])
        assert (await places.lookup(["cp1"]))["cp1"]["type"] == "hospital"
        await places.replace("cp1", {"checkpoint_id": "cp1", "type": "restaurant"})
        assert (await places.lookup(["cp1"]))["cp1"]["type"] == "restaurant"
    finally:
        await redis.aclose()


async def test_visit_keys_are_trimmed_by_event_time_on_every_write(
    base_settings: Settings,
) -> None:
    redis = Redis.from_url(base_settings.redis_url, decode_responses=True)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    index = VisitIndex(redis, prefix, timedelta(days=21))
    try:
        now = datetime.now(UTC)
        old = now - timedelta(days=30)

        def visit(scan: str, t: datetime) -> Visit:
            return Visit(scan, "pk1", "cp1", t, t + timedelta(minutes=30), "gate")

        assert await index.add([visit("old", old)]) == 1
        assert await index.add([visit("new", now)]) == 1
        assert await index.add([visit("new", now)]) == 0  # a replay counts nothing
        person = await redis.zrange(index._person("pk1"), 0, -1)
        place = await redis.zrange(index._checkpoint("cp1"), 0, -1)
        assert [m.split("|")[0] for m in person] == ["new"]
        assert [m.split("|")[0] for m in place] == ["new"]
        assert await index.processed() == 2
    finally:
        index.close_sync()
        await redis.aclose()
