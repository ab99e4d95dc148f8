"""Gate decision benchmark: `POST /v1/gate/check` at a fixed rate (open loop, as gate
devices send: a slow answer never delays the next request) while scans are ingested in
the background; against the raw Redis `HGETALL` of a resident measured in the same run.

    python bench/gate_checks.py [--residents 1000000] [--rate 500] [--seconds 60] [--ingest 2000]

Prints p50/p99 at the client and inside the server (its Server-Timing header), the raw
HGETALL p99, the ratio, and the saturation throughput (closed loop, 20 clients).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/gate_checks.py`, this file's folder comes first on sys.path, where
# bench/tracing.py would hide the `tracing` package: drop it (PYTHONPATH=. finds ours).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import uvloop
from redis.asyncio import BlockingConnectionPool, Redis

from gate.http_auth import DeviceAuth
from infra import services
from infra.credentials import Credentials
from infra.settings import Settings
from tests.integration.conftest import Platform


class LeanHttp:
    """A bare HTTP/1.1 keep-alive client over asyncio streams: the benchmark's own CPU per
    request is a few tens of microseconds (httpx costs about a millisecond, which on a
    2-core machine would measure the client, not the server)."""

    def __init__(self, url: str, connections: int, device: DeviceAuth | None = None) -> None:
        self.device = device  # signs every request, as a gate device does
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.size = connections
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.opened = 0

    async def _conn(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.pool.empty() and self.opened < self.size:
            self.opened += 1
            return await asyncio.open_connection(self.host, self.port)
        return await self.pool.get()

    async def post(self, path: str, body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        reader, writer = await self._conn()
        signed = b"".join(
            b"%s: %s\r\n" % (k.encode(), v.encode())
            for k, v in (self.device.headers("POST", path, body) if self.device else {}).items()
        )
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), signed, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        data = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        self.pool.put_nowait((reader, writer))
        return status, headers, data

    async def close(self) -> None:
        while not self.pool.empty():
            _, writer = self.pool.get_nowait()
            writer.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sample_ids(redis: Redis, prefix: str, n: int) -> tuple[list[str], list[str]]:
    """Some resident IDs and checkpoint IDs of the seeded city."""
    people: list[str] = []
    async for key in redis.scan_iter(match=f"{prefix}r:*", count=5000):
        people.append(str(key)[len(prefix) + 2 :])
        if len(people) >= n:
            break
    places: list[str] = []
    async for key in redis.scan_iter(match=f"{prefix}cp:*", count=5000):
        places.append(str(key)[len(prefix) + 3 :])
        if len(places) >= 200:
            break
    return people, places


async def ingest(
    url: str,
    people: list[str],
    places: list[str],
    rate: float,
    stop: asyncio.Event,
    device: DeviceAuth,
) -> tuple[int, float]:
    """Scans at ``rate`` per second, in device batches of 100, until stopped; (sent, s)."""
    rng = random.Random(3)
    sent = 0
    batch = 100
    interval = batch / rate
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60, auth=device) as http:
        next_at = time.perf_counter()
        while not stop.is_set():
            now = datetime.now(UTC)
            scans = [
                {
                    "scan_id": f"bench-{uuid.uuid4().hex}",
                    "person_id": rng.choice(people),
                    "checkpoint_id": rng.choice(places),
                    "ts": (now - timedelta(seconds=rng.uniform(0, 600))).isoformat(),
                    "source": "gate",
                }
                for _ in range(batch)
            ]
            r = await http.post("/v1/scans", json=scans)
            sent += r.json().get("accepted", 0) if r.status_code == 202 else 0
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return sent, time.perf_counter() - t0


async def open_loop(
    url: str,
    people: list[str],
    places: list[str],
    rate: float,
    seconds: float,
    device: DeviceAuth,
) -> tuple[list[float], list[float], int]:
    """Requests sent on schedule whatever the answers' speed; (client ms, server ms, errors)."""
    rng = random.Random(7)
    client_ms: list[float] = []
    server_ms: list[float] = []
    errors = 0
    http = LeanHttp(url, connections=400, device=device)

    async def one(body: bytes) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            status, headers, _ = await http.post("/v1/gate/check", body)
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            return
        client_ms.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            errors += 1
        timing = headers.get(b"server-timing", b"")
        if b"dur=" in timing:
            server_ms.append(float(timing.split(b"dur=")[1]))

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        body = orjson.dumps({"checkpoint_id": rng.choice(places), "person_id": rng.choice(people)})
        tasks.append(asyncio.create_task(one(body)))
    await asyncio.gather(*tasks)
    await http.close()
    return client_ms, server_ms, errors


