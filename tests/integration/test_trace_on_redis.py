"""The pure tracing rules over candidates gathered from the real Redis visit indexes give
the same exposures as over the same visits in memory."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from infra.redis_store import VisitIndex
from infra.settings import Settings
from streams.tracer import trace_case
from tests.unit.test_exposure import CASE, VISITS
from tracing.exposure import Case, ExposureRules, MemoryVisits, trace
from tracing.visits import Visit

pytestmark = pytest.mark.integration


async def test_candidates_from_redis_trace_like_memory(base_settings: Settings) -> None:
    # The hand-computed scenario, moved to the last days (the index keeps 21 days).
    shift = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3) - CASE.reported_at
    visits = [
        Visit(v.scan_id, v.person_key, v.checkpoint_id, v.t_in + shift, v.t_out + shift, "")
        for v in VISITS
    ]
    case = Case(
        "r1",
        "A",
        sample_time=CASE.sample_time + shift,
        reported_at=CASE.reported_at + shift,
        symptomatic=True,
        onset=(CASE.onset or CASE.sample_time) + shift,
    )
    redis = Redis.from_url(base_settings.redis_url, decode_responses=True)
    index = VisitIndex(redis, f"t{uuid.uuid4().hex[:8]}:", timedelta(days=21))
    rules = ExposureRules()
    try:
        await index.add(visits)
        from_redis = await trace_case(case, index, ["A", "H1"], rules)
    finally:
        index.close_sync()
        await redis.aclose()
    in_memory = trace(case, MemoryVisits.of(visits), ["A", "H1"], rules)
    assert [(e.tier, e.person_key, e.via, e.checkpoint_id) for e in from_redis] == [
        ("F1", "C", "A", "cp1"),
        ("F1", "D", "A", "cp1"),
        ("F1", "H1", "A", None),
        ("F2", "B", "C", "cp1"),
        ("F2", "G", "C", "cp3"),
    ]
    assert from_redis == in_memory
