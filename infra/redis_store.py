"""Redis adapters: the visit indexes (who was where, when), scan dedup and live counters;
and the one place that connects to Redis, a single server or a Redis Cluster.

Keys (all under ``Settings.redis_prefix``):
- ``v:p:<person_key>`` sorted set, score t_in, member ``scan_id|checkpoint_id|t_out``
- ``v:c:<checkpoint_id>`` sorted set, score t_in, member ``scan_id|person_key|t_out``
- ``v:maxdur:<n>`` (64 shards by checkpoint) sorted sets: checkpoint → its longest stay
- ``seen:{<n>}`` (64 buckets by scan id) sorted sets of recorded scan ids (dedup), trimmed
  to the tracing window, each with its share of the processed count in
  ``stats:processed:{<n>}`` (the same hash tag: one slot, so a mark and its count are
  written by one atomic script on a cluster too); ``stats:sec:<epoch>`` per-second counts
- ``cp:<checkpoint_id>`` hash: district, ward, type, capacity

**A Redis Cluster** (``REDIS_URL=redis+cluster://host:port,host:port,…``) takes a
multi-key operation (a script, MULTI/EXEC, MGET) only when all its keys hash to one slot.
Every multi-key operation of the stores keeps its keys in one slot with a hash tag (the
``{…}`` part of a key, after the prefix: a prefix must not contain braces, or every key
would share its slot), or is split into single-key idempotent steps where atomicity is
not needed (each such place says which). ``tests/unit/test_redis_slots.py`` checks the
tags; ``tests/integration/test_redis_cluster.py`` runs every store on a real cluster.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.crc import key_slot
from redis.retry import Retry as SyncRetry

from tracing.visits import Visit

# Dedup marks live in sorted sets (score = t_in) sharded by crc32(scan_id).
SEEN_BUCKETS = 64
# The longest stay per checkpoint, in sorted sets sharded by crc32(checkpoint_id).
MAXDUR_SHARDS = 64
# Visits per index script: a few milliseconds of Redis time each.
MAX_PER_SCRIPT = 1000
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# Connections per cluster node (a cluster client cannot wait for a free one, as the
# single server's blocking pool does: generous, so a burst of requests does not fail).
CLUSTER_MAX_CONNECTIONS = 1024


def cluster_nodes(url: str) -> list[tuple[str, int]] | None:
    """The seed nodes of a cluster URL (``redis+cluster://[user:pass@]h:p,h:p``); None
    for a single server's URL."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        return None
    hosts = parts.netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_URL: {item!r} is not host:port (a cluster seed)")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("REDIS_URL: a Redis Cluster has database 0 only")
    return nodes


def _credentials(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    return {
        "username": unquote(user) or None,
        "password": unquote(password) or None,
        "ssl": parts.scheme.startswith("rediss"),
    }


def is_cluster(client: object) -> bool:
    """Is this client (async or sync) a Redis Cluster client?"""
    return isinstance(client, AsyncRedisCluster | SyncRedisCluster)


def slot(key: str) -> int:
    """The cluster hash slot of a key (its ``{tag}`` when it has one)."""
    return key_slot(key.encode())


def make_redis(url: str) -> Redis:
    """A client that reconnects by itself: a restarted server costs a retry, not an error;
    a server that stops answering is a timeout, never a hang. A cluster URL gives a
    cluster client (typed as :class:`Redis`: it offers every command the stores use, and
    the cluster test runs each store on it)."""
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5)
    nodes = cluster_nodes(url)
    if nodes is not None:
        cluster = AsyncRedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes],
            decode_responses=True,
            max_connections=CLUSTER_MAX_CONNECTIONS,
            health_check_interval=30,
            socket_connect_timeout=5,
            socket_timeout=30,
            retry=retry,
            **_credentials(url),
        )
        return cast(Redis, cluster)
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
        retry=retry,
    )
    return Redis.from_pool(pool)  # closing the client closes its pool


