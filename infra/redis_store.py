"""Redis adapters: the visit indexes (who was where, when), scan dedup and live counters.

Keys (all under ``Settings.redis_prefix``):
- ``v:p:<person_key>`` sorted set, score t_in, member ``scan_id|checkpoint_id|t_out``
- ``v:c:<checkpoint_id>`` sorted set, score t_in, member ``scan_id|person_key|t_out``
- ``seen:<bucket>`` sorted sets of recorded scan ids (dedup), trimmed to the tracing window
- ``stats:processed`` and ``stats:sec:<epoch>`` counters for the live dashboard
- ``cp:<checkpoint_id>`` hash: district, ward, type, capacity
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry as SyncRetry

from tracing.visits import Visit

# Dedup marks live in sorted sets (score = t_in) sharded by crc32(scan_id).
SEEN_BUCKETS = 64
# Visits per index script: a few milliseconds of Redis time each.
MAX_PER_SCRIPT = 1000


def make_redis(url: str) -> Redis:
    """A client that reconnects by itself: a restarted server costs a retry, not an error;
    a server that stops answering is a timeout, never a hang."""
    # Many concurrent requests wait for a free connection (up to the timeout) rather than
    # fail with "Too many connections" past the pool's size.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=512,
        timeout=10,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
    )
    return Redis.from_pool(pool)  # closing the client closes its pool


# One batch of visits, written inside Redis by one script (atomic like MULTI/EXEC, and
# one command to pack instead of three per key):
#   index keys: ZADD the visits, trim to the window by the key's newest event, EXPIRE;
#   seen buckets: ZADD the scan ids, count the newly added, trim by event time;
#   counters: grow by what was newly added only (a replayed batch counts nothing).
#   the longest visit per checkpoint (v:maxdur): how far back a range read must start.
# KEYS: index keys, seen buckets, stats:processed, stats:sec:<now>, v:maxdur
# ARGV: #index keys, #buckets, window, count (0/1), then per key: n, the trim cutoff
# (exclusive: the key's newest event minus the window), then n (score, member) pairs,
# then #durations and (checkpoint, seconds) pairs
_ADD_VISITS = """
local nkeys, nbuckets = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, count = ARGV[3], tonumber(ARGV[4])
local i, added = 5, 0
local function put(key)
  local n, cutoff = tonumber(ARGV[i]), ARGV[i + 1]
  i = i + 2
  local new = 0
  for j = 0, 2 * n - 1, 7000 do  -- unpack stays under Lua's C stack limit
    new = new + redis.call('ZADD', key, unpack(ARGV, i + j, i + math.min(j + 6999, 2 * n - 1)))
  end
  i = i + 2 * n
  redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
  return new
end
for k = 1, nkeys do
  put(KEYS[k])
  redis.call('EXPIRE', KEYS[k], window)
end
for b = 1, nbuckets do
  added = added + put(KEYS[nkeys + b])
end
if count == 1 and added > 0 then
  redis.call('INCRBY', KEYS[nkeys + nbuckets + 1], added)
  redis.call('INCRBY', KEYS[nkeys + nbuckets + 2], added)
  redis.call('EXPIRE', KEYS[nkeys + nbuckets + 2], 120)
end
local ndur = tonumber(ARGV[i])
local maxdur = KEYS[nkeys + nbuckets + 3]
for d = 0, ndur - 1 do
  local cp, secs = ARGV[i + 1 + 2 * d], tonumber(ARGV[i + 2 + 2 * d])
  local old = tonumber(redis.call('HGET', maxdur, cp) or '0')
  if secs > old then redis.call('HSET', maxdur, cp, secs) end
