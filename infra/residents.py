"""The registry in Redis (identity + health + status, one hash per resident, readable by
ID for gate answers) and its pseudonymous copy in ClickHouse (analytics)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from infra.clickhouse import ClickHouse

RESIDENT_COLUMNS = [
    "person_key",
    "household_key",
    "district",
    "ward",
    "gender",
    "birth_year",
    "has_address",
    "doses",
    "colour",
    "rule_version",
    "source",
    "updated_at",
]
CHECKPOINT_COLUMNS = ["checkpoint_id", "name", "type", "district", "ward", "capacity", "updated_at"]


class ResidentStore:
    """Residents in Redis. Bulk paths use the sync client in a worker thread: its command
    packer is hiredis's (C), several times faster than redis.asyncio's pure-Python one."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.r = redis
        self.p = prefix
        kwargs = dict(redis.connection_pool.connection_kwargs)
        kwargs.pop("health_check_interval", None)
        self._sync = SyncRedis(
            **{
                k: v
                for k, v in kwargs.items()
                if k
                in ("host", "port", "db", "password", "username", "decode_responses", "ssl", "path")
            }
        )

    def key(self, person_id: str) -> str:
        return f"{self.p}r:{person_id}"

    def put_many_sync(self, rows: Iterable[dict[str, str]], chunk: int = 5000) -> int:
        n = 0
        pipe = self._sync.pipeline(transaction=False)
        for row in rows:
            pipe.hset(self.key(row["id"]), mapping=row)  # type: ignore[arg-type]  # str map
            n += 1
            if n % chunk == 0:
                pipe.execute()
        pipe.execute()
        return n

    async def put_many(self, rows: Sequence[dict[str, str]]) -> int:
        return await asyncio.to_thread(self.put_many_sync, rows)

    def close_sync(self) -> None:
        self._sync.close()

    def identities_sync(self, ids: Sequence[str]) -> list[tuple[str, str] | None]:
        pipe = self._sync.pipeline(transaction=False)
        for i in ids:
            pipe.hmget(self.key(i), ["name", "dob"])
        out: list[tuple[str, str] | None] = []
        for name, dob in pipe.execute():
            out.append(None if name is None or dob is None else (_s(name), _s(dob)))
        return out

    async def get_identities(self, ids: Sequence[str]) -> list[tuple[str, str] | None]:
        """(name, dob) of each ID in the registry, None when unknown."""
        if not ids:
            return []
        return await asyncio.to_thread(self.identities_sync, ids)

    async def get(self, person_id: str) -> dict[str, str] | None:
        fields = await self.r.hgetall(self.key(person_id))  # type: ignore[misc]
        return {_s(k): _s(v) for k, v in fields.items()} or None

    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]:
        async with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self.key(i))
            found = await pipe.execute()
        return [f or None for f in found]

    async def update_many(self, updates: dict[str, dict[str, str]]) -> None:
        if not updates:
            return
        async with self.r.pipeline(transaction=True) as pipe:
            for person_id, fields in updates.items():
                pipe.hset(self.key(person_id), mapping=fields)  # type: ignore[arg-type]
            await pipe.execute()


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def resident_row(
    fields: dict[str, str], pseudonymize: Any, source: str, now: datetime | None = None
) -> list[object]:
    """The ClickHouse row of a resident: pseudonymous keys, no ID number, no name."""
    return [
        pseudonymize(fields["id"]),
        pseudonymize("household:" + fields.get("household", "")),
        fields.get("district", ""),
        fields.get("ward", ""),
        fields.get("gender", ""),
        int(fields["dob"][:4]) if fields.get("dob") else 0,
        1 if fields.get("address") else 0,
        len(json.loads(fields.get("doses") or "[]")),
        fields.get("colour", "none"),
        fields.get("rule_version", ""),
        source,
        now or datetime.now(UTC),
    ]


def insert_residents(ch: ClickHouse, rows: Sequence[Sequence[object]]) -> None:
    if rows:
        ch.call(lambda c: c.insert(f"{ch.db}.residents", list(rows), column_names=RESIDENT_COLUMNS))


def insert_checkpoints(ch: ClickHouse, rows: Sequence[Sequence[object]]) -> None:
    if rows:
        ch.call(
            lambda c: c.insert(f"{ch.db}.checkpoints", list(rows), column_names=CHECKPOINT_COLUMNS)
        )