def make_reader(url: str, socket_timeout: float) -> Redis:
    """A client of its own for blocking reads (XREAD … BLOCK): they never hold one of the
    shared pool's connections. On a cluster, a client with its own small pools (a read
    goes to the node of its key, and follows the key if it moves)."""
    nodes = cluster_nodes(url)
    if nodes is not None:
        cluster = AsyncRedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes],
            decode_responses=True,
            max_connections=4,
            socket_connect_timeout=5,
            socket_timeout=socket_timeout,
            **_credentials(url),
        )
        return cast(Redis, cluster)
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        single_connection_client=True,
    )


def queue_script(pipe: Any, script: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue a registered Lua script on a sync pipeline. A cluster pipeline refuses
    EVALSHA (redis-py cannot load scripts on its nodes first), so it gets the script's
    text (EVAL; Redis caches the compiled script by its digest)."""
    if isinstance(pipe, SyncRedisCluster):  # its pipelines are cluster clients too
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
    else:
        script(keys=keys, args=args, client=pipe)


async def queue_script_async(
    pipe: Any, script: Any, keys: Sequence[str], args: Sequence[Any]
) -> None:
    """:func:`queue_script` for redis.asyncio pipelines."""
    if isinstance(pipe, AsyncClusterPipeline):
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
    else:
        await script(keys=keys, args=args, client=pipe)


# One batch of visits, written inside Redis by one script on a single server (atomic like
# MULTI/EXEC, and one command to pack instead of three per key):
#   index keys: ZADD the visits, trim to the window by the key's newest event, EXPIRE;
#   seen buckets: ZADD the scan ids, count the newly added, trim by event time, and grow
#     the bucket's processed counter by what was newly added only (a replay counts
#     nothing); the per-second counter by the batch's total;
#   the longest visit per checkpoint (v:maxdur shards, ZADD GT): how far back a range
#     read must start.
# KEYS: index keys, then (bucket, its counter) pairs, then stats:sec:<now>, then the
# maxdur shards. ARGV: window, count (0/1), #index keys, #buckets, #shards, then per index
# key and bucket: n, the trim cutoff (exclusive: the key's newest event minus the window),
# n (score, member) pairs; then per shard: n and n (seconds, checkpoint) pairs.
_ADD_VISITS = """
local window, count = ARGV[1], tonumber(ARGV[2])
local nidx, nbuckets, nshards = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local i, k, added = 6, 1, 0
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
for _ = 1, nidx do
  put(KEYS[k])
  redis.call('EXPIRE', KEYS[k], window)
  k = k + 1
end
for _ = 1, nbuckets do
  local new = put(KEYS[k])
  if count == 1 and new > 0 then redis.call('INCRBY', KEYS[k + 1], new) end
  added = added + new
  k = k + 2
end
if count == 1 and added > 0 then
  redis.call('INCRBY', KEYS[k], added)
  redis.call('EXPIRE', KEYS[k], 120)
end
k = k + 1
for _ = 1, nshards do
  local n = tonumber(ARGV[i])
  if n > 0 then redis.call('ZADD', KEYS[k], 'GT', unpack(ARGV, i + 1, i + 2 * n)) end
  i = i + 1 + 2 * n
  k = k + 1
end
return added
"""

# On a cluster, one seen bucket and its counter (one slot, by their hash tag): ZADD the
# marks, trim by event time, count the newly added. KEYS: bucket, counter. ARGV: count
# (0/1), the trim cutoff, then (score, scan id) pairs.
_MARK_SEEN = """
local new = 0
for j = 3, #ARGV, 7000 do
  new = new + redis.call('ZADD', KEYS[1], unpack(ARGV, j, math.min(j + 6999, #ARGV)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if ARGV[1] == '1' and new > 0 then redis.call('INCRBY', KEYS[2], new) end
return new
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
    """A sync client to the same server (or cluster): bulk writes run it in a worker
    thread, where its command packer is hiredis's (C), several times faster than
    redis.asyncio's."""
    retry = SyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5)
    if isinstance(redis, AsyncRedisCluster):
        kw = redis.connection_kwargs
        cluster = SyncRedisCluster(
            startup_nodes=[SyncClusterNode(n.host, n.port) for n in redis.startup_nodes],
            decode_responses=bool(kw.get("decode_responses")),
            username=kw.get("username"),
            password=kw.get("password"),
            ssl=kw.get("connection_class") is SSLConnection,
            max_connections=CLUSTER_MAX_CONNECTIONS,
            socket_connect_timeout=5,
            socket_timeout=30,
            retry=retry,
        )
        return cast(SyncRedis, cluster)
    kwargs = redis.connection_pool.connection_kwargs
    keep = ("host", "port", "db", "password", "username", "decode_responses", "ssl", "path")
    return SyncRedis(
        **{k: v for k, v in kwargs.items() if k in keep},
        socket_connect_timeout=5,
        socket_timeout=30,
        retry=retry,
    )


def seen_bucket(scan_id: str) -> int:
    """The dedup bucket of a scan."""
    return zlib.crc32(scan_id.encode()) % SEEN_BUCKETS


def seen_keys(prefix: str, bucket: int) -> tuple[str, str]:
    """A dedup bucket and its processed counter: one hash tag, so one slot."""
    return f"{prefix}seen:{{{bucket}}}", f"{prefix}stats:processed:{{{bucket}}}"


def maxdur_key(prefix: str, checkpoint_id: str) -> str:
    """The shard holding a checkpoint's longest stay (only single-key commands touch it)."""
    return f"{prefix}v:maxdur:{zlib.crc32(checkpoint_id.encode()) % MAXDUR_SHARDS}"


class VisitIndex:
    """The hot window of visits in Redis, written in pipelines (one round trip per batch)."""

    def __init__(self, redis: Redis, prefix: str, window: timedelta) -> None:
        self.r = redis
        self.p = prefix
        self.window_s = int(window.total_seconds())
        self._sync = sync_twin(redis)
        self.cluster = is_cluster(redis)
        self._add_visits = self._sync.register_script(_ADD_VISITS)
        self._mark_seen = self._sync.register_script(_MARK_SEEN)

    def _person(self, key: str) -> str:
        return f"{self.p}v:p:{key}"

    def _checkpoint(self, cp: str) -> str:
        return f"{self.p}v:c:{cp}"

    def _seen_bucket(self, scan_id: str) -> str:
        return seen_keys(self.p, seen_bucket(scan_id))[0]

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
        what the seen-marks newly gained, counted inside Redis by the same atomic script
        as the marks, so a retry after a lost reply counts nothing twice. Each key is
        trimmed to the tracing window by event time on every write (its newest visit
        minus the window).
        """
        people: dict[str, dict[str, float]] = defaultdict(dict)
        places: dict[str, dict[str, float]] = defaultdict(dict)
        seen: dict[int, dict[str, float]] = defaultdict(dict)
        longest: dict[str, int] = {}
        for v in visits:
            t_in = v.t_in.timestamp()
            t_out = int(v.t_out.timestamp())
            stay = t_out - int(t_in) + 1
            if stay > longest.get(v.checkpoint_id, 0):
                longest[v.checkpoint_id] = stay
            people[self._person(v.person_key)][f"{v.scan_id}|{v.checkpoint_id}|{t_out}"] = t_in
            places[self._checkpoint(v.checkpoint_id)][f"{v.scan_id}|{v.person_key}|{t_out}"] = t_in
            seen[seen_bucket(v.scan_id)][v.scan_id] = t_in
        if not seen:
            return 0
        index = {**people, **places}
        shards: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for cp, stay in longest.items():
            shards[maxdur_key(self.p, cp)].append((stay, cp))
        write = self._write_cluster if self.cluster else self._write_one
        return await asyncio.to_thread(write, index, seen, shards, count)

    def _cutoff(self, members: dict[str, float]) -> str:
        return f"({max(members.values()) - self.window_s}"

    def _write_one(
        self,
        index: dict[str, dict[str, float]],
        seen: dict[int, dict[str, float]],
        shards: dict[str, list[tuple[int, str]]],
        count: bool,
    ) -> int:
        """A single server: the whole batch in one atomic script."""
        keys = [*index]
        for b in seen:
            keys.extend(seen_keys(self.p, b))
        keys.append(f"{self.p}stats:sec:{int(time.time())}")
        keys.extend(shards)
        args: list[str | float | int] = [
            self.window_s,
            int(count),
            len(index),
            len(seen),
            len(shards),
        ]
        for members in (*index.values(), *seen.values()):
            args.append(len(members))
            args.append(self._cutoff(members))
            for member, score in members.items():
                args.append(score)
                args.append(member)
        for pairs in shards.values():
            args.append(len(pairs))
            for stay, cp in pairs:
                args.append(stay)
                args.append(cp)
        return int(self._add_visits(keys=keys, args=args))

    def _write_cluster(
        self,
        index: dict[str, dict[str, float]],
        seen: dict[int, dict[str, float]],
        shards: dict[str, list[tuple[int, str]]],
        count: bool,
    ) -> int:
        """A cluster: the batch's keys live on every node, so it is written in three
        steps, each idempotent, in an order that keeps the invariants of the single
        script: (1) the index keys and the longest stays, as single-key commands; (2) once
        they are written, the seen marks with their counters, one atomic script per
        bucket (a mark and its count share a slot), so a scan is marked recorded only
        when it is indexed and a replay counts nothing twice; (3) the per-second rate
        counter, by what step 2 newly added (lost if the process dies right before it:
        it feeds a 10-second dashboard rate, not a count)."""
        pipe = self._sync.pipeline(transaction=False)
        for key, members in index.items():
            pipe.zadd(key, members)
            pipe.zremrangebyscore(key, "-inf", self._cutoff(members))
            pipe.expire(key, self.window_s)
        for key, pairs in shards.items():
            pipe.zadd(key, {cp: stay for stay, cp in pairs}, gt=True)
        pipe.execute()
        pipe = self._sync.pipeline(transaction=False)
        for b, members in seen.items():
            args: list[str | float | int] = [int(count), self._cutoff(members)]
            for member, score in members.items():
                args.append(score)
                args.append(member)
            queue_script(pipe, self._mark_seen, seen_keys(self.p, b), args)
        added = sum(int(n) for n in cast(list[Any], pipe.execute()))
        if count and added:
            pipe = self._sync.pipeline(transaction=False)
            second = f"{self.p}stats:sec:{int(time.time())}"
            pipe.incrby(second, added)
            pipe.expire(second, 120)
            pipe.execute()
        return added

    def _longest_sync(self, names: Sequence[str]) -> dict[str, float]:
        """The longest stay seen at each checkpoint (those with any)."""
        by_shard: dict[str, list[str]] = defaultdict(list)
        for name in sorted(set(names)):
            by_shard[maxdur_key(self.p, name)].append(name)
        if not by_shard:
            return {}
        pipe = self._sync.pipeline(transaction=False)
        for key, members in by_shard.items():
            pipe.zmscore(key, members)
        found = cast(list[Any], pipe.execute())
        out: dict[str, float] = {}
        for members, scores in zip(by_shard.values(), found, strict=True):
            for name, score in zip(members, scores, strict=True):
                if score:
                    out[name] = float(score)
        return out

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
        back = self._longest_sync([q[0] for q in queries])
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
            back = self._longest_sync([q[0] for q in queries])
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
                pipe.zremrangebyscore(seen_keys(self.p, b)[0], "-inf", cutoff)
            await pipe.execute()

    async def _sum(self, keys: Sequence[str]) -> int:
        """The sum of counters (GETs in a pipeline: on a cluster they live on every node,
        where one MGET could not read them)."""
        async with self.r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            values = await pipe.execute()
        return sum(int(v or 0) for v in values)

    async def processed(self) -> int:
        """Scans recorded (all workers): the sum of the dedup buckets' counters."""
        return await self._sum([seen_keys(self.p, b)[1] for b in range(SEEN_BUCKETS)])

    async def rate(self, seconds: int = 10) -> float:
        """Scans recorded per second over the last ``seconds`` whole seconds."""
        now = int(time.time())
        keys = [f"{self.p}stats:sec:{t}" for t in range(now - seconds, now)]
        return await self._sum(keys) / seconds

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