end
return added
"""


# A check-out is at most a day after the check-in (tracing.events.ScanRecorded).
MAX_VISIT = timedelta(days=1)


def _visit(scan_id: str, person_key: str, checkpoint_id: str, t_in: float, t_out: str) -> Visit:
    return Visit(
        scan_id,
        person_key,
        checkpoint_id,
        datetime.fromtimestamp(t_in, UTC),
        datetime.fromtimestamp(int(t_out), UTC),
        "",
    )


def sync_twin(redis: Redis) -> SyncRedis:
    """A sync client to the same server: bulk writes run it in a worker thread, where its
    command packer is hiredis's (C), several times faster than redis.asyncio's."""
    kwargs = redis.connection_pool.connection_kwargs
    keep = ("host", "port", "db", "password", "username", "decode_responses", "ssl", "path")
    return SyncRedis(
        **{k: v for k, v in kwargs.items() if k in keep},
        socket_connect_timeout=5,
        socket_timeout=30,
        retry=SyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
    )


class VisitIndex:
    """The hot window of visits in Redis, written in pipelines (one round trip per batch)."""

    def __init__(self, redis: Redis, prefix: str, window: timedelta) -> None:
        self.r = redis
        self.p = prefix
        self.window_s = int(window.total_seconds())
        self._sync = sync_twin(redis)
        self._add_visits = self._sync.register_script(_ADD_VISITS)

    def _person(self, key: str) -> str:
        return f"{self.p}v:p:{key}"

    def _checkpoint(self, cp: str) -> str:
        return f"{self.p}v:c:{cp}"

    @property
    def _maxdur(self) -> str:
        return f"{self.p}v:maxdur"

    def _seen_bucket(self, scan_id: str) -> str:
        return f"{self.p}seen:{zlib.crc32(scan_id.encode()) % SEEN_BUCKETS}"

    async def unseen(self, scan_ids: Sequence[str]) -> list[bool]:
        """For each scan id: True when it has not been recorded yet (one ZMSCORE a bucket)."""
        if not scan_ids:
            return []
        by_bucket: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(scan_ids):
            by_bucket[self._seen_bucket(s)].append(i)
        async with self.r.pipeline(transaction=False) as pipe:
            for bucket, idx in by_bucket.items():
                pipe.zmscore(bucket, [scan_ids[i] for i in idx])
            found = await pipe.execute()
        fresh = [True] * len(scan_ids)
        for idx, scores in zip(by_bucket.values(), found, strict=True):
            for i, score in zip(idx, scores, strict=True):
                fresh[i] = score is None
        return fresh

    async def add(self, visits: Iterable[Visit], *, count: bool = True) -> int:
        """Index visits in slices of at most MAX_PER_SCRIPT: each slice is one atomic
        script, so Redis never blocks other clients (gate reads) for long."""
        batch = list(visits)
        added = 0
        for i in range(0, len(batch), MAX_PER_SCRIPT):
            added += await self._add(batch[i : i + MAX_PER_SCRIPT], count=count)
        return added

    async def _add(self, visits: Sequence[Visit], *, count: bool) -> int:
        """Index visits and mark their scans seen; returns how many were new.

        Idempotent and convergent: members carry the scan id, and the counters grow by
        what the seen-marks newly gained, counted inside Redis by the same atomic script,
        so a retry after a lost reply counts nothing twice. Each key is trimmed to the
        tracing window by event time on every write (its newest visit minus the window).
        """
        now = int(time.time())
        people: dict[str, dict[str, float]] = defaultdict(dict)
        places: dict[str, dict[str, float]] = defaultdict(dict)
        seen: dict[str, dict[str, float]] = defaultdict(dict)
        longest: dict[str, int] = {}
        for v in visits:
            t_in = v.t_in.timestamp()
            t_out = int(v.t_out.timestamp())
            stay = t_out - int(t_in) + 1
            if stay > longest.get(v.checkpoint_id, 0):
                longest[v.checkpoint_id] = stay
            people[self._person(v.person_key)][f"{v.scan_id}|{v.checkpoint_id}|{t_out}"] = t_in
            places[self._checkpoint(v.checkpoint_id)][f"{v.scan_id}|{v.person_key}|{t_out}"] = t_in
            seen[self._seen_bucket(v.scan_id)][v.scan_id] = t_in
        if not seen:
            return 0
        index = {**people, **places}
        keys = [
            *index,
            *seen,
            f"{self.p}stats:processed",
            f"{self.p}stats:sec:{now}",
            self._maxdur,
        ]
        args: list[str | float | int] = [len(index), len(seen), self.window_s, int(count)]
        for group in (index, seen):
            for members in group.values():
                args.append(len(members))
                args.append(f"({max(members.values()) - self.window_s}")
                for member, score in members.items():
                    args.append(score)
                    args.append(member)
        args.append(len(longest))
        for cp, stay in longest.items():
            args.append(cp)
            args.append(stay)
        return int(await asyncio.to_thread(self._add_visits, keys=keys, args=args))

    def close_sync(self) -> None:
        self._sync.close()

    async def _range(self, key: str, start: datetime, end: datetime) -> list[list[str]]:
        """[parts of the member..., t_in] of a key's visits that may overlap [start, end]:
        a visit lasts at most a day, so it began no earlier than a day before ``start``."""
        rows = await self.r.zrangebyscore(
            key, (start - MAX_VISIT).timestamp(), end.timestamp(), withscores=True
        )
        return [[*str(m).rsplit("|", 2), str(score)] for m, score in cast(list[Any], rows)]

    async def visits_of(self, person_key: str, start: datetime, end: datetime) -> list[Visit]:
        """A person's indexed visits that overlap [start, end] (hot window)."""
        rows = await self._range(self._person(person_key), start, end)
        visits = [_visit(s, person_key, cp, float(t_in), t_out) for s, cp, t_out, t_in in rows]
        return [v for v in visits if v.t_out > start]

    async def visits_at(self, checkpoint_id: str, start: datetime, end: datetime) -> list[Visit]:
        """The indexed visits at a checkpoint that overlap [start, end] (hot window)."""
        rows = await self._range(self._checkpoint(checkpoint_id), start, end)
        visits = [_visit(s, pk, checkpoint_id, float(t_in), t_out) for s, pk, t_out, t_in in rows]
        return [v for v in visits if v.t_out > start]

    async def visits_of_many(
        self, queries: Sequence[tuple[str, datetime, datetime]]
    ) -> list[list[Visit]]:
        """:meth:`visits_of` for many (person, start, end) in one round trip."""
        return await asyncio.to_thread(self._many_sync, queries, True)

    async def visits_at_many(
        self, queries: Sequence[tuple[str, datetime, datetime]]
    ) -> list[list[Visit]]:
        """:meth:`visits_at` for many (checkpoint, start, end): the longest visit seen at
        each checkpoint bounds how far back its range starts (a shop's is minutes, not
        the day any visit may last)."""
        return await asyncio.to_thread(self._many_sync, queries, False)

    async def count_at_many(self, queries: Sequence[tuple[str, datetime, datetime]]) -> list[int]:
        """For each (checkpoint, start, end): how many indexed visits there could overlap it
        (ZCOUNT over check-ins from the longest stay before start): an upper bound, with no
        visit read."""
        return await asyncio.to_thread(self._count_sync, queries)

    def _count_sync(self, queries: Sequence[tuple[str, datetime, datetime]]) -> list[int]:
        if not queries:
            return []
        names = sorted({q[0] for q in queries})
        longest = cast(list[Any], self._sync.hmget(self._maxdur, names))
        back = {n: float(d) for n, d in zip(names, longest, strict=True) if d}
        day = MAX_VISIT.total_seconds()
        out: list[int] = []
        for i in range(0, len(queries), 1000):
            pipe = self._sync.pipeline(transaction=False)
            for name, start, end in queries[i : i + 1000]:
                lookback = min(day, back.get(name, day))
                pipe.zcount(self._checkpoint(name), start.timestamp() - lookback, end.timestamp())
            out.extend(int(n) for n in cast(list[Any], pipe.execute()))
        return out

    def _many_sync(
        self, queries: Sequence[tuple[str, datetime, datetime]], person: bool
    ) -> list[list[Visit]]:
        """Bulk range reads on the sync client (hiredis parses the replies, several times
        faster than redis.asyncio), in bounded pipelines."""
        out: list[list[Visit]] = []
        back: dict[str, float] = {}
        if not person and queries:
            names = sorted({q[0] for q in queries})
            longest = cast(list[Any], self._sync.hmget(self._maxdur, names))
            back = {n: float(d) for n, d in zip(names, longest, strict=True) if d}
        day = MAX_VISIT.total_seconds()
        for i in range(0, len(queries), 1000):
            part = queries[i : i + 1000]
            pipe = self._sync.pipeline(transaction=False)
            for name, start, end in part:
                key = self._person(name) if person else self._checkpoint(name)
                lookback = day if person else min(day, back.get(name, day))
                pipe.zrangebyscore(
                    key, start.timestamp() - lookback, end.timestamp(), withscores=True
                )
            replies = cast(list[Any], pipe.execute())
            for (name, start, _), rows in zip(part, replies, strict=True):
                visits = []
                after = start.timestamp()
                for m, score in rows:
                    a, b, t_out = str(m).rsplit("|", 2)
                    if int(t_out) <= after:  # ended before the span: no object made
                        continue
                    if person:  # member: scan_id|checkpoint_id|t_out
                        visits.append(_visit(a, name, b, float(score), t_out))
                    else:  # member: scan_id|person_key|t_out
                        visits.append(_visit(a, b, name, float(score), t_out))
                out.append(visits)
        return out

    async def forget_before(self, cutoff: float) -> None:
        """Drop dedup marks older than the tracing window (called periodically)."""
        async with self.r.pipeline(transaction=False) as pipe:
            for b in range(SEEN_BUCKETS):
                pipe.zremrangebyscore(f"{self.p}seen:{b}", "-inf", cutoff)
            await pipe.execute()

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
                    members.add(str(m).split("|", 1)[0])
            totals.append(len(members))
        return totals[0], totals[1]


