"""The camera gate: frames → QR codes → a decision per card → a scan per entry.

Each frame is decoded (:func:`gate.qr.decode_frame`, in a worker thread). A recognised
CCCD card starts a *sighting* unless the same card was in view within the debounce
window (:mod:`gate.debounce`); each new sighting is checked with the platform
(``POST /v1/gate/check``, signed with the device key). An "allow" is an entry: a scan
is committed to the on-disk queue and the sender posts it (``POST /v1/scans``).

**Offline.** When the platform cannot answer (no connection, timeout, 5xx, 429) the
decision follows the offline policy and says ``"source": "offline"``:

- ``deny`` (the default): nobody enters on a card the gate cannot check. A gate is an
  epidemic control, and nothing at the gate can know a card's colour changed (an F1
  flagged an hour ago is still green in any cache);
- ``allow``: everyone with a valid card enters (a hospital, a home);
- ``last-known``: this gate's own last online decision for the card, if it is younger
  than ``last_known_hours``; otherwise deny.

Entries made offline are scans like any other: queued on disk, sent when the platform
is back.

**Output.** One JSON line per decision on stdout::

  {"ts": "...", "checkpoint_id": "cp-1", "kind": "cccd", "person_id": "********3456",
   "decision": "allow", "colour": "green", "reasons": [...], "source": "online",
   "scan_id": "g..."}

The ID is masked to its last four digits: a gate's terminal is in public view, and a
full ID is personal data; the last four are enough for the guard to match the card in
hand. ``scan_id`` (a hash, no personal data) is present when the decision made a scan.
A dancu code or an unrecognised code is a line with ``"decision": "ignored"``,
``"source": "local"`` and the reason; it is never sent. Operator events (the sender's
waits, rejected scans) are JSON lines on stderr.

**Scan IDs** are stable: a hash of the device, the person and the first frame time of
the sighting, made once and stored with the scan, so a resend is the same scan and
the platform counts it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TextIO

import cv2
import numpy as np

from gate.debounce import Debouncer
from gate.qr import Decoded, decode_frame
from gate.queue import ScanQueue
from gate.remote import GateRemote, Unreachable, Verdict
from gate.sender import Sender
from gate.sources import Frame

OfflinePolicy = Literal["allow", "deny", "last-known"]
OFFLINE_POLICIES: tuple[OfflinePolicy, ...] = ("deny", "allow", "last-known")
RECENT = 50  # decisions kept for the status page


@dataclass(frozen=True, slots=True)
class GateConfig:
    checkpoint_id: str
    device_id: str
    debounce: float = 3.0
    offline_policy: OfflinePolicy = "deny"
    last_known_hours: float = 12.0
    drain_timeout: float = 10.0


@dataclass(slots=True)
class Summary:
    frames: int = 0
    unreadable: int = 0
    decisions: int = 0
    ignored: int = 0
    scans_queued: int = 0
    offline_decisions: int = 0
    pending_at_exit: int = 0
    by_decision: dict[str, int] = field(default_factory=dict)


def mask_id(person_id: str) -> str:
    """All but the last four digits hidden: what a guard needs, no more."""
    return "*" * max(len(person_id) - 4, 0) + person_id[-4:]


def scan_id_for(device_id: str, person_id: str, first_seen: datetime) -> str:
    """The stable ID of a sighting's scan (no personal data in clear)."""
    raw = f"{device_id}|{person_id}|{first_seen.isoformat()}".encode()
    return "g" + hashlib.sha256(raw).hexdigest()[:32]


