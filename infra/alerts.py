"""Alerts in Redis: a stream per audience, a hash per alert, indexes by status.

Keys (under ``Settings.redis_prefix``; a scope is ``d:<district>`` or ``o:<organisation>``;
everything of one audience carries the scope as its hash tag, so it lives in one slot of a
Redis Cluster and each change is one atomic script there too):
- ``alerts:{<scope>}`` stream (``alerts:{d:Ba Đình}``): every change to the scope's alerts
  (flagged, updated, withdrawn, acknowledged, followup), capped at :data:`STREAM_MAXLEN`;
  its entry IDs are the SSE event IDs and the webhooks' cursors;
- ``alert:{<scope>}:<id>`` hash (alert_id, kind, scope, status, version, body, fp, score,
  created_at, updated_at, last_event), ``…:log`` its history (JSON lines), ``…:fp`` the
  decisions already applied (so a replayed Kafka batch adds nothing);
- ``alerts:i:{<scope>}:<status>`` sorted set of alert IDs by event time (the lists);
- ``alert:at:<id>`` the scope the alert lives in (written once its change is stored:
  reads by ID start here; an alert that moves audience is withdrawn in the old scope,
  flagged in the new one, then pointed there);
- ``alerts:rv:<report_id>`` the venue alerts a report may have raised (written before
  them: a superset, read through the pointers).

Each change is one Lua script: the stream entry, the hash, the indexes and the dedup mark
are written together or not at all, so a crash never leaves an alert sent twice or
half-written. Everything expires :data:`RETENTION` after its last change, and the indexes
are trimmed by event time.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from infra.redis_store import make_reader, queue_script_async
from tracing.alerts import STATUSES, AlertDraft, Status
from tracing.reports import REPORT_RETENTION

STREAM_MAXLEN = 100_000  # per audience; a reader further behind is told of the gap
RETENTION = REPORT_RETENTION
HISTORY_MAX = 500  # entries kept per alert

_APPLY = """
local h, fps, logk, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local idx = {open=KEYS[5], acknowledged=KEYS[6], closed=KEYS[7], withdrawn=KEYS[8]}
local fp, mode, ttl = ARGV[6], ARGV[7], tonumber(ARGV[12])
if mode == 'seen' then
  if redis.call('SISMEMBER', fps, fp) == 1 then return false end
elseif redis.call('HGET', h, 'fp') == fp then
  return false
end
local function mark()
  if mode == 'seen' then
    redis.call('SADD', fps, fp)
    redis.call('EXPIRE', fps, ttl)
  end
end
local status = redis.call('HGET', h, 'status')
local version = tonumber(ARGV[5])
local current = tonumber(redis.call('HGET', h, 'version') or '-1')
if version < current then mark() return false end
local change, new
if ARGV[4] == '1' then
  if (not status) or status == 'withdrawn' then mark() return false end
  change, new = 'withdrawn', 'withdrawn'
elseif status and status ~= 'withdrawn' then
  change, new = 'updated', status
else
  change, new = 'flagged', 'open'
end
local body = ARGV[8]
if body == '' then body = redis.call('HGET', h, 'body') or '{}' end
local id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[11], '*',
  'alert_id', ARGV[1], 'kind', ARGV[2], 'change', change, 'status', new,
  'body', body, 'at', ARGV[14])
local score = redis.call('HGET', h, 'score') or ARGV[10]
if version < current then version = current end
redis.call('HSET', h, 'alert_id', ARGV[1], 'kind', ARGV[2], 'scope', ARGV[3],
  'status', new, 'version', string.format('%d', version), 'body', body, 'fp', fp,
  'updated_at', ARGV[14], 'last_event', id, 'score', score)
redis.call('HSETNX', h, 'created_at', ARGV[14])
if status and status ~= new then redis.call('ZREM', idx[status], ARGV[1]) end
redis.call('ZADD', idx[new], score, ARGV[1])
for _, k in pairs(idx) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. ARGV[13])
  redis.call('EXPIRE', k, ttl)
end
redis.call('RPUSH', logk, cjson.encode({change=change, status=new, at=ARGV[14],
  by='dancu', event_id=id}))
