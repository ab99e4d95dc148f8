"""Replay marks: which records a consumer may already have written before its offsets
were committed.

A consumer commits its offsets about once a second, after its writes. Stopped in between
(a SIGKILL, a lost session), the records since the last commit are delivered again, to
it or to whoever takes its partitions over. The tables collapse such rows by key, but an
insert-time view (the dashboard's hourly counts) would count them twice. So before a
batch's first write the consumer raises a mark per partition to the batch's highest
offset, never lowering it. A record at or below its partition's mark as it stood before
the batch may have been written already and is checked; any other record is new, and
costs nothing but the one call per batch.

Key (under ``Settings.redis_prefix``): ``replay:<group>:<topic>``, a hash of partition →
offset. One key, so one slot (a Redis Cluster too); its size is the partition count, and
it expires a week after the group's last batch (a group gone, or a topic made anew).

A consumer never waits long on the marks: a call that takes more than ``timeout`` fails,
and for ``cooldown`` after a failure none is tried (the caller then treats its batches as
possible replays, which costs a check, never a loss).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from redis.asyncio import Redis

MARK_TTL_MS = 7 * 24 * 3600 * 1000

# ARGV[1]: the key's time to live (ms); then partition, offset, partition, offset, ...
# Returns each partition's mark as it was.
_ADVANCE = """
local out = {}
for i = 2, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > old then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  out[#out + 1] = old
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return out
"""


class MarksUnavailable(ConnectionError):
    """The marks did not answer (or are in their cool-down after a failure)."""


def replay_key(prefix: str, group: str, topic: str) -> str:
    return f"{prefix}replay:{group}:{topic}"


class ReplayMarks:
    """The marks of one consumer group on one topic."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        group: str,
        topic: str,
        timeout: float = 2.0,
        cooldown: float = 10.0,
    ) -> None:
        self.key = replay_key(prefix, group, topic)
        self._advance = redis.register_script(_ADVANCE)
        self.timeout = timeout
        self.cooldown = cooldown
        self._quiet_until = 0.0

    async def advance(self, highest: Mapping[int, int]) -> dict[int, int]:
        """Raise each partition's mark to ``highest[partition]`` (never lower it); the
        marks as they stood before (-1: none yet)."""
        if not highest:
            return {}
        if time.monotonic() < self._quiet_until:
            raise MarksUnavailable("replay marks: cooling down after a failure")
        parts = sorted(highest)
        args = [MARK_TTL_MS, *(x for p in parts for x in (p, highest[p]))]
        try:
            before = await asyncio.wait_for(self._advance(keys=[self.key], args=args), self.timeout)
        except Exception as exc:
            self._quiet_until = time.monotonic() + self.cooldown
            raise MarksUnavailable(f"replay marks: {exc!r}") from exc
        return {p: int(o) for p, o in zip(parts, before, strict=True)}
