"""The registry in Redis (identity + health + status, one hash per resident, readable by
ID for gate answers) and its pseudonymous copy in ClickHouse (analytics)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from infra.clickhouse import ClickHouse
from infra.redis_store import sync_twin
from registry.rebuild import PastRecord
from registry.residents import ANALYTICS_COLUMNS, IDENTITY_FIELDS, Identity
from tracing.events import HealthRecordImported

HEALTH_RECORD_COLUMNS = [
    "person_key",
    "record_id",
    "kind",
    "record",
    "supersedes",
    "import_id",
    "applied_at",
]


def health_record_row(
    e: HealthRecordImported, pseudonymize: Callable[[str], str], now: datetime
) -> list[object]:
    """The ``health_records`` row of an applied record (columns in
    :data:`HEALTH_RECORD_COLUMNS`): pseudonymous, identity fields left out."""
    return [
        pseudonymize(e.person_id),
        # keyed: the plain natural key hashes the ID number with guessable fields
        pseudonymize("record:" + e.record_id),
        e.kind,
        orjson.dumps({k: v for k, v in e.record.items() if k not in IDENTITY_FIELDS}).decode(),
        int(e.supersedes),
        e.import_id,
        now,
    ]


CHECKPOINT_COLUMNS = [
    "checkpoint_id",
    "name",
    "type",
    "district",
    "ward",
    "capacity",
    "owner",
    "updated_at",
]


class ResidentStore:
    """Residents in Redis. Bulk paths use the sync client in a worker thread: its command
    packer is hiredis's (C), several times faster than redis.asyncio's pure-Python one.

    Beside each resident's hash (``r:<id>``) it keeps what tracing needs to go from the
    pseudonymous visit indexes back to people: ``pk:<key[:4]>`` hashes (pseudonym → ID,
    small enough for Redis's compact encoding) and ``hh:<household_id>`` sets of IDs."""

    def __init__(
        self, redis: Redis, prefix: str, pseudonymize: Callable[[str], str] | None = None
    ) -> None:
        self.r = redis
        self.p = prefix
        self.pseudonymize = pseudonymize
        self._sync = sync_twin(redis)

    def key(self, person_id: str) -> str:
        return f"{self.p}r:{person_id}"

    def _pk(self, person_key: str) -> str:
        return f"{self.p}pk:{person_key[:4]}"

    def _household(self, household_id: str) -> str:
        return f"{self.p}hh:{household_id}"

    def put_many_sync(self, rows: Iterable[dict[str, str]], chunk: int = 5000) -> int:
        n = 0
        pipe = self._sync.pipeline(transaction=False)
        for row in rows:
            pipe.hset(self.key(row["id"]), mapping=row)  # type: ignore[arg-type]  # str map
            if self.pseudonymize is not None:
                pipe.hset(self._pk(key := self.pseudonymize(row["id"])), key, row["id"])
            if row.get("household"):
                pipe.sadd(self._household(row["household"]), row["id"])
            n += 1
            if n % chunk == 0:
                pipe.execute()
        pipe.execute()
        return n

    def _bulk(self, build: Callable[[Any], None]) -> list[Any]:
        pipe = self._sync.pipeline(transaction=False)
        build(pipe)
        return list(pipe.execute())

    async def index_people(self, chunk: int = 5000) -> int:
        """(Re)build the pseudonym → ID map and the household sets from the residents'
        hashes (a registry loaded before they existed, or after a loss); idempotent."""
        assert self.pseudonymize is not None, "indexing people needs the pseudonymizer"
        pseudonymize = self.pseudonymize
        n = 0
        async for ids in self.chunks_of_ids(chunk):

            def write(ids: list[str] = ids) -> None:
                pipe = self._sync.pipeline(transaction=False)
                for i in ids:
                    pipe.hget(self.key(i), "household")
                homes = pipe.execute()
                pipe = self._sync.pipeline(transaction=False)
                for i, home in zip(ids, homes, strict=True):
                    pipe.hset(self._pk(key := pseudonymize(i)), key, i)
                    if home:
                        pipe.sadd(self._household(_s(home)), i)
                pipe.execute()

            await asyncio.to_thread(write)
            n += len(ids)
        return n

    async def ids_of(self, person_keys: Sequence[str]) -> dict[str, str]:
        """The IDs behind pseudonyms (those of people in the registry): bulk reads on the
        sync client (hiredis) in a thread."""
        if not person_keys:
            return {}

        def build(pipe: Any) -> None:
            for k in person_keys:
                pipe.hget(self._pk(k), k)

        found = await asyncio.to_thread(self._bulk, build)
        return {k: _s(i) for k, i in zip(person_keys, found, strict=True) if i}

    async def household_of(self, person_id: str) -> list[str]:
        """Everyone registered in the person's household (themselves included), checked
        against each member's current household (a move leaves a stale set entry)."""
        household = await self.r.hget(self.key(person_id), "household")  # type: ignore[misc]
        if not household:
            return [person_id]
        members = sorted(_s(m) for m in await self.r.smembers(self._household(_s(household))))  # type: ignore[misc]
        async with self.r.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.hget(self.key(m), "household")
            current = await pipe.execute()
        return [m for m, h in zip(members, current, strict=True) if h and _s(h) == _s(household)]

    async def districts_of(self, ids: Sequence[str]) -> dict[str, str]:
        def build(pipe: Any) -> None:
            for i in ids:
                pipe.hget(self.key(i), "district")

        found = await asyncio.to_thread(self._bulk, build) if ids else []
        return {i: _s(d) if d else "" for i, d in zip(ids, found, strict=True)}

    async def set_fields(self, changes: dict[str, dict[str, str | None]]) -> None:
        """Set (or, for None, remove) fields of existing residents' hashes: one field per
        report, so two reports touching one person never overwrite each other."""
        if not changes:
            return

        def write() -> None:
            pipe = self._sync.pipeline(transaction=False)  # each command stands alone
            for person_id, fields in changes.items():
                put = {k: v for k, v in fields.items() if v is not None}
                drop = [k for k, v in fields.items() if v is None]
                if put:
                    pipe.hset(self.key(person_id), mapping=put)  # type: ignore[arg-type]
                if drop:
                    pipe.hdel(self.key(person_id), *drop)
            pipe.execute()

        await asyncio.to_thread(write)

    async def put_many(self, rows: Sequence[dict[str, str]]) -> int:
        return await asyncio.to_thread(self.put_many_sync, rows)

    def close_sync(self) -> None:
        self._sync.close()

    def identities_sync(self, ids: Sequence[str]) -> list[Identity | None]:
        pipe = self._sync.pipeline(transaction=False)
        for i in ids:
            pipe.hmget(self.key(i), ["name", "dob", "aliases"])
        out: list[Identity | None] = []
        for name, dob, aliases in pipe.execute():
            if name is None or dob is None:
                out.append(None)
                continue
            out.append(
                Identity(
                    _s(name),
                    date.fromisoformat(_s(dob)),
                    frozenset(orjson.loads(aliases)) if aliases else frozenset(),
                )
            )
        return out

    async def get_identities(self, ids: Sequence[str]) -> list[Identity | None]:
        """Name, birth date and accepted aliases of each ID, None when unknown."""
        if not ids:
            return []
        return await asyncio.to_thread(self.identities_sync, ids)

    async def add_alias(self, person_id: str, alias: str) -> None:
        key = self.key(person_id)
        raw = await self.r.hget(key, "aliases")  # type: ignore[misc]
        aliases = set(orjson.loads(raw)) if raw else set()
        if alias not in aliases:
            aliases.add(alias)
            await self.r.hset(key, "aliases", orjson.dumps(sorted(aliases)).decode())  # type: ignore[misc]

    async def chunks_of_ids(self, size: int) -> AsyncIterator[list[str]]:
        """Every resident ID in the registry, in chunks (a SCAN: no long block of Redis)."""
        chunk: list[str] = []
        start = len(self.key(""))
        async for key in self.r.scan_iter(match=self.key("*"), count=size):
            chunk.append(_s(key)[start:])
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def get(self, person_id: str) -> dict[str, str] | None:
        fields = await self.r.hgetall(self.key(person_id))  # type: ignore[misc]
        return {_s(k): _s(v) for k, v in fields.items()} or None

    async def get_audited(
        self, person_id: str, entry: tuple[str, dict[str, str], int]
    ) -> dict[str, str] | None:
        """A resident's record, and the audit entry of this read, in one round trip."""
        stream, fields, maxlen = entry
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key(person_id))
            pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            found, _ = await pipe.execute()
        return {_s(k): _s(v) for k, v in found.items()} or None

    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]:
        async with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self.key(i))
            found = await pipe.execute()
        return [f or None for f in found]

    async def update_many(self, updates: dict[str, dict[str, str]]) -> None:
        """Write changed fields. The districts' lists of residents waiting for a test
        follow: flagged (a symptomatic declaration, or one naming contact with an F0) →
        on the list; a test result newer than the flag → off it; flags older than
        :data:`TESTING_DAYS` leave it too (bounded)."""
        if not updates:
            return
        touched = [
            p
            for p, f in updates.items()
            if f.get("test_needed_since") or f.get("neg_test_at") or f.get("f0_since")
        ]
        known: dict[str, dict[str, str]] = {}
        if touched:

            def build(pipe: Any) -> None:
                for i in touched:
                    pipe.hmget(self.key(i), TESTING_FIELDS)

            found = await asyncio.to_thread(self._bulk, build)
            for pid, values in zip(touched, found, strict=True):
                fields = {k: _s(v) for k, v in zip(TESTING_FIELDS, values, strict=True) if v}
                known[pid] = {
                    **fields,
                    **{k: v for k, v in updates[pid].items() if k in TESTING_FIELDS},
                }
        horizon = (datetime.now(UTC) - timedelta(days=TESTING_DAYS)).timestamp()
        # Not MULTI/EXEC: residents and districts' lists live in different slots on a
        # cluster. Each command stands alone and is idempotent (the fields, and the list
        # entries derived from them), so a batch cut short is completed by its replay; a
        # reader of a list checks each person's record anyway.
        async with self.r.pipeline(transaction=False) as pipe:
            for person_id, fields in updates.items():
                pipe.hset(self.key(person_id), mapping=fields)  # type: ignore[arg-type]
            for person_id, f in known.items():
                key = self.testing_key(f.get("district", ""))
                since = f.get("test_needed_since")
                tested = max(f.get("neg_test_at") or "", f.get("f0_since") or "")
                if since and (not tested or _ts(tested) < _ts(since)):
                    pipe.zadd(key, {person_id: _ts(since)})
                else:
                    pipe.zrem(key, person_id)
                pipe.zremrangebyscore(key, "-inf", horizon)
            await pipe.execute()

    def testing_key(self, district: str) -> str:
        return f"{self.p}testing:{district}"

    async def flagged_for_testing(self, district: str, limit: int = 1000) -> list[str]:
        """The district's residents flagged for testing, newest first (some may have been
        tested since: the caller checks their record)."""
        found = await self.r.zrevrange(self.testing_key(district), 0, limit - 1)
        return [_s(cast(str | bytes, x)) for x in found]

    async def tested(self, district: str, ids: Sequence[str]) -> None:
        """Residents tested since they were flagged leave the district's list."""
        if ids:
            await self.r.zrem(self.testing_key(district), *ids)