async def raw_hgetall(
    redis: Redis, prefix: str, people: list[str], rate: float, seconds: float
) -> list[float]:
    """The baseline: the one Redis read a gate decision needs, at the same rate, same run."""
    rng = random.Random(9)
    out: list[float] = []
    start = time.perf_counter()

    async def one(pid: str) -> None:
        t0 = time.perf_counter()
        await redis.hgetall(f"{prefix}r:{pid}")
        out.append((time.perf_counter() - t0) * 1000)

    tasks = []
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(rng.choice(people))))
    await asyncio.gather(*tasks)
    return out


async def saturation(
    url: str, people: list[str], places: list[str], seconds: float, device: DeviceAuth
) -> float:
    """Closed loop, 20 clients each sending its next request when the last answered."""
    done = 0
    deadline = time.perf_counter() + seconds
    http = LeanHttp(url, connections=20, device=device)

    async def client(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            body = {"checkpoint_id": rng.choice(places), "person_id": rng.choice(people)}
            status, _, _ = await http.post("/v1/gate/check", orjson.dumps(body))
            done += status == 200

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(20)))
    await http.close()
    return done / (time.perf_counter() - t0)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--ingest", type=float, default=2000.0)
    args = parser.parse_args()
    base = Settings()
    services.start_all(base)
    data = Path(tempfile.mkdtemp(prefix="dancu-bench-gate-"))
    platform = Platform(base, data / "dancu")
    t = time.perf_counter()
    seeded = platform.run_cli(
        "seed", "--residents", str(args.residents), "--seed", "5", timeout=3600
    )
    assert seeded.returncode == 0, seeded.stderr[-2000:]
    print(f"seeded {args.residents:,} residents in {time.perf_counter() - t:.0f} s")
    platform.start(timeout=180)

    async def run() -> None:
        pool = BlockingConnectionPool.from_url(
            platform.settings.redis_url, decode_responses=True, max_connections=200, timeout=None
        )
        redis = Redis(connection_pool=pool)
        prefix = platform.settings.redis_prefix
        people, places = await sample_ids(redis, prefix, 50_000)
        # a gateway device for the sampled checkpoints
        device = DeviceAuth(*await Credentials(redis, prefix).add_device(*places))
        stop = asyncio.Event()
        feeder = asyncio.create_task(
            ingest(platform.url, people, places, args.ingest, stop, device)
        )
        await asyncio.sleep(5)  # the worker is busy before the gates start
        (client_ms, server_ms, errors), raw_ms = await asyncio.gather(
            open_loop(platform.url, people, places, args.rate, args.seconds, device),
            raw_hgetall(redis, prefix, people, args.rate, args.seconds),
        )
        stop.set()
        scans, ingest_seconds = await feeder
        api_pid = platform.pid_of("api")
        cpu0, t0 = cpu_seconds(api_pid), time.perf_counter()
        sat = await saturation(platform.url, people, places, 15, device)
        api_cpu = (cpu_seconds(api_pid) - cpu0) / (sat * (time.perf_counter() - t0))
        await redis.aclose()
        raw99 = pct(raw_ms, 0.99)
        print(f"background ingest: {scans / ingest_seconds:,.0f} scans/s posted")
        print(
            f"gate checks, open loop {args.rate:.0f}/s for {args.seconds:.0f} s: "
            f"{len(client_ms):,} answered, {errors} errors"
        )
        print(f"client  p50 {pct(client_ms, 0.5):.2f} ms  p99 {pct(client_ms, 0.99):.2f} ms")
        print(f"server  p50 {pct(server_ms, 0.5):.2f} ms  p99 {pct(server_ms, 0.99):.2f} ms")
        print(f"raw Redis HGETALL  p50 {pct(raw_ms, 0.5):.3f} ms  p99 {raw99:.3f} ms")
        print(f"ratio client p99 / raw p99: {pct(client_ms, 0.99) / raw99:.1f}  (target ≤ 25)")
        print(f"ratio server p99 / raw p99: {pct(server_ms, 0.99) / raw99:.1f}")
        print(f"saturation (closed loop, 20 clients): {sat:,.0f} gate checks/s")
        print(
            f"API process CPU per gate check at saturation: {api_cpu * 1000:.3f} ms "
            f"({1 / api_cpu:,.0f} checks per API CPU-second)"
        )
        if client_ms:
            print(f"client mean {statistics.fmean(client_ms):.2f} ms")

    try:
        uvloop.run(run())
    finally:
        platform.stop()


if __name__ == "__main__":
    main()