redis.call('LTRIM', logk, -tonumber(ARGV[15]), -1)
mark()
redis.call('EXPIRE', h, ttl)
redis.call('EXPIRE', logk, ttl)
redis.call('EXPIRE', stream, ttl)
return id
"""

_STEP = """
local h, logk, stream = KEYS[1], KEYS[2], KEYS[3]
local idx = {open=KEYS[4], acknowledged=KEYS[5], closed=KEYS[6], withdrawn=KEYS[7]}
local status = redis.call('HGET', h, 'status')
if not status then return {0, ''} end
if status ~= ARGV[2] then return {1, status} end
redis.call('RPUSH', logk, ARGV[9])
redis.call('LTRIM', logk, -tonumber(ARGV[10]), -1)
redis.call('EXPIRE', logk, ARGV[8])
local body = redis.call('HGET', h, 'body') or '{}'
local kind = redis.call('HGET', h, 'kind') or ''
local id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[7], '*',
  'alert_id', ARGV[1], 'kind', kind, 'change', ARGV[4], 'status', ARGV[3],
  'body', body, 'detail', ARGV[5], 'at', ARGV[6])
if ARGV[3] ~= status then
  local score = redis.call('HGET', h, 'score') or '0'
  redis.call('ZREM', idx[status], ARGV[1])
  redis.call('ZADD', idx[ARGV[3]], score, ARGV[1])
end
redis.call('HSET', h, 'status', ARGV[3], 'updated_at', ARGV[6], 'last_event', id)
redis.call('EXPIRE', h, ARGV[8])
return {2, id}
"""


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One entry of an audience's stream: what happened to which alert."""

    event_id: str
    alert_id: str
    kind: str
    change: str
    status: str
    body: dict[str, Any]
    at: str
    detail: dict[str, Any] | None = None


def event_from(entry_id: str | bytes, fields: Mapping[Any, Any]) -> AlertEvent:
    f = {_s(k): _s(v) for k, v in fields.items()}
    return AlertEvent(
        event_id=_s(entry_id),
        alert_id=f.get("alert_id", ""),
        kind=f.get("kind", ""),
        change=f.get("change", ""),
        status=f.get("status", ""),
        body=orjson.loads(f.get("body") or "{}"),
        at=f.get("at", ""),
        detail=orjson.loads(f["detail"]) if f.get("detail") else None,
    )


@dataclass
class Alert:
    """An alert as stored: its latest body and where it stands."""

    alert_id: str
    kind: str
    scope: str
    status: str
    body: dict[str, Any]
    created_at: str
    updated_at: str
    last_event: str
    history: list[dict[str, Any]] = field(default_factory=list)


def _alert(fields: Mapping[Any, Any]) -> Alert | None:
    f = {_s(k): _s(v) for k, v in fields.items()}
    if not f.get("status"):
        return None
    return Alert(
        alert_id=f.get("alert_id", ""),
        kind=f.get("kind", ""),
        scope=f.get("scope", ""),
        status=f["status"],
        body=orjson.loads(f.get("body") or "{}"),
        created_at=f.get("created_at", ""),
        updated_at=f.get("updated_at", ""),
        last_event=f.get("last_event", ""),
    )


def scope_stream(prefix: str, scope: str) -> str:
    return f"{prefix}alerts:{{{scope}}}"


def alert_hash(prefix: str, scope: str, alert_id: str) -> str:
    return f"{prefix}alert:{{{scope}}}:{alert_id}"


def status_index(prefix: str, scope: str, status: str) -> str:
    return f"{prefix}alerts:i:{{{scope}}}:{status}"


def change_keys(prefix: str, scope: str, alert_id: str) -> list[str]:
    """The keys one change of an alert touches: its hash, dedup marks and history, the
    scope's stream and status indexes. One hash tag (the scope), so one slot."""
    h = alert_hash(prefix, scope, alert_id)
    indexes = [status_index(prefix, scope, s) for s in STATUSES]
    return [h, f"{h}:fp", f"{h}:log", scope_stream(prefix, scope), *indexes]


class StepRaced(Exception):
    """The alert changed between the read and the write (the caller reads again)."""


