"""In-memory fakes of the ports (functional tests only)."""

from __future__ import annotations

from collections.abc import Sequence

from tracing.events import DeadLetter
from tracing.visits import Visit


class MemoryIndex:
    def __init__(self) -> None:
        self.visits: dict[str, Visit] = {}
        self.processed = 0

    async def unseen(self, scan_ids: Sequence[str]) -> list[bool]:
        return [s not in self.visits for s in scan_ids]

    async def add(self, visits: Sequence[Visit], *, count: bool = True) -> int:
        for v in visits:
            self.visits[v.scan_id] = v
        if count:
            self.processed += len(visits)
        return len(visits)


class MemorySink:
    def __init__(self, fail_times: int = 0) -> None:
        self.rows: list[Visit] = []
        self.fail_times = fail_times

    async def insert(self, visits: Sequence[Visit], places: dict[str, dict[str, str]]) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("ClickHouse is down")
        self.rows.extend(visits)


class MemoryPlaces:
    async def lookup(self, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return {i: {"district": "Ba Đình"} for i in ids}


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)
