"""Debounce: a card held in front of the camera for many frames counts once.

A *sighting* of a key (a card's ID, or a code's text) starts at the first frame that
shows it and lasts while frames keep showing it with gaps shorter than the window. A
card held up for ten seconds at a 3 s window is one sighting (the window slides with
every frame that shows it); the same card shown again after the window has passed with
no frame of it is a new sighting, as a person walking through twice is two entries.

Times are the frame clock's seconds (a camera's monotonic clock, a video's own
timeline), so replaying a video faster than real time debounces exactly as live.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Seen:
    first: float
    last: float


class Debouncer:
    def __init__(self, window: float) -> None:
        if window < 0:
            raise ValueError(f"debounce: must be 0 or more seconds, got {window}")
        self.window = window
        self._seen: dict[str, _Seen] = {}

    def sight(self, key: str, t: float) -> bool:
        """Record that a frame at time ``t`` shows ``key``; True when this starts a new
        sighting (the one to act on), False when it continues the current one."""
        seen = self._seen.get(key)
        if seen is not None and t - seen.last <= self.window:
            seen.last = max(seen.last, t)
            return False
        self._seen[key] = _Seen(t, t)
        self._forget(t)
        return True

    def _forget(self, now: float) -> None:
        """Drop sightings that ended (keeps memory bounded on a busy gate)."""
        if len(self._seen) > 256:
            self._seen = {k: s for k, s in self._seen.items() if now - s.last <= self.window}