class GateProgram:
    """The gate's decisions; :meth:`run` drives it from a frame source."""

    def __init__(
        self,
        config: GateConfig,
        remote: GateRemote,
        queue: ScanQueue,
        *,
        out: TextIO | None = None,
        decoder: Callable[[np.ndarray], list[Decoded]] = decode_frame,
        sender: Sender | None = None,
    ) -> None:
        self.config = config
        self.remote = remote
        self.queue = queue
        self.out = out if out is not None else sys.stdout
        self.decoder = decoder
        self.sender = sender or Sender(queue, remote)
        self.debouncer = Debouncer(config.debounce)
        self.summary = Summary()
        self.recent: deque[dict[str, object]] = deque(maxlen=RECENT)
        self.online: bool | None = None  # the last gate check's reachability

    # --- one frame ----------------------------------------------------------------------

    async def handle_frame(self, frame: Frame) -> list[dict[str, object]]:
        """Decode a frame and decide on every new sighting in it; the lines emitted."""
        self.summary.frames += 1
        if frame.image is None:
            self.summary.unreadable += 1
            self._warn("unreadable-frame", frame=frame.name, reason=frame.error)
            return []
        codes = await asyncio.to_thread(self.decoder, frame.image)
        lines = []
        for code in codes:
            line = await self.handle_code(code, frame)
            if line is not None:
                lines.append(line)
        return lines

    async def handle_code(self, code: Decoded, frame: Frame) -> dict[str, object] | None:
        if code.kind == "cccd":
            person_id = str(code.detail["id"])
            if not self.debouncer.sight("id:" + person_id, frame.t):
                return None
            return await self._decide(person_id, code.text, frame)
        key = "text:" + hashlib.sha256(code.text.encode()).hexdigest()
        if not self.debouncer.sight(key, frame.t):
            return None
        if code.kind == "dancu":
            reason = "a dancu code (a checkpoint poster), not a resident's card: nothing sent"
        else:
            reason = str(code.detail.get("reason", "not a CCCD card"))
        self.summary.ignored += 1
        return self._emit(
            {
                "ts": frame.wall.isoformat(),
                "checkpoint_id": self.config.checkpoint_id,
                "kind": code.kind,
                "person_id": None,
                "decision": "ignored",
                "colour": "none",
                "reasons": [reason],
                "source": "local",
                "scan_id": None,
            }
        )

    async def _decide(self, person_id: str, qr: str, frame: Frame) -> dict[str, object]:
        answer = await self.remote.check(qr)
        if isinstance(answer, Unreachable):
            self.online = False
            verdict = await asyncio.to_thread(self.offline_verdict, person_id, answer.why)
            self.summary.offline_decisions += 1
        else:
            self.online = True
            verdict = answer
            await asyncio.to_thread(
                self.queue.remember, person_id, verdict.decision, verdict.colour, verdict.reasons
            )
        scan_id = None
        if verdict.decision == "allow":
            scan_id = scan_id_for(self.config.device_id, person_id, frame.wall)
            scan: dict[str, object] = {
                "scan_id": scan_id,
                "person_id": person_id,
                "checkpoint_id": self.config.checkpoint_id,
                "ts": frame.wall.isoformat(),
                "source": "gate",
            }
            if await asyncio.to_thread(self.queue.put, scan):  # durable before it is shown
                self.summary.scans_queued += 1
            self.sender.wake()
        self.summary.decisions += 1
        by = self.summary.by_decision
        by[verdict.decision] = by.get(verdict.decision, 0) + 1
        return self._emit(
            {
                "ts": frame.wall.isoformat(),
                "checkpoint_id": self.config.checkpoint_id,
                "kind": "cccd",
                "person_id": mask_id(person_id),
                "decision": verdict.decision,
                "colour": verdict.colour,
                "reasons": verdict.reasons,
                "source": verdict.source,
                "scan_id": scan_id,
            }
        )

    def offline_verdict(self, person_id: str, why: str) -> Verdict:
        """The decision while the platform cannot answer, by the offline policy."""
        policy = self.config.offline_policy
        first = f"offline: {why}"
        if policy == "allow":
            return Verdict("allow", "none", [first, "offline policy: allow"], "offline")
        if policy == "last-known":
            known = self.queue.recall(person_id)
            max_age = self.config.last_known_hours * 3600
            if known is not None and time.time() - known.at <= max_age:
                age = int((time.time() - known.at) // 60)
                said = f"offline policy: last-known (this gate's decision {age} min ago)"
                return Verdict(
                    "allow" if known.decision == "allow" else "deny",
                    known.colour,
                    [first, said, *known.reasons],
                    "offline",
                )
            hours = f"{self.config.last_known_hours:g}"
            said = f"offline policy: last-known, but no decision for this card in {hours} h"
            return Verdict("deny", "none", [first, said], "offline")
        return Verdict("deny", "none", [first, "offline policy: deny"], "offline")

    # --- the loop -----------------------------------------------------------------------

    async def run(self, frames: Iterator[Frame], stop: asyncio.Event | None = None) -> Summary:
        """Every frame until the source ends or ``stop`` is set; then wait up to
        ``drain_timeout`` for the queue to empty (what is left is sent on the next
        start)."""
        stop = stop or asyncio.Event()
        sending = asyncio.create_task(self.sender.run())
        try:
            while not stop.is_set():
                frame = await asyncio.to_thread(next, frames, None)
                if frame is None:
                    break
                try:
                    await self.handle_frame(frame)
                except (ValueError, cv2.error) as exc:  # one odd frame never stops the gate
                    self._warn("frame-error", frame=frame.name, reason=str(exc)[:300])
            await self.sender.drain(self.config.drain_timeout)
        finally:
            close = getattr(frames, "close", None)
            if callable(close):
                close()  # a generator's own finally releases the camera or file
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            self.summary.pending_at_exit = await asyncio.to_thread(self.queue.depth)
        return self.summary

    def status(self) -> dict[str, object]:
        """What the status page shows."""
        return {
            "checkpoint_id": self.config.checkpoint_id,
            "device_id": self.config.device_id,
            "offline_policy": self.config.offline_policy,
            "checks_online": self.online,
            "sending": self.sender.online,
            "last_error": self.sender.last_error,
            "queue_depth": self.queue.depth(),
            "frames": self.summary.frames,
            "decisions": self.summary.decisions,
            "recent": list(reversed(self.recent)),
        }

    def _emit(self, line: dict[str, object]) -> dict[str, object]:
        self.recent.append(line)
        print(json.dumps(line, ensure_ascii=False), file=self.out, flush=True)
        return line

    def _warn(self, event: str, **fields: object) -> None:
        print(
            json.dumps({"event": event, **fields}, ensure_ascii=False), file=sys.stderr, flush=True
        )