class AlertStore:
    def __init__(self, redis: Redis, prefix: str, redis_url: str) -> None:
        self.r = redis
        self.p = prefix
        self.url = redis_url
        self._apply = redis.register_script(_APPLY)
        self._step = redis.register_script(_STEP)

    # Keys ---------------------------------------------------------------------------------
    def stream_key(self, scope: str) -> str:
        return scope_stream(self.p, scope)

    def _hash(self, scope: str, alert_id: str) -> str:
        return alert_hash(self.p, scope, alert_id)

    def _index(self, scope: str, status: str) -> str:
        return status_index(self.p, scope, status)

    def _indexes(self, scope: str) -> list[str]:
        return [self._index(scope, s) for s in STATUSES]

    def _where(self, alert_id: str) -> str:
        return f"{self.p}alert:at:{alert_id}"

    def _venues(self, report_id: str) -> str:
        return f"{self.p}alerts:rv:{report_id}"

    # The agent's writes -------------------------------------------------------------------
    async def scopes_of(self, alert_ids: Sequence[str]) -> dict[str, str]:
        """The scope each existing alert lives in."""
        async with self.r.pipeline(transaction=False) as pipe:
            for a in alert_ids:
                pipe.get(self._where(a))
            found = await pipe.execute()
        return {a: _s(s) for a, s in zip(alert_ids, found, strict=True) if s}

    async def apply(self, drafts: Sequence[AlertDraft], report_id: str = "") -> list[str]:
        """Write each change (in order); returns the stream IDs of those that changed
        something (a decision seen before, or a withdrawal of nothing, adds none). With
        ``report_id``, the alerts are remembered as that report's venue alerts.

        Three round trips, each step idempotent: the report's venue list (a superset),
        the changes (one script each, in the scope's slot), then the pointers to where
        each alert lives, once its changes are stored. A batch cut short anywhere is
        completed by its replay: a moved alert still points to its old scope until both
        the withdrawal there and the flag here are written."""
        if not drafts:
            return []
        ttl = int(RETENTION.total_seconds())
        if report_id:
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.sadd(self._venues(report_id), *sorted({d.alert_id for d in drafts}))
                pipe.expire(self._venues(report_id), ttl)
                await pipe.execute()
        moved = await self.scopes_of(sorted({d.alert_id for d in drafts}))
        now = datetime.now(UTC).isoformat()
        async with self.r.pipeline(transaction=False) as pipe:
            for d in drafts:
                old = moved.get(d.alert_id)
                if old is None and not d.scope:
                    continue  # a withdrawal of an alert never raised (or long expired)
                if old is not None and old != d.scope and not d.withdrawn:
                    # The person moved district (or the place changed hands): the old
                    # audience sees it withdrawn, the new one sees it flagged.
                    await self._call(pipe, _moved_out(d, old), now)
                    moved[d.alert_id] = d.scope
                elif old is None:
                    moved[d.alert_id] = d.scope
                await self._call(pipe, d if old is None or not d.withdrawn else _in(d, old), now)
            results = await pipe.execute()
        async with self.r.pipeline(transaction=False) as pipe:
            for alert_id, scope in moved.items():
                pipe.set(self._where(alert_id), scope, ex=ttl)
            await pipe.execute()
        return [_s(r) for r in results if r]

    async def _call(self, pipe: Any, d: AlertDraft, now: str) -> None:
        score = int(d.at.timestamp() * 1000)
        keys = change_keys(self.p, d.scope, d.alert_id)
        args = [
            d.alert_id,
            d.kind,
            d.scope,
            "1" if d.withdrawn else "0",
            d.version,
            d.fingerprint,
            "seen" if d.kind == "exposure" else "current",
            orjson.dumps(dict(d.body)).decode() if d.body else "",
            d.at.isoformat(),
            score,
            STREAM_MAXLEN,
            int(RETENTION.total_seconds()),
            score - int(RETENTION.total_seconds() * 1000),
            now,
            HISTORY_MAX,
        ]
        await queue_script_async(pipe, self._apply, keys, args)  # queued on the pipeline

    async def venue_alerts_of(self, report_id: str) -> dict[str, str]:
        """The venue alerts a report raised: alert ID → scope."""
        ids = sorted(_s(a) for a in await self.r.smembers(self._venues(report_id)))  # type: ignore[misc]
        return await self.scopes_of(ids)

    # Officials' steps ---------------------------------------------------------------------
    async def step(
        self,
        alert: Alert,
        new_status: str,
        change: str,
        entry: Mapping[str, object],
    ) -> str:
        """Record an official's step (history, stream entry, status) if the alert is still
        as read; raises :class:`StepRaced` when it changed meanwhile, KeyError when gone."""
        now = datetime.now(UTC).isoformat()
        detail = orjson.dumps({**entry, "at": now}).decode()
        h, _, log, *scope_keys = change_keys(self.p, alert.scope, alert.alert_id)
        code, value = await self._step(
            keys=[h, log, *scope_keys],
            args=[
                alert.alert_id,
                alert.status,
                new_status,
                change,
                detail,
                now,
                STREAM_MAXLEN,
                int(RETENTION.total_seconds()),
                orjson.dumps({"change": change, "status": new_status, **entry, "at": now}).decode(),
                HISTORY_MAX,
            ],
        )
        if int(code) == 0:
            raise KeyError(alert.alert_id)
        if int(code) == 1:
            raise StepRaced(_s(value))
        # the pointer lives as long as the alert it points to
        await self.r.expire(self._where(alert.alert_id), int(RETENTION.total_seconds()))
        return _s(value)

    # Reads --------------------------------------------------------------------------------
    async def get(self, alert_id: str, history: bool = False) -> Alert | None:
        scope = await self.r.get(self._where(alert_id))
        if scope is None:
            return None
        h = self._hash(_s(scope), alert_id)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(h)
            pipe.lrange(f"{h}:log", 0, -1)
            fields, log = await pipe.execute()
        found = _alert(fields or {})
        if found is not None and history:
            found.history = [orjson.loads(x) for x in log]
        return found

    async def in_status(self, scope: str, status: Status, limit: int) -> list[Alert]:
        """The newest ``limit`` alerts of a scope in one status (by event time)."""
        index = self._index(scope, status)
        newest: Any = await self.r.zrevrange(index, 0, limit - 1)
        ids = [_s(i) for i in newest]
        async with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self._hash(scope, i))
            rows = await pipe.execute()
        found = [_alert(r or {}) for r in rows]
        # Expired by age: dropped from this index too.
        gone = [i for i, a in zip(ids, found, strict=True) if a is None or a.scope != scope]
        if gone:
            await self.r.zrem(index, *gone)
        return [a for a in found if a is not None and a.scope == scope]

    async def counts(self, scope: str) -> dict[str, int]:
        async with self.r.pipeline(transaction=False) as pipe:
            for s in STATUSES:
                pipe.zcard(self._index(scope, s))
            found = await pipe.execute()
        return {s: int(n) for s, n in zip(STATUSES, found, strict=True)}

    async def last_id(self, scope: str) -> str:
        """The newest entry's ID of a scope's stream ("0-0" when empty): where a reader
        that wants only what comes next starts."""
        newest: Any = await self.r.xrevrange(self.stream_key(scope), count=1)
        return _s(newest[0][0]) if newest else "0-0"

    async def kept_from(self, scope: str) -> str | None:
        """The oldest entry still kept, when older ones were trimmed (None: nothing was)."""
        try:
            info: Any = await self.r.xinfo_stream(self.stream_key(scope))
        except ResponseError:  # no such stream yet
            return None
        if int(info.get("entries-added", 0)) <= int(info.get("length", 0)):
            return None
        first = info.get("first-entry")
        return _s(first[0]) if first else _s(info.get("last-generated-id", "0-0"))

    async def after(self, scope: str, event_id: str, count: int = 100) -> list[AlertEvent]:
        """The entries after ``event_id`` (exclusive), oldest first."""
        found: Any = await self.r.xrange(self.stream_key(scope), min=f"({event_id}", count=count)
        return [event_from(i, f) for i, f in found]

    @contextlib.asynccontextmanager
    async def reader(self, block: timedelta) -> AsyncIterator[AlertReader]:
        """A reader on a connection of its own: its blocking reads never hold one of the
        shared pool's connections, nor wait behind other commands."""
        conn = make_reader(self.url, block.total_seconds() + 10)
        try:
            yield AlertReader(conn, self, int(block.total_seconds() * 1000))
        finally:
            with contextlib.suppress(Exception):
                await conn.aclose()


class AlertReader:
    def __init__(self, conn: Redis, store: AlertStore, block_ms: int) -> None:
        self.conn = conn
        self.store = store
        self.block_ms = block_ms

    async def next(self, scope: str, after: str, count: int = 100) -> list[AlertEvent]:
        """Entries after ``after``, waiting up to the block time for the first one
        ([] when none came)."""
        found = await self.conn.xread(
            {self.store.stream_key(scope): after}, count=count, block=self.block_ms
        )
        if not found:
            return []
        _, entries = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], found)[0]
        return [event_from(i, f) for i, f in entries]


def _moved_out(d: AlertDraft, old_scope: str) -> AlertDraft:
    return AlertDraft(
        d.alert_id, d.kind, old_scope, True, d.version, d.fingerprint + ":moved", d.at, {}
    )


def _in(d: AlertDraft, scope: str) -> AlertDraft:
    """A withdrawal goes to the audience the alert lives in."""
    return AlertDraft(d.alert_id, d.kind, scope, True, d.version, d.fingerprint, d.at, d.body)