TESTING_FIELDS = ("district", "test_needed_since", "neg_test_at", "f0_since")
TESTING_DAYS = 30  # a flag older than this is no longer a list to work through


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ClickHouseRegistry:
    """The pseudonymous registry in ClickHouse (``residents``, ``checkpoints``), the adapter
    behind :class:`registry.ports.RegistryAnalytics`; blocking calls run in a thread."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.ch = clickhouse

    def _insert(self, table: str, rows: Sequence[Sequence[object]], columns: Sequence[str]) -> None:
        ch = self.ch
        ch.call(lambda c: c.insert(f"{ch.db}.{table}", list(rows), column_names=list(columns)))

    async def insert_residents(self, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            await asyncio.to_thread(self._insert, "residents", rows, ANALYTICS_COLUMNS)

    async def insert_checkpoints(self, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            await asyncio.to_thread(self._insert, "checkpoints", rows, CHECKPOINT_COLUMNS)

    async def insert_health_records(self, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            await asyncio.to_thread(self._insert, "health_records", rows, HEALTH_RECORD_COLUMNS)

    async def records_of(self, person_keys: Sequence[str]) -> dict[str, list[PastRecord]]:
        """Each person's applied health records, oldest first (the history port)."""
        if not person_keys:
            return {}
        sql = (
            "SELECT person_key, record_id, kind, record, supersedes "
            f"FROM {self.ch.db}.health_records FINAL WHERE person_key IN %(keys)s "
            "ORDER BY person_key, applied_at, record_id"
        )
        keys = list(person_keys)
        rows = await asyncio.to_thread(
            self.ch.call,
            lambda c: list(c.query(sql, parameters={"keys": keys}).result_rows),
        )
        out: dict[str, list[PastRecord]] = {}
        for key, record_id, kind, record, supersedes in rows:
            out.setdefault(str(key), []).append(
                PastRecord(str(record_id), str(kind), orjson.loads(record), bool(supersedes))
            )
        return out

    async def all_checkpoints(self) -> list[dict[str, str]]:
        rows = await asyncio.to_thread(
            self._query,
            f"SELECT {', '.join(CHECKPOINT_COLUMNS[:-1])} FROM {self.ch.db}.checkpoints FINAL",
        )
        return [
            {k: str(v) for k, v in zip(CHECKPOINT_COLUMNS[:-1], row, strict=True)} for row in rows
        ]

    def _query(self, sql: str) -> list[Any]:
        return self.ch.call(lambda c: list(c.query(sql).result_rows))

    async def completeness(self) -> list[tuple[str, int, int, int]]:
        """(district, residents, vaccinated, with an address) per district."""
        rows = await asyncio.to_thread(
            self._query,
            "SELECT district, count(), countIf(doses > 0), countIf(has_address = 1) "
            f"FROM {self.ch.db}.residents FINAL GROUP BY district ORDER BY district",
        )
        return [(str(d), int(n), int(v), int(a)) for d, n, v, a in rows]

    async def colours(self) -> dict[str, int]:
        rows = await asyncio.to_thread(
            self._query, f"SELECT colour, count() FROM {self.ch.db}.residents FINAL GROUP BY colour"
        )
        return {str(k): int(v) for k, v in rows}
