"""Tracing state in Redis, and candidate visits beyond the hot window from ClickHouse.

Keys (under ``Settings.redis_prefix``):
- ``rep:<report_id>`` hash: ``state`` (JSON), ``x`` (its exposures), ``f0v`` (the F0's
  visits in the window), ``iv`` (the infectious intervals it registered)
- ``reps`` sorted set of report IDs by ``reported_at``; ``rep:by:<person_key>`` the
  reports about one person
- ``inf:c:<checkpoint_id>`` sorted set of infectious intervals there (score t_in), with
  ``inf:cps`` the set of checkpoints that have any; ``inf:p:<person_key>`` the active
  reports an infectious person belongs to, with ``inf:people`` the set of such people.
  The scan stream is joined against these (:meth:`TracingStore.touched`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from infra.clickhouse import ClickHouse, as_utc
from infra.redis_store import VisitIndex
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


class TracingStore:
    def __init__(self, redis: Redis, prefix: str, window: timedelta) -> None:
        self.r = redis
        self.p = prefix
        self.window_s = int(window.total_seconds())

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
        async with self.r.pipeline(transaction=True) as pipe:
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
        its candidates, so a scan indexed meanwhile is seen by one side or the other."""
        if not intervals and not people:
            return
        by_cp: dict[str, dict[str, float]] = defaultdict(dict)
        for i in intervals:
            by_cp[i.checkpoint_id][interval_member(i)] = i.t_in.timestamp()
        async with self.r.pipeline(transaction=True) as pipe:
            for cp, members in by_cp.items():
                key = f"{self.p}inf:c:{cp}"
                pipe.zadd(key, members)
                pipe.zremrangebyscore(key, "-inf", f"({max(members.values()) - self.window_s}")
                pipe.expire(key, self.window_s)
                pipe.sadd(f"{self.p}inf:cps", cp)
            for person, start, end in people:
                pipe.sadd(f"{self.p}inf:p:{person}", _person_member(report_id, start, end))
                pipe.expire(f"{self.p}inf:p:{person}", self.window_s)
                pipe.sadd(f"{self.p}inf:people", person)
            pipe.hset(
                self._rep(report_id),
                "iv",
                orjson.dumps(
                    sorted(
                        set(await self._registered(report_id))
                        | {f"c|{i.checkpoint_id}|{interval_member(i)}" for i in intervals}
                        | {f"p|{p}|{_person_member(report_id, a, b)}" for p, a, b in people}
                    )
                ),
            )
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
        """Remove what a report registered, except what its new trace still holds."""
        kept = {f"c|{i.checkpoint_id}|{interval_member(i)}" for i in keep} | {
            f"p|{p}|{_person_member(report_id, a, b)}" for p, a, b in keep_people
        }
        old = await self._registered(report_id)
        gone = [m for m in old if m not in kept]
        if not gone:
            return
        async with self.r.pipeline(transaction=True) as pipe:
            for m in gone:
                kind, rest = m.split("|", 1)
                if kind == "c":
                    cp, member = rest.split("|", 1)
                    pipe.zrem(f"{self.p}inf:c:{cp}", member)
                else:
                    person, member = rest.split("|", 1)
                    pipe.srem(f"{self.p}inf:p:{person}", member)
            pipe.hset(self._rep(report_id), "iv", orjson.dumps(sorted(set(old) - set(gone))))
            await pipe.execute()

    async def touched(
        self, visits: Sequence[Visit], rules: ExposureRules
    ) -> list[tuple[str, Visit]]:
        """(report_id, visit) for each newly indexed visit that touches an infectious
        interval at its checkpoint, or that belongs to an infectious person: the scan
        stream joined against the active intervals. Two set lookups for a batch; the
        intervals themselves are read only for the checkpoints that have some."""
        if not visits:
            return []
        cps = sorted({v.checkpoint_id for v in visits})
        people = sorted({v.person_key for v in visits})
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.smismember(f"{self.p}inf:cps", cps)  # type: ignore[arg-type]
            pipe.smismember(f"{self.p}inf:people", people)  # type: ignore[arg-type]
            hot_cp, hot_people = await pipe.execute()
        hot_cps = [c for c, hit in zip(cps, hot_cp, strict=True) if hit]
        infectious = [p for p, hit in zip(people, hot_people, strict=True) if hit]
        if not hot_cps and not infectious:
            return []
        wanted = [v for v in visits if v.checkpoint_id in set(hot_cps)]
        async with self.r.pipeline(transaction=False) as pipe:
            for v in wanted:
                pipe.zrangebyscore(
                    f"{self.p}inf:c:{v.checkpoint_id}",
                    (v.t_in - MAX_VISIT).timestamp(),
                    v.t_out.timestamp(),
                )
            for p in infectious:
                pipe.smembers(f"{self.p}inf:p:{p}")
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
        ids = await self.r.zrangebyscore(f"{self.p}reps", "-inf", f"({cutoff}", start=0, num=500)
        states = [await self.get(_s(cast(str, i))) for i in ids]
        return [s for s in states if s is not None]

    async def drop(self, state: ReportState) -> None:
        """Forget a report entirely (after :meth:`expired`, once its people are cleared)."""
        await self.unregister(state.report_id)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self._rep(state.report_id))
            pipe.zrem(f"{self.p}reps", state.report_id)
            pipe.srem(f"{self.p}rep:by:{state.person_key}", state.report_id)
            await pipe.execute()

    async def prune(self) -> None:
        """Drop set entries whose intervals expired (by event time, or their TTL): each
        check-and-remove is atomic, so a registration in between is never undone."""
        for name, pattern in (("inf:cps", "inf:c:"), ("inf:people", "inf:p:")):
            await self.r.eval(_PRUNE, 1, f"{self.p}{name}", f"{self.p}{pattern}")  # type: ignore[misc]


# KEYS[1]: an index set; ARGV[1]: the key prefix of its members' own keys.
_PRUNE = """
local gone = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. m) == 0 then
    redis.call('SREM', KEYS[1], m)
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

    def _cold(self, start: datetime) -> bool:
        return self.cold is not None and start - MAX_VISIT < datetime.now(UTC) - self.window

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
