"""Tracing state in Redis, and candidate visits beyond the hot window from ClickHouse.

Keys (under ``Settings.redis_prefix``):
- ``rep:<report_id>`` hash: ``state`` (JSON), ``x`` (its exposures), ``f0v`` (the F0's
  visits in the window), ``iv`` (the infectious intervals it registered)
- ``reps`` sorted set of report IDs by ``reported_at``; ``rep:by:<person_key>`` the
  reports about one person
- ``inf:c:{c<n>}:<checkpoint_id>`` sorted set of infectious intervals there (score
  t_in), with ``inf:cps:{c<n>}`` the set of checkpoints that have any (64 shards by
  checkpoint: a directory shard and its members' keys share a hash tag, so the prune's
  check-and-remove is one atomic script on a cluster too); ``inf:p:{p<n>}:<person_key>``
  the active reports an infectious person belongs to, with ``inf:people:{p<n>}`` the set
  of such people. The scan stream is joined against these (:meth:`TracingStore.touched`).

On a Redis Cluster a report's hash, the report index and a person's reports live in
different slots: the writes that span them are single-key idempotent steps, ordered so
that a step cut short leaves nothing a reader trusts (each method says how).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from infra.clickhouse import ClickHouse, as_utc
from infra.redis_store import VisitIndex, queue_script_async
from tracing.exposure import Exposure, ExposureRules, Interval, spends
from tracing.reports import (
    ReportState,
    dump_exposures,
    dump_visits,
    interval_from,
    interval_member,
    load_exposures,
    load_visits,
)
from tracing.visits import Visit

# A visit lasts at most a day (tracing.events.ScanRecorded), so an interval that could
# overlap a visit began at most a day before it.
MAX_VISIT = timedelta(days=1)

_log = logging.getLogger(__name__)


# A candidate query: (person key or checkpoint ID, start, end).
Query = tuple[str, datetime, datetime]
# An infectious person of a report, and their window: (person_key, start, end).
Infectious = tuple[str, datetime, datetime]


def _person_member(report_id: str, start: datetime, end: datetime) -> str:
    return f"{report_id}|{start.timestamp():.0f}|{end.timestamp():.0f}"


def _from_ts(text: str) -> datetime:
    return datetime.fromtimestamp(float(text), UTC)


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


INF_SHARDS = 64  # directory shards of the infectious checkpoints and people
_DIRECTORY = {"c": "cps", "p": "people"}


def _shard(prefix: str, kind: str, n: int) -> tuple[str, str]:
    """(directory shard, its members' key prefix) of shard ``n`` of ``kind`` (c or p):
    one hash tag, so a directory shard and its members' keys share one slot."""
    tag = f"{{{kind}{n}}}"
    return f"{prefix}inf:{_DIRECTORY[kind]}:{tag}", f"{prefix}inf:{kind}:{tag}:"


def interval_keys(prefix: str, checkpoint_id: str) -> tuple[str, str]:
    """(directory shard, interval key) of a checkpoint."""
    directory, stem = _shard(prefix, "c", zlib.crc32(checkpoint_id.encode()) % INF_SHARDS)
    return directory, stem + checkpoint_id


def infectious_keys(prefix: str, person_key: str) -> tuple[str, str]:
    """(directory shard, reports key) of an infectious person."""
    directory, stem = _shard(prefix, "p", zlib.crc32(person_key.encode()) % INF_SHARDS)
    return directory, stem + person_key


def directory_shards(prefix: str) -> list[tuple[str, str]]:
    """Every (directory shard, its members' key prefix): what the prune walks."""
    return [_shard(prefix, kind, n) for kind in _DIRECTORY for n in range(INF_SHARDS)]


class TracingStore:
    def __init__(self, redis: Redis, prefix: str, window: timedelta) -> None:
        self.r = redis
        self.p = prefix
        self.window_s = int(window.total_seconds())
        self._prune = redis.register_script(_PRUNE)

    def _rep(self, report_id: str) -> str:
        return f"{self.p}rep:{report_id}"

    # Reports ----------------------------------------------------------------------------
    async def get(self, report_id: str) -> ReportState | None:
        raw = await self.r.hget(self._rep(report_id), "state")  # type: ignore[misc]
        return ReportState.from_json(raw) if raw else None

    async def save(
        self,
        state: ReportState,
        exposures: Sequence[Exposure] | None = None,
        *,
        pending: Sequence[Exposure] | None = None,
        f0_visits: Sequence[Visit] | None = None,
    ) -> None:
        """The state, and (when given) the applied exposures, the pending ones of a held
        report, the F0's visits in the window: one atomic write."""
        fields: dict[str, str | bytes] = {"state": state.to_json()}
        if exposures is not None:
            fields["x"] = dump_exposures(exposures)
        if pending is not None:
            fields["pending"] = dump_exposures(pending)
        if f0_visits is not None:
            fields["f0v"] = dump_visits(f0_visits)
        reported = datetime.fromisoformat(str(state.body["reported_at"])).timestamp()
        # The hash is atomic by itself; the two indexes are idempotent adds in other
        # slots (a cluster), and a reader skips an index entry whose state is missing.
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(self._rep(state.report_id), mapping=fields)  # type: ignore[arg-type]
            pipe.zadd(f"{self.p}reps", {state.report_id: reported})
            pipe.sadd(f"{self.p}rep:by:{state.person_key}", state.report_id)
            await pipe.execute()

    async def submit(self, report_id: str, body: dict[str, object]) -> int:
        """An API submission (POST/PUT): numbered, kept beside the tracer's state (which
        only the tracer writes), so a read can tell it is still being traced."""
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hincrby(self._rep(report_id), "seq", 1)
            pipe.hset(self._rep(report_id), "submitted", orjson.dumps(body))
            seq, _ = await pipe.execute()
        return int(seq)

    async def submitted(self, report_id: str) -> tuple[int, dict[str, object]] | None:
        seq, body = await self.r.hmget(self._rep(report_id), ["seq", "submitted"])  # type: ignore[misc]
        return (int(seq), orjson.loads(body)) if seq and body else None

    async def forget_person(self, state: ReportState, person_key: str) -> None:
        """A corrected report names another person: it no longer belongs to this one."""
        await self.r.srem(f"{self.p}rep:by:{person_key}", state.report_id)  # type: ignore[misc]

    async def exposures(self, report_id: str) -> list[Exposure]:
        return load_exposures(await self.r.hget(self._rep(report_id), "x"))  # type: ignore[misc]

    async def pending(self, report_id: str) -> list[Exposure]:
        """A held report's exposures, waiting for approval."""
        return load_exposures(await self.r.hget(self._rep(report_id), "pending"))  # type: ignore[misc]

    async def f0_visits(self, report_id: str) -> list[Visit]:
        """The F0's visits in the window, as the last trace saw them."""
        return load_visits(await self.r.hget(self._rep(report_id), "f0v"))  # type: ignore[misc]

    async def reports_of(self, person_key: str) -> list[str]:
        return sorted(_s(m) for m in await self.r.smembers(f"{self.p}rep:by:{person_key}"))  # type: ignore[misc]

    async def recent(
        self, since: datetime
    ) -> list[tuple[ReportState, list[Exposure], list[Visit]]]:
        """Reports since a time (by reported_at), with their exposures and F0 visits."""
        ids = await self.r.zrangebyscore(f"{self.p}reps", since.timestamp(), "+inf")
        out = []
        async with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(self._rep(_s(cast(str, i))), ["state", "x", "f0v"])
            rows = await pipe.execute()
        for state, x, f0v in rows:
            if state:
                out.append((ReportState.from_json(state), load_exposures(x), load_visits(f0v)))
        return out

    async def states(self, since: datetime) -> list[ReportState]:
        """The states alone of the reports since a time (by reported_at): without their
        exposures and visits, which can weigh megabytes."""
        ids = await self.r.zrangebyscore(f"{self.p}reps", since.timestamp(), "+inf")
        async with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hget(self._rep(_s(cast(str, i))), "state")
            rows = await pipe.execute()
        return [ReportState.from_json(state) for state in rows if state]

    # Infectious intervals (the join) ----------------------------------------------------
    async def register(
        self, report_id: str, intervals: Sequence[Interval], people: Sequence[Infectious]
    ) -> None:
        """Make intervals and infectious people joinable: written *before* the trace reads
        its candidates, so a scan indexed meanwhile is seen by one side or the other.

        Two steps, not one MULTI (the keys span slots on a cluster): first the report's
        record of what it registered (a superset: :meth:`unregister` removes what is
        there), then each key before its directory shard (same slot, so in that order:
        the prune never sees a directory entry without its key). The join's guarantee
        needs only that this completes before the trace reads; every write is an
        idempotent add, so a replay completes a register cut short."""
        if not intervals and not people:
            return
        by_cp: dict[str, dict[str, float]] = defaultdict(dict)
        for i in intervals:
            by_cp[i.checkpoint_id][interval_member(i)] = i.t_in.timestamp()
        registered = sorted(
            set(await self._registered(report_id))
            | {f"c|{i.checkpoint_id}|{interval_member(i)}" for i in intervals}
            | {f"p|{p}|{_person_member(report_id, a, b)}" for p, a, b in people}
        )
        await self.r.hset(self._rep(report_id), "iv", orjson.dumps(registered))  # type: ignore[misc]
        async with self.r.pipeline(transaction=False) as pipe:
            for cp, members in by_cp.items():
                directory, key = interval_keys(self.p, cp)
                pipe.zadd(key, members)
                pipe.zremrangebyscore(key, "-inf", f"({max(members.values()) - self.window_s}")
                pipe.expire(key, self.window_s)
                pipe.sadd(directory, cp)
            for person, start, end in people:
                directory, key = infectious_keys(self.p, person)
                pipe.sadd(key, _person_member(report_id, start, end))
                pipe.expire(key, self.window_s)
                pipe.sadd(directory, person)
            await pipe.execute()

    async def _registered(self, report_id: str) -> list[str]:
        raw = await self.r.hget(self._rep(report_id), "iv")  # type: ignore[misc]
        return list(orjson.loads(raw)) if raw else []

    async def unregister(
        self,
        report_id: str,
        keep: Sequence[Interval] = (),
        keep_people: Sequence[Infectious] = (),
    ) -> None:
        """Remove what a report registered, except what its new trace still holds: the
        entries first (idempotent removals, in their own slots), then the report's record
        of them, which so stays a superset of what is registered."""
        kept = {f"c|{i.checkpoint_id}|{interval_member(i)}" for i in keep} | {
            f"p|{p}|{_person_member(report_id, a, b)}" for p, a, b in keep_people
        }
        old = await self._registered(report_id)
        gone = [m for m in old if m not in kept]
        if not gone:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            for m in gone:
                kind, rest = m.split("|", 1)
                if kind == "c":
                    cp, member = rest.split("|", 1)
                    pipe.zrem(interval_keys(self.p, cp)[1], member)
                else:
                    person, member = rest.split("|", 1)
                    pipe.srem(infectious_keys(self.p, person)[1], member)
            await pipe.execute()
        left = orjson.dumps(sorted(set(old) - set(gone)))
        await self.r.hset(self._rep(report_id), "iv", left)  # type: ignore[misc]

    async def touched(
        self, visits: Sequence[Visit], rules: ExposureRules
    ) -> list[tuple[str, Visit]]:
        """(report_id, visit) for each newly indexed visit that touches an infectious
        interval at its checkpoint, or that belongs to an infectious person: the scan
        stream joined against the active intervals. Two set lookups for a batch; the
        intervals themselves are read only for the checkpoints that have some."""
        if not visits:
            return []
        by_shard: dict[str, list[str]] = defaultdict(list)
        for cp in sorted({v.checkpoint_id for v in visits}):
            by_shard[interval_keys(self.p, cp)[0]].append(cp)
        people_by_shard: dict[str, list[str]] = defaultdict(list)
        for person in sorted({v.person_key for v in visits}):
            people_by_shard[infectious_keys(self.p, person)[0]].append(person)
        async with self.r.pipeline(transaction=False) as pipe:
            for directory, members in (*by_shard.items(), *people_by_shard.items()):
                pipe.smismember(directory, members)  # type: ignore[arg-type]
            hits: list[Any] = await pipe.execute()
        asked = [m for group in (*by_shard.values(), *people_by_shard.values()) for m in group]
        flags = [bool(h) for found_in_shard in hits for h in found_in_shard]
        n_cps = sum(len(g) for g in by_shard.values())
        hot_cps = {c for c, hit in zip(asked[:n_cps], flags[:n_cps], strict=True) if hit}
        infectious = [p for p, hit in zip(asked[n_cps:], flags[n_cps:], strict=True) if hit]
        if not hot_cps and not infectious:
            return []
        wanted = [v for v in visits if v.checkpoint_id in hot_cps]
        async with self.r.pipeline(transaction=False) as pipe:
            for v in wanted:
                pipe.zrangebyscore(
                    interval_keys(self.p, v.checkpoint_id)[1],
                    (v.t_in - MAX_VISIT).timestamp(),
                    v.t_out.timestamp(),
                )
            for p in infectious:
                pipe.smembers(infectious_keys(self.p, p)[1])
            found: list[Any] = await pipe.execute()
        out: set[tuple[str, Visit]] = set()
        for v, members in zip(wanted, found[: len(wanted)], strict=True):
            for m in members:
                interval = interval_from(m)
                if interval.touches(v, rules):
                    out.add((interval.report_id, v))
        reports = dict(zip(infectious, found[len(wanted) :], strict=True))
        for v in visits:
            for member in reports.get(v.person_key, ()):
                report_id, start, end = _s(member).rsplit("|", 2)
                if spends(v, _from_ts(start), _from_ts(end), rules):
                    out.add((report_id, v))
        return sorted(out, key=lambda pair: (pair[0], pair[1].t_in, pair[1].scan_id))

    async def expired(self, retention: timedelta) -> list[ReportState]:
        """Reports older than ``retention`` before the newest report (event time)."""
        newest = await self.r.zrevrange(f"{self.p}reps", 0, 0, withscores=True)
        if not newest:
            return []
        cutoff = float(newest[0][1]) - retention.total_seconds()
        ids = [
            _s(cast(str, i))
            for i in await self.r.zrangebyscore(
                f"{self.p}reps", "-inf", f"({cutoff}", start=0, num=500
            )
        ]
        states = [await self.get(i) for i in ids]
        # An entry whose report is gone (a drop cut short after deleting it) goes too.
        orphans = [i for i, state in zip(ids, states, strict=True) if state is None]
        if orphans:
            await self.r.zrem(f"{self.p}reps", *orphans)
        return [s for s in states if s is not None]

    async def drop(self, state: ReportState) -> None:
        """Forget a report entirely (after :meth:`expired`, once its people are cleared).
        Single-key steps (the keys span slots on a cluster), the report index last: a
        drop cut short is found again by :meth:`expired`, which finishes it."""
        await self.unregister(state.report_id)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.srem(f"{self.p}rep:by:{state.person_key}", state.report_id)
            pipe.delete(self._rep(state.report_id))
            await pipe.execute()
        await self.r.zrem(f"{self.p}reps", state.report_id)

    async def prune(self) -> int:
        """Drop directory entries whose intervals expired (by event time, or their TTL);
        returns how many. Each check-and-remove is one script over a directory shard and
        its members' keys (one slot), so a registration in between is never undone."""
        shards = directory_shards(self.p)
        async with self.r.pipeline(transaction=False) as pipe:
            for directory, _ in shards:
                pipe.smembers(directory)
            found: list[Any] = await pipe.execute()
        gone = 0
        async with self.r.pipeline(transaction=False) as pipe:
            queued = False
            for (directory, stem), members in zip(shards, found, strict=True):
                names = sorted(_s(m) for m in members)
                for i in range(0, len(names), 1000):
                    part = names[i : i + 1000]
                    keys = [directory, *(stem + m for m in part)]
                    await queue_script_async(pipe, self._prune, keys, part)
                    queued = True
            if queued:
                gone = sum(int(n) for n in await pipe.execute())
        return gone


# KEYS[1]: a directory shard; KEYS[j + 1]: the own key of member ARGV[j] (one slot).
_PRUNE = """
local gone = 0
for j = 1, #ARGV do
  if redis.call('EXISTS', KEYS[j + 1]) == 0 then
    redis.call('SREM', KEYS[1], ARGV[j])
    gone = gone + 1
  end
end
return gone
"""


class ClickHouseCandidates:
    """Candidate visits from ClickHouse (beyond the hot window kept in Redis)."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.ch = clickhouse

    def _query(self, where: str, params: dict[str, object]) -> list[Visit]:
        sql = (
            "SELECT scan_id, any(person_key), any(checkpoint_id), any(t_in), any(t_out) "
            f"FROM {self.ch.db}.visits WHERE {where} AND t_in >= %(lo)s AND t_in <= %(end)s "
            "AND t_out > %(start)s GROUP BY scan_id"
        )
        rows = self.ch.call(lambda c: list(c.query(sql, parameters=params).result_rows))
        return [Visit(r[0], r[1], r[2], as_utc(r[3]), as_utc(r[4]), "") for r in rows]

    async def visits_of(self, person_key: str, start: datetime, end: datetime) -> list[Visit]:
        params = {"k": person_key, "lo": start - MAX_VISIT, "start": start, "end": end}
        return await asyncio.to_thread(self._query, "person_key = %(k)s", params)

    async def visits_at(self, checkpoint_id: str, start: datetime, end: datetime) -> list[Visit]:
        params = {"c": checkpoint_id, "lo": start - MAX_VISIT, "start": start, "end": end}
        return await asyncio.to_thread(self._query, "checkpoint_id = %(c)s", params)

    async def visits_of_many(self, queries: Sequence[Query]) -> list[list[Visit]]:
        return [await self.visits_of(*q) for q in queries]

    async def visits_at_many(self, queries: Sequence[Query]) -> list[list[Visit]]:
        return [await self.visits_at(*q) for q in queries]


class TieredCandidates:
    """Redis for spans inside the hot window, ClickHouse (which holds every visit) for
    spans reaching beyond it. Which store answers depends on the clock; the answer does
    not (both hold the same visits for the hot window)."""

    def __init__(
        self, hot: VisitIndex, cold: ClickHouseCandidates | None, window: timedelta
    ) -> None:
        self.hot = hot
        self.cold = cold
        # A margin: the index is trimmed by each key's newest event, a little behind now.
        self.window = window - timedelta(hours=1)
        self._warned = -1e9

    def _cold(self, start: datetime) -> bool:
        beyond = start - MAX_VISIT < datetime.now(UTC) - self.window
        if beyond and self.cold is None and time.monotonic() - self._warned > 600:
            self._warned = time.monotonic()  # once in ten minutes, not once a lookup
            _log.warning(
                "a trace reaches back to %s, before the %d-day hot window, and this worker "
                "cannot read ClickHouse (embedded chDB belongs to the store's process): "
                "visits older than the window are not traced; run ClickHouse as a server "
                "(CLICKHOUSE_URL) or raise DANCU_VISIT_WINDOW_DAYS",
                start.isoformat(timespec="minutes"),
                (self.window + timedelta(hours=1)).days,
            )
        return self.cold is not None and beyond

    async def visits_of(self, person_key: str, start: datetime, end: datetime) -> list[Visit]:
        if self._cold(start):
            assert self.cold is not None
            return await self.cold.visits_of(person_key, start, end)
        return await self.hot.visits_of(person_key, start, end)

    async def visits_at(self, checkpoint_id: str, start: datetime, end: datetime) -> list[Visit]:
        if self._cold(start):
            assert self.cold is not None
            return await self.cold.visits_at(checkpoint_id, start, end)
        return await self.hot.visits_at(checkpoint_id, start, end)

    async def visits_of_many(self, queries: Sequence[Query]) -> list[list[Visit]]:
        if self.cold is not None and any(self._cold(q[1]) for q in queries):
            return await self.cold.visits_of_many(queries)
        return await self.hot.visits_of_many(queries)

    async def visits_at_many(self, queries: Sequence[Query]) -> list[list[Visit]]:
        if self.cold is not None and any(self._cold(q[1]) for q in queries):
            return await self.cold.visits_at_many(queries)
        return await self.hot.visits_at_many(queries)

    async def count_at_many(self, queries: Sequence[Query]) -> list[int]:
        """Upper bounds of visits (hot window only; beyond it, "unknown": a huge bound)."""
        if self.cold is not None and any(self._cold(q[1]) for q in queries):
            return [1 << 40 for _ in queries]
        return await self.hot.count_at_many(queries)
