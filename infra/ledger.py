"""The import ledger on Redis and the data directory: reports, per-row outcome files,
the applied marks of natural keys, the review queue and source freshness (the adapter behind
:class:`registry.ports.ImportLedgerPort`)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from redis.asyncio import Redis

FP_BUCKETS = 64
_IMPORT_ID = re.compile(r"imp-[0-9]{14}-[0-9a-f]{6}")


class ImportLedger:
    """Where imports leave their trace: reports and outcomes (data dir + Redis), the
    applied marks and the review queue (Redis), source freshness (Redis)."""

    def __init__(self, redis: Redis, prefix: str, data_dir: Path) -> None:
        self.r = redis
        self.p = prefix
        self.dir = data_dir / "imports"

    def records_path(self, import_id: str) -> Path:
        """The outcome file of an import; an ID not of our own making never names a path."""
        if not _IMPORT_ID.fullmatch(import_id):
            raise KeyError(import_id)
        return self.dir / import_id / "records.jsonl"

    @contextmanager
    def records_writer(self, import_id: str) -> Iterator[BinaryIO]:
        """The file of per-row outcome lines (JSON Lines) of an import."""
        path = self.records_path(import_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            yield handle

    async def save_report(self, report: dict[str, object]) -> None:
        await self.r.hset(
            f"{self.p}imports",
            str(report["import_id"]),
            orjson.dumps(report).decode(),
        )

    async def report(self, import_id: str) -> dict[str, Any] | None:
        raw = await self.r.hget(f"{self.p}imports", import_id)  # type: ignore[misc]
        return orjson.loads(raw) if raw else None

    async def reports(self) -> list[dict[str, Any]]:
        raw = await self.r.hvals(f"{self.p}imports")  # type: ignore[misc]
        return sorted((orjson.loads(v) for v in raw), key=lambda r: r["started_at"])

    def _bucket(self, fp: str) -> str:
        return f"{self.p}applied:{int(fp[:4], 16) % FP_BUCKETS}"

    async def applied(self, keys: list[str]) -> list[str | None]:
        """The content of the applied record under each natural key, None when none is."""
        by: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            by[self._bucket(key)].append(i)
        out: list[str | None] = [None] * len(keys)
        async with self.r.pipeline(transaction=False) as pipe:
            for bucket, idx in by.items():
                pipe.hmget(bucket, [keys[i] for i in idx])
            found = await pipe.execute()
        for idx, contents in zip(by.values(), found, strict=True):
            for i, content in zip(idx, contents, strict=True):
                out[i] = content
        return out

    async def mark_applied(self, contents: dict[str, str]) -> None:
        """Record what was applied under each key (idempotent: the same content again)."""
        by: dict[str, dict[str, str]] = defaultdict(dict)
        for key, content in contents.items():
            by[self._bucket(key)][key] = content
        async with self.r.pipeline(transaction=False) as pipe:
            for bucket, mapping in by.items():
                pipe.hset(bucket, mapping=mapping)  # type: ignore[arg-type]  # str values
            await pipe.execute()

    async def queue_review(self, items: list[dict[str, object]]) -> None:
        if items:
            await self.r.hset(
                f"{self.p}review",
                mapping={  # type: ignore[misc]
                    str(i["review_id"]): orjson.dumps(i).decode() for i in items
                },
            )

    async def review_items(self, limit: int = 100) -> list[dict[str, Any]]:
        raw = await self.r.hvals(f"{self.p}review")  # type: ignore[misc]
        return sorted((orjson.loads(v) for v in raw), key=lambda i: i["review_id"])[:limit]

    async def review_item(self, review_id: str) -> dict[str, Any] | None:
        raw = await self.r.hget(f"{self.p}review", review_id)  # type: ignore[misc]
        return None if raw is None else dict(orjson.loads(raw))

    async def drop_review(self, review_id: str) -> bool:
        return bool(await self.r.hdel(f"{self.p}review", review_id))  # type: ignore[misc]

    async def touch_freshness(self, source: str, newest: str) -> None:
        key = f"{self.p}freshness"
        old = await self.r.hget(key, source)  # type: ignore[misc]
        if old is None or str(old) < newest:
            await self.r.hset(key, source, newest)  # type: ignore[misc]

    async def freshness(self) -> dict[str, str]:
        raw = await self.r.hgetall(f"{self.p}freshness")  # type: ignore[misc]
        return {str(k): str(v) for k, v in raw.items()}
