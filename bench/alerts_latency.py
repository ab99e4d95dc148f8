"""SSE alert latency: from an ``ExposureFlagged`` event's publication on ``exposures`` to
its alert on an open ``GET /v1/alerts/stream`` (target: ≤ 1 s, issue 9 "Speed").

A real platform (``dancu up``: the store's process with the Faust worker, the public API
serving the stream) runs on the project's Kafka and Redis; an official of one district
holds the stream open; flags for people of that district are published on ``exposures``
one by one, as the tracer publishes them (the idempotent ``acks=all`` producer), and each
is timed from just before its send to the arrival of its ``data:`` line. The raw baseline,
measured on the same records in the same run: a bare Kafka consumer of ``exposures``
(what any reader of the topic pays before doing anything).

    PYTHONPATH=. python bench/alerts_latency.py [--flags 200] [--gap 0.02]

``bench/dashboard.py`` runs it too, after the analytics part.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/alerts_latency.py`, this folder comes first on sys.path, where
# bench/tracing.py would hide the `tracing` package: drop it (PYTHONPATH=. finds ours).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gate.http_auth import BearerAuth
from infra import services
from infra.settings import Settings
from tests.integration.conftest import Platform
from tracing.events import ExposureFlagged

DISTRICT = "Ba Đình"
TARGET_MS = 1000.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _flag(i: int, run: str) -> bytes:
    now = datetime.now(UTC)
    e = ExposureFlagged(
        exposure_id=f"{run}{i:016x}"[:24],
        report_id=f"bench-{run}",
        person_key=f"bench-{run}-{i}",
        tier="F1",
        via_key=f"bench-{run}-f0",
        reason="co-location",
        checkpoint_id="bench-cp",
        district=DISTRICT,
        overlap_start=now - timedelta(minutes=45),
        overlap_end=now - timedelta(minutes=20),
        overlap_minutes=25.0,
        rule_version="moh-2021",
        flagged_at=now,
        version=i,
    )
    return e.model_dump_json().encode()


async def _run(p: Platform, token: str, flags: int, gap: float) -> tuple[dict[str, float], ...]:
    s = p.settings
    topic = s.topic("exposures")
    run = uuid.uuid4().hex[:8]
    sent: dict[str, float] = {}
    on_stream: dict[str, float] = {}
    on_kafka: dict[str, float] = {}
    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    bare = AIOKafkaConsumer(
        topic,
        bootstrap_servers=s.kafka_bootstrap,
        group_id=f"bench-bare-{run}",
        auto_offset_reset="latest",
        fetch_max_wait_ms=10,
    )
    await producer.start()
    await bare.start()
    connected = asyncio.Event()

    async def read_stream(r: httpx.Response) -> None:
        async for line in r.aiter_lines():
            if line.startswith(":"):
                connected.set()
            elif line.startswith("data: "):
                at = time.perf_counter()
                body = orjson.loads(line[6:])
                on_stream.setdefault(body["alert"]["alert_id"], at)

    async def read_kafka() -> None:
        async for record in bare:
            at = time.perf_counter()
            with contextlib.suppress(ValueError, KeyError):
                on_kafka.setdefault(orjson.loads(record.value)["exposure_id"], at)

    try:
        # The bare consumer is placed at the end of the topic before anything is sent.
        while not bare.assignment():
            await asyncio.sleep(0.05)
        await bare.seek_to_end()
        kafka_task = asyncio.create_task(read_kafka())
        async with (
            httpx.AsyncClient(base_url=p.url, auth=BearerAuth(token), timeout=None) as http,
            http.stream("GET", "/v1/alerts/stream") as r,
        ):
            r.raise_for_status()
            stream_task = asyncio.create_task(read_stream(r))
            await asyncio.wait_for(connected.wait(), 30)
            for i in range(flags):
                value = _flag(i, run)
                exposure_id = orjson.loads(value)["exposure_id"]
                sent[exposure_id] = time.perf_counter()
                await producer.send_and_wait(topic, value, key=exposure_id.encode())
                await asyncio.sleep(gap)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (len(on_stream) < flags or len(on_kafka) < flags):
                await asyncio.sleep(0.1)
            stream_task.cancel()
        kafka_task.cancel()
    finally:
        await producer.stop()
        await bare.stop()
    return sent, on_stream, on_kafka


def measure(base: Settings, flags: int = 200, gap: float = 0.02) -> list[str]:
    """Run the measurement on a fresh platform; the lines to print."""
    data = Path(tempfile.mkdtemp(prefix="dancu-bench-alerts-"))
    p = Platform(base, data / "dancu")
    p.start()
    try:
        token = p.token("official", DISTRICT)
        # The agents join their consumer group shortly after the API answers: a first
        # flag, not timed, waits for the whole path to be live.
        asyncio.run(_run(p, token, 1, 0.0))
        sent, on_stream, on_kafka = asyncio.run(_run(p, token, flags, gap))
    finally:
        p.stop()
    sse = [(on_stream[k] - t) * 1000 for k, t in sent.items() if k in on_stream]
    raw = [(on_kafka[k] - t) * 1000 for k, t in sent.items() if k in on_kafka]
    lost = len(sent) - len(sse)
    if not sse:
        return [f"SSE alert latency: no alert arrived of {len(sent)} flags published"]
    verdict = "met" if pct(sse, 0.95) <= TARGET_MS else "NOT met"
    lines = [
        "",
        f"SSE alert latency over {len(sent)} flags (publish on exposures → data: line "
        f"on an open /v1/alerts/stream; times in ms)",
        f"{'path':34} {'p50':>7} {'p95':>7} {'max':>7}",
        f"{'alert on the SSE stream':34} {statistics.median(sse):7.1f} "
        f"{pct(sse, 0.95):7.1f} {max(sse):7.1f}",
    ]
    if raw:
        lines.append(
            f"{'raw: bare Kafka consumer':34} {statistics.median(raw):7.1f} "
            f"{pct(raw, 0.95):7.1f} {max(raw):7.1f}"
        )
        lines.append(f"p95 ratio to the raw consumer: {pct(sse, 0.95) / pct(raw, 0.95):.1f}×")
    lines.append(
        f"SSE p95 {pct(sse, 0.95):.0f} ms (target ≤ {TARGET_MS:.0f} ms: {verdict})"
        + (f"; {lost} alert(s) not seen within 30 s" if lost else "")
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flags", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between flags")
    args = parser.parse_args()
    base = Settings()
    services.start_all(base)
    for line in measure(base, args.flags, args.gap):
        print(line)


if __name__ == "__main__":
    main()
