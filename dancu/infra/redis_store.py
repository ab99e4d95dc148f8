"""Redis adapters: the visit indexes (who was where, when), scan dedup and live counters.

Keys (all under ``Settings.redis_prefix``):
- ``v:p:<person_key>`` sorted set, score t_in, member ``scan_id|checkpoint_id|t_out``
- ``v:c:<checkpoint_id>`` sorted set, score t_in, member ``scan_id|person_key|t_out``
- ``seen:<scan_id>`` a scan already recorded (dedup), expiring with the tracing window
- ``stats:processed`` and ``stats:sec:<epoch>`` counters for the live dashboard
- ``cp:<checkpoint_id>`` hash: district, ward, type, capacity
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import timedelta

from redis.asyncio import Redis

from dancu.tracing.visits import Visit


def make_redis(url: str) -> Redis:
    return Redis.from_url(url, decode_responses=True, health_check_interval=30)


class VisitIndex:
    """The hot window of visits in Redis, written in pipelines (one round trip per batch)."""

    def __init__(self, redis: Redis, prefix: str, window: timedelta) -> None:
        self.r = redis
        self.p = prefix
        self.window_s = int(window.total_seconds())

    def _person(self, key: str) -> str:
        return f"{self.p}v:p:{key}"

    def _checkpoint(self, cp: str) -> str:
        return f"{self.p}v:c:{cp}"

    async def unseen(self, scan_ids: Sequence[str]) -> list[bool]:
        """For each scan id: True when it has not been recorded yet."""
        if not scan_ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for s in scan_ids:
                pipe.exists(f"{self.p}seen:{s}")
            results = await pipe.execute()
        return [not r for r in results]

    async def add(self, visits: Iterable[Visit], *, count: bool = True) -> int:
        """Index visits and mark their scans seen; idempotent (members carry the scan id)."""
        now = int(time.time())
        n = 0
        # MULTI/EXEC: a crash never leaves scans marked seen without being counted.
        async with self.r.pipeline(transaction=True) as pipe:
            for v in visits:
                t_in = v.t_in.timestamp()
                t_out = int(v.t_out.timestamp())
                pkey = self._person(v.person_key)
                ckey = self._checkpoint(v.checkpoint_id)
                pipe.zadd(pkey, {f"{v.scan_id}|{v.checkpoint_id}|{t_out}": t_in})
                pipe.zadd(ckey, {f"{v.scan_id}|{v.person_key}|{t_out}": t_in})
                pipe.expire(pkey, self.window_s)
                pipe.expire(ckey, self.window_s)
                pipe.set(f"{self.p}seen:{v.scan_id}", 1, ex=self.window_s)
                n += 1
            if n and count:
                pipe.incrby(f"{self.p}stats:processed", n)
                sec = f"{self.p}stats:sec:{now}"
                pipe.incrby(sec, n)
                pipe.expire(sec, 120)
            if n:
                await pipe.execute()
        return n

    async def processed(self) -> int:
        return int(await self.r.get(f"{self.p}stats:processed") or 0)

    async def rate(self, seconds: int = 10) -> float:
        """Scans recorded per second over the last ``seconds`` whole seconds."""
        now = int(time.time())
        keys = [f"{self.p}stats:sec:{t}" for t in range(now - seconds, now)]
        values = await self.r.mget(keys)
        return sum(int(v or 0) for v in values) / seconds

    async def count_indexed(self) -> tuple[int, int]:
        """Distinct visits in the person index and in the checkpoint index (a full scan)."""
        totals = []
        for kind in ("p", "c"):
            members: set[str] = set()
            async for key in self.r.scan_iter(match=f"{self.p}v:{kind}:*", count=1000):
                for m in await self.r.zrange(key, 0, -1):
                    members.add(m.split("|", 1)[0])
            totals.append(len(members))
        return totals[0], totals[1]

    async def visits_of_person(self, person_key: str) -> list[tuple[str, str, float, int]]:
        rows = await self.r.zrange(self._person(person_key), 0, -1, withscores=True)
        out = []
        for member, score in rows:
            scan_id, cp, t_out = member.split("|")
            out.append((scan_id, cp, score, int(t_out)))
        return out


class CheckpointDirectory:
    """Checkpoint metadata (district, ward, type) for enriching visits; cached in process."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.r = redis
        self.p = prefix
        self._cache: dict[str, dict[str, str]] = {}

    async def put_many(self, checkpoints: Iterable[dict[str, str]]) -> int:
        n = 0
        async with self.r.pipeline(transaction=False) as pipe:
            for cp in checkpoints:
                pipe.hset(f"{self.p}cp:{cp['checkpoint_id']}", mapping=cp)
                self._cache.pop(cp["checkpoint_id"], None)
                n += 1
            if n:
                await pipe.execute()
        return n

    async def lookup(self, ids: Iterable[str]) -> dict[str, dict[str, str]]:
        missing = [i for i in set(ids) if i not in self._cache]
        if missing:
            async with self.r.pipeline(transaction=False) as pipe:
                for i in missing:
                    pipe.hgetall(f"{self.p}cp:{i}")
                found = await pipe.execute()
            for i, meta in zip(missing, found, strict=True):
                self._cache[i] = meta or {}
        return {i: self._cache[i] for i in ids}
