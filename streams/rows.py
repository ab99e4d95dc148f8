"""The sink's writer: the rows of a batch of ``store-rows`` records into their tables.

Most tables collapse a row written twice (ReplacingMergeTree on the row's key), so their
rows are inserted as they come. A table with insert-time views (``Table.counted_by``:
``visits``, behind the dashboard's hourly counts) must receive each row once, or the
views count it twice. So, for such a table:

- a row is written once per batch (the first of its key);
- the rows of a record that may be a replay (its worker marked it ``replayed``, or it is
  at or below the sink's own replay mark: the sink stopped between an insert and its
  offset commit, see infra/replays.py) are written only if the store does not hold them;
- an insert that failed after it may have written (a reply lost, a timeout) is checked
  the same way before it is tried again.

Everything else costs one call to the marks per batch. The writer talks to small ports,
so it is tested with in-memory fakes (tests/functional/test_sink_writer.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from infra.sink import Table
from streams.guard import Guard
from streams.scans import RawRecord, ReplayMarksPort, maybe_written
from tracing.events import DeadLetter

log = logging.getLogger(__name__)

Item = tuple[RawRecord, Table, list[object]]  # a row, its table and the record it came in


class RowStorePort(Protocol):
    async def insert(self, table: Table, rows: Sequence[Sequence[object]]) -> None: ...

    async def written(self, table: Table, rows: Sequence[Sequence[object]]) -> set[str]:
        """The keys (``table.counted_by``) of ``rows`` that the store holds already."""
        ...


class RowWriter:
    def __init__(
        self,
        store: RowStorePort,
        guard: Guard,
        marks: ReplayMarksPort | None,
        letter: Callable[[Item, str], DeadLetter],
    ) -> None:
        self.store = store
        self.guard = guard
        self.marks = marks
        self.letter = letter

    async def write(self, items: Sequence[Item], replayed: set[int]) -> None:
        """Write ``items`` (one table per call: a row refused is dead-lettered, see
        :meth:`Guard.write_each`). ``replayed``: the ``id()`` of the records their worker
        marked as possibly sent before."""
        if not items:
            return
        table = items[0][1]
        step = f"ClickHouse {table.name} insert"
        if not table.counted_by:
            await self.guard.write_each(step, items, self._insert, self.letter)
            return
        key = table.columns.index(table.counted_by)
        fresh = await self._unwritten(table, key, items, replayed)
        tried: set[str] = set()

        async def insert(part: Sequence[Item]) -> None:
            rows = [row for _, _, row in part]
            if tried and any(str(row[key]) in tried for row in rows):
                held = await self._held(table, rows)  # a try before may have landed
                rows = [row for row in rows if str(row[key]) not in held]
            try:
                if rows:
                    await self.store.insert(table, rows)
            finally:
                tried.update(str(row[key]) for _, _, row in part)

        await self.guard.write_each(step, fresh, insert, self.letter)

    async def _held(self, table: Table, rows: Sequence[Sequence[object]]) -> set[str]:
        """The rows the store holds. A check refused for good (not a store away) must not
        refuse the rows: they are written unchecked (the table collapses them)."""
        try:
            return await self.store.written(table, rows)
        except Exception as exc:
            if self.guard.transient(exc):
                raise  # the insert's retry waits for the store
            log.exception("replay check refused; %d rows written unchecked", len(rows))
            return set()

    async def _insert(self, part: Sequence[Item]) -> None:
        await self.store.insert(part[0][1], [row for _, _, row in part])

    async def _unwritten(
        self, table: Table, key: int, items: Sequence[Item], replayed: set[int]
    ) -> list[Item]:
        """One row per key, without those of possible replays that the store holds."""
        # Every record of the batch raises the marks, also one whose rows all repeat keys
        # seen before in it (after a crash the batch may be cut elsewhere).
        records = list({id(rec): rec for rec, _, _ in items}.values())
        flags = await maybe_written(self.marks, records)
        unique: dict[str, Item] = {}
        for item in items:
            unique.setdefault(str(item[2][key]), item)
        suspect = {id(rec) for rec, f in zip(records, flags, strict=True) if f} | replayed
        check = [row for rec, _, row in unique.values() if id(rec) in suspect]
        held: set[str] = set()
        if check:
            held = await self.guard.retry(
                f"ClickHouse {table.name} replay check", lambda: self._held(table, check)
            )
        fresh = [it for k, it in unique.items() if not (id(it[0]) in suspect and k in held)]
        if len(fresh) < len(items):  # rare (after a crash), and worth an operator's eye
            log.warning(
                "%d replayed %s rows written before, not again (%d of them twice in the batch)",
                len(items) - len(fresh),
                table.name,
                len(items) - len(unique),
            )
        return fresh
