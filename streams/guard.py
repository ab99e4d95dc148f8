"""How an agent writes without losing or stalling (DESIGN.md, stream processing rules).

Faust's ``take_events`` acknowledges a batch when the agent body returns *or raises*, so
the body decides every record's fate before it returns:

- a **transient** failure (a store away) is retried with back-off, for as long as it
  takes, without returning; it shows in ``/healthz`` meanwhile;
- a **permanent** failure (the store refuses this data) splits the batch in halves until
  the refused records are alone; the good ones are written, each refused one goes to
  ``dead-letters`` with the store's reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from infra.faults import AgentHealth, is_transient
from tracing.events import DeadLetter

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class DeadLetterPort(Protocol):
    async def send(self, letters: Sequence[DeadLetter]) -> None: ...


@dataclass
class Guard:
    dead_letters: DeadLetterPort
    health: AgentHealth = field(default_factory=AgentHealth)
    retry_delay: float = 0.5
    max_delay: float = 10.0
    transient: Callable[[BaseException], bool] = is_transient
    # Called when the worker is stopped while a step still waits on a store: Faust would
    # acknowledge (and commit) the unfinished batch on the way out, so the Faust wiring
    # ends the process instead, and the batch is replayed on restart.
    abandon: Callable[[str], None] = lambda step: None

    async def retry(self, step: str, action: Callable[[], Awaitable[R]]) -> R:
        """Run ``action`` until it succeeds or fails permanently (then raise)."""
        try:
            return await self._retry(step, action)
        except asyncio.CancelledError:
            if step in self.health.failing:
                self.abandon(step)
            raise

    async def _retry(self, step: str, action: Callable[[], Awaitable[R]]) -> R:
        delay = self.retry_delay
        while True:
            try:
                result = await action()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.transient(exc):
                    self.health.ok(step)
                    raise
                self.health.fail(step, exc)
                log.warning("%s failed (%s); retrying in %.1fs", step, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                continue
            self.health.ok(step)
            return result

    async def bury(self, letters: Sequence[DeadLetter]) -> None:
        """Dead letters must reach their topic: every failure is retried (they are bounded
        in size, so none is refused for its data); a stall is better than a loss."""
        if not letters:
            return
        always = Guard(self.dead_letters, self.health, self.retry_delay, self.max_delay)
        always.transient = lambda exc: True
        always.abandon = self.abandon
        await always.retry("dead-letter send", lambda: self.dead_letters.send(letters))

    async def write_each(
        self,
        step: str,
        items: Sequence[T],
        write: Callable[[Sequence[T]], Awaitable[object]],
        letter: Callable[[T, str], DeadLetter],
    ) -> list[T]:
        """Write ``items``; returns those written. Refused ones are isolated by halving and
        dead-lettered with the store's reason, never retried forever."""
        if not items:
            return []
        try:
            await self.retry(step, lambda: write(items))
            return list(items)
        except Exception as exc:
            if len(items) == 1:
                reason = f"{step} refused the record: {type(exc).__name__}: {exc}"[:1000]
                log.warning("%s", reason)
                await self.bury([letter(items[0], reason)])
                return []
        mid = len(items) // 2
        left = await self.write_each(step, items[:mid], write, letter)
        return left + await self.write_each(step, items[mid:], write, letter)
