"""The audit log's long-term home: entries are appended to a capped Redis stream on the
request path (fast, bounded), and drained in order into ClickHouse ``audit_log`` (all of
them, for as long as the law asks). The drained position is kept in Redis, after the
insert: a crash re-drains a few entries, which collapse by their stream ID."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from redis.asyncio import Redis

from infra.clickhouse import ClickHouse

log = logging.getLogger(__name__)
AUDIT_COLUMNS = [
    "entry_id",
    "at",
    "actor",
    "role",
    "route",
    "action",
    "person_key",
    "people",
    "people_count",
    "subject",
    "why",
]


def _after(entry_id: str, other: str) -> bool:
    """Is stream ID ``entry_id`` later than ``other``?"""
    a, _, b = entry_id.partition("-")
    c, _, d = other.partition("-")
    return (int(a), int(b or 0)) > (int(c), int(d or 0))


class AuditDrain:
    def __init__(self, redis: Redis, prefix: str, clickhouse: ClickHouse, batch: int = 5000):
        self.r = redis
        self.stream = f"{prefix}audit"
        self.position = f"{prefix}audit:drained"
        self.ch = clickhouse
        self.batch = batch

    async def drain_once(self) -> int:
        """Move the next entries into ClickHouse, then trim what is drained from the
        stream (so its cap only bites when the store has been away long); returns how
        many. A gap (entries trimmed before they were drained) is logged loudly."""
        last = str(await self.r.get(self.position) or "0-0")
        entries = await self.r.xrange(self.stream, min=f"({last}", count=self.batch)
        if not entries:
            return 0
        if last != "0-0":  # drained up to `last`, which stays the oldest unless trimmed
            oldest = await self.r.xrange(self.stream, count=1)
            if oldest and _after(str(oldest[0][0]), last):
                log.error(
                    "audit entries after %s were trimmed before they reached ClickHouse "
                    "(the store was away longer than the stream's cap)",
                    last,
                )
        rows: list[list[object]] = []
        for entry_id, raw in entries:
            fields = {str(k): str(v) for k, v in (raw or {}).items()}
            at = datetime.fromisoformat(fields.get("at") or datetime.now(UTC).isoformat())
            people = fields.get("people", "")
            rows.append(
                [
                    str(entry_id),
                    at,
                    fields.get("actor", ""),
                    fields.get("role", ""),
                    fields.get("route", ""),
                    fields.get("action", ""),
                    fields.get("person_key", ""),
                    people.split(",") if people else [],
                    int(fields.get("people_count") or 0),
                    fields.get("subject", ""),
                    fields.get("why", ""),
                ]
            )
        ch = self.ch
        await asyncio.to_thread(
            ch.call, lambda c: c.insert(f"{ch.db}.audit_log", rows, column_names=AUDIT_COLUMNS)
        )
        await self.r.set(self.position, str(rows[-1][0]))
        # drained, so kept in ClickHouse: only the last drained entry stays (the mark)
        await self.r.xtrim(self.stream, minid=str(rows[-1][0]), approximate=False)
        return len(rows)

    async def run(self, interval: float = 2.0) -> None:
        """Drain forever (a store away is retried at the next tick)."""
        while True:
            try:
                while await self.drain_once() >= self.batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("audit drain failed (%s); retrying", exc)
            await asyncio.sleep(interval)

    async def recent(
        self, limit: int = 100, actor: str = "", person_key: str = "", since: datetime | None = None
    ) -> list[dict[str, object]]:
        """The newest entries, optionally only one caller's, or those naming one person."""
        where: list[str] = ["1"]
        params: dict[str, object] = {"limit": limit}
        if actor:
            where.append("actor = %(actor)s")
            params["actor"] = actor
        if person_key:
            where.append("has(people, %(person)s)")
            params["person"] = person_key
        if since is not None:
            where.append("at >= fromUnixTimestamp64Milli(%(since_ms)s, 'UTC')")
            params["since_ms"] = int(since.timestamp() * 1000)  # exact, whatever the zone

        def query() -> list[dict[str, object]]:
            result = self.ch.call(
                lambda c: c.query(
                    f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {self.ch.db}.audit_log FINAL "
                    f"WHERE {' AND '.join(where)} ORDER BY at DESC, entry_id DESC "  # ties: stable
                    "LIMIT 1 BY entry_id LIMIT %(limit)s",  # a re-drained entry once
                    parameters=params,
                )
            )
            return [
                {
                    k: (v.isoformat() if isinstance(v, datetime) else v)
                    for k, v in zip(AUDIT_COLUMNS, row, strict=True)
                }
                for row in result.result_rows
            ]

        with contextlib.suppress(Exception):
            await self.drain_once()  # what was just written is part of the answer
        return await asyncio.to_thread(query)
