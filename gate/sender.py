"""Replays the on-disk queue to the platform, in order, for as long as the gate runs.

One batch at a time, oldest first: a batch is marked sent only once the platform has
answered 202 for it, so a crash between sending and marking re-sends it (harmless: scan
IDs are stable). While the platform is unreachable (no connection, timeout, 5xx, 429)
or refuses the device, it waits with exponential back-off, woken early by a new scan
only when the last attempt succeeded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

from gate.queue import ScanQueue
from gate.remote import GateRemote

BATCH = 200


class Sender:
    def __init__(
        self,
        queue: ScanQueue,
        remote: GateRemote,
        *,
        batch: int = BATCH,
        first_delay: float = 0.5,
        max_delay: float = 10.0,
        log: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.remote = remote
        self.batch = batch
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.log = log if log is not None else sys.stderr
        self.clock = clock
        self.delay = 0.0  # the current back-off; 0 while the platform answers
        self.last_error = ""
        self.sent = 0
        self.rejected = 0
        self._wake = asyncio.Event()

    @property
    def online(self) -> bool:
        """Whether the last attempt to send went through."""
        return self.delay == 0.0

    def wake(self) -> None:
        """A scan was queued: send it now (unless backing off)."""
        self._wake.set()

    async def send_once(self) -> bool:
        """Send one batch; False when nothing is pending or it must be retried later."""
        batch = await asyncio.to_thread(self.queue.pending, self.batch)
        if not batch:
            return False
        answer = await self.remote.send_scans([p.scan for p in batch])
        if answer.retry:
            self.delay = min(self.max_delay, max(self.first_delay, self.delay * 2))
            if answer.retry != self.last_error:
                self._say("scans-waiting", reason=answer.retry, pending=len(batch))
            self.last_error = answer.retry
            return False
        await asyncio.to_thread(self.queue.mark_sent, answer.acked)
        if answer.rejected:
            await asyncio.to_thread(self.queue.mark_rejected, answer.rejected)
            for scan_id, why in answer.rejected.items():
                self._say("scan-rejected", scan_id=scan_id, reason=why)
        if self.last_error:
            self._say("scans-flowing", after=self.last_error)
        self.delay, self.last_error = 0.0, ""
        self.sent += len(answer.acked)
        self.rejected += len(answer.rejected)
        return True

    async def run(self) -> None:
        """Forever (cancel to stop): send while there is something, else wait."""
        while True:
            try:
                progressed = await self.send_once()
            except Exception as exc:  # a bug or a broken disk must not stop the sending
                self.delay = min(self.max_delay, max(self.first_delay, self.delay * 2))
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._say("sender-error", reason=self.last_error)
                progressed = False
            if progressed:
                continue
            if self.delay:
                await asyncio.sleep(self.delay)
                continue
            self._wake.clear()
            if await asyncio.to_thread(self.queue.depth):
                continue  # queued between the batch read and the clear
            await self._wake.wait()

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queue to empty; True when it did."""
        deadline = self.clock() + timeout
        while True:
            if await asyncio.to_thread(self.queue.depth) == 0:
                return True
            left = deadline - self.clock()
            if left <= 0:
                return False
            self.wake()
            await asyncio.sleep(min(0.1, left))

    def _say(self, event: str, **fields: object) -> None:
        """An operator's line on stderr (stdout carries decisions only)."""
        line = {"event": event, **fields}
        print(json.dumps(line, ensure_ascii=False), file=self.log, flush=True)
