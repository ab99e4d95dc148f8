"""Organisations in Redis (the access issue): their staff lists and their checkpoints.

Keys (under ``Settings.redis_prefix``):
- ``org:<organisation>:staff`` hash: person ID → unit (matched staff records; the owner
  uploaded these IDs, and sees them back with each person's colour and tier)
- ``org:<organisation>:cps`` set: the checkpoints it registered
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StaffStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.r = redis
        self.p = prefix

    def _staff(self, organisation: str) -> str:
        return f"{self.p}org:{organisation}:staff"

    def _cps(self, organisation: str) -> str:
        return f"{self.p}org:{organisation}:cps"

    async def send(self, events: list[dict[str, object]]) -> None:
        """Matched staff records (the importer's sink): each person under their
        organisation, with their unit; a re-import changes nothing."""
        async with self.r.pipeline(transaction=False) as pipe:
            for e in events:
                record = e["record"]
                assert isinstance(record, dict)
                pipe.hset(
                    self._staff(str(record["organisation"])),
                    str(e["person_id"]),
                    str(record.get("unit") or ""),
                )
            await pipe.execute()

    async def staff(self, organisation: str, limit: int = 10_000) -> dict[str, str]:
        """Person ID → unit, at most ``limit`` people (sorted by ID)."""
        found = await self.r.hgetall(self._staff(organisation))  # type: ignore[misc]
        pairs = sorted((_s(k), _s(v)) for k, v in found.items())
        return dict(pairs[:limit])

    async def own(self, organisation: str, checkpoint_ids: Iterable[str]) -> None:
        ids = list(checkpoint_ids)
        if ids:
            await self.r.sadd(self._cps(organisation), *ids)  # type: ignore[misc]

    async def disown(self, organisation: str, checkpoint_ids: Iterable[str]) -> None:
        ids = list(checkpoint_ids)
        if ids:
            await self.r.srem(self._cps(organisation), *ids)  # type: ignore[misc]

    async def checkpoints(self, organisation: str) -> list[str]:
        found = await self.r.smembers(self._cps(organisation))  # type: ignore[misc]
        return sorted(_s(c) for c in found)