class CheckpointDirectory:
    """Checkpoint metadata (district, ward, type) for enriching visits and gate policies.

    Cached in process, bounded (LRU) and short-lived: a change made here invalidates the
    entry at once, one made by another process is seen within ``ttl`` seconds, and an
    unknown ID is remembered only briefly, so junk IDs cannot grow the cache."""

    def __init__(
        self, redis: Redis, prefix: str, *, max_entries: int = 100_000, ttl: float = 30.0
    ) -> None:
        self.r = redis
        self.p = prefix
        self.max_entries = max_entries
        self.ttl = ttl
        self._cache: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def _key(self, checkpoint_id: str) -> str:
        return f"{self.p}cp:{checkpoint_id}"

    async def put_many(self, checkpoints: Iterable[dict[str, str]]) -> int:
        """Write (or overwrite) checkpoints: bulk loads such as seeding."""
        n = 0
        async with self.r.pipeline(transaction=False) as pipe:
            for cp in checkpoints:
                pipe.hset(self._key(cp["checkpoint_id"]), mapping=dict(cp))  # type: ignore[arg-type]  # str values
                self._cache.pop(cp["checkpoint_id"], None)
                n += 1
            if n:
                await pipe.execute()
        return n

    async def create_many(self, rows: Sequence[dict[str, str]]) -> tuple[int, int, list[str]]:
        """Register new checkpoints only: (created, unchanged, conflicting IDs). An ID is
        claimed atomically (HSETNX), so two concurrent registrations cannot both win."""
        async with self.r.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.hsetnx(self._key(row["checkpoint_id"]), "checkpoint_id", row["checkpoint_id"])
            claimed = await pipe.execute()
        new = [row for row, won in zip(rows, claimed, strict=True) if won]
        await self.put_many(new)
        others = [row for row, won in zip(rows, claimed, strict=True) if not won]
        current = await self._fetch([row["checkpoint_id"] for row in others])
        unchanged, conflicts = 0, []
        for row, now in zip(others, current, strict=True):
            if all(now.get(k) == v for k, v in row.items()):
                unchanged += 1
            else:
                conflicts.append(row["checkpoint_id"])
        return len(new), unchanged, conflicts

    async def replace(self, checkpoint_id: str, row: dict[str, str]) -> dict[str, str] | None:
        """Overwrite a registered checkpoint; its fields before, or None when unknown."""
        (before,) = await self._fetch([checkpoint_id])
        if not before:
            return None
        await self.put_many([row])
        return before

    async def _fetch(self, ids: Sequence[str]) -> list[dict[str, str]]:
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self._key(i))
            return [f or {} for f in await pipe.execute()]

    async def lookup(self, ids: Iterable[str]) -> dict[str, dict[str, str]]:
        wanted = list(dict.fromkeys(ids))
        now = time.monotonic()
        out: dict[str, dict[str, str]] = {}
        missing = []
        for i in wanted:
            hit = self._cache.get(i)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(i)
                out[i] = hit[1]
            else:
                missing.append(i)
        for i, meta in zip(missing, await self._fetch(missing), strict=True):
            out[i] = meta
            # Unknown IDs are remembered briefly (a junk flood costs no lasting memory).
            self._cache[i] = (now + (self.ttl if meta else min(self.ttl, 2.0)), meta)
            self._cache.move_to_end(i)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return out
