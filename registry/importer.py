"""Importing records from sources (the use case): validate every row, match it against the
registry, send matched records on to the status agent, keep a report and one outcome per
row. Mismatches wait in a review queue for a data steward.

Every row ends in exactly one outcome with a reason (matched, mismatch, unknown-id,
invalid, duplicate). It talks only to ports (:mod:`registry.ports`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from registry.imports import KINDS, OUTCOMES, Kind, ParsedRow, header_problems, parse_row
from registry.matching import verify
from registry.ports import HealthRecordSink, ImportLedgerPort, ResidentRegistry
from registry.reports import ImportFailed, ImportReport, ReportBuilder

CHUNK = 10_000


def _record_time(kind: Kind, record: dict[str, object]) -> str:
    value = record.get(kind.time_column)
    return str(value) if value else ""


@dataclass
class Importer:
    registry: ResidentRegistry
    ledger: ImportLedgerPort
    records: HealthRecordSink
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def run(
        self,
        kind_name: str,
        header: list[str],
        rows: Iterator[dict[str, str | None]],
        source: str,
        progress: Callable[[int], None] = lambda n: None,
    ) -> ImportReport:
        kind = KINDS.get(kind_name)
        if kind is None:
            raise ImportFailed(
                f"unknown import kind {kind_name!r}; one of: " + ", ".join([*KINDS, "residents"])
            )
        missing, extra = header_problems(kind, header)
        if missing:
            raise ImportFailed(
                f"{kind.name} needs column(s) {', '.join(missing)}; the file "
                f"has {', '.join(header) or 'none'}"
            )
        t0 = time.perf_counter()
        build = ReportBuilder(kind.name, source, OUTCOMES, extra, self.clock())
        seen_here: set[str] = set()
        newest = ""
        with self.ledger.records_writer(build.import_id) as out:
            number = 0
            while True:
                chunk = []
                for raw in rows:
                    number += 1
                    if "__error__" in raw:
                        chunk.append(ParsedRow(number, None, error=str(raw["__error__"])))
                    else:
                        chunk.append(parse_row(kind, number, raw))
                    if len(chunk) >= CHUNK:
                        break
                if not chunk:
                    break
                outcomes, chunk_newest = await self._chunk(kind, build.import_id, chunk, seen_here)
                newest = max(newest, chunk_newest)
                lines = [
                    build.add(p.row, outcome, reason, p.person_id)
                    for p, (outcome, reason) in zip(chunk, outcomes, strict=True)
                ]
                out.write(b"\n".join(lines) + b"\n")
                progress(len(chunk))
        report = build.finish(time.perf_counter() - t0)
        await self.ledger.save_report(report.as_dict())
        if newest:
            await self.ledger.touch_freshness(kind.name, newest)
        return report

    async def _chunk(
        self, kind: Kind, import_id: str, chunk: list[ParsedRow], seen_here: set[str]
    ) -> tuple[list[tuple[str, str]], str]:
        result: list[tuple[str, str] | None] = [None] * len(chunk)
        candidates: list[int] = []
        for i, p in enumerate(chunk):
            if p.error:
                result[i] = ("invalid", p.error)
            elif p.fingerprint in seen_here:
                result[i] = ("duplicate", "the same record appears earlier in this file")
            else:
                seen_here.add(p.fingerprint)
                candidates.append(i)
        before = await self.ledger.imported([chunk[i].fingerprint for i in candidates])
        fresh = []
        for i, done in zip(candidates, before, strict=True):
            if done:
                result[i] = ("duplicate", "already imported")
            else:
                fresh.append(i)
        known_ids = await self.registry.get_identities([str(chunk[i].person_id) for i in fresh])
        events: list[dict[str, object]] = []
        reviews: list[dict[str, object]] = []
        newest = ""
        for i, known in zip(fresh, known_ids, strict=True):
            p = chunk[i]
            if known is None:
                result[i] = ("unknown-id", "ID not found in the registry")
                continue
            name, dob = known
            rec_dob = p.record.get("dob")
            match = verify(
                p.record.get("name"),  # type: ignore[arg-type]  # a str or None by the schema
                rec_dob if isinstance(rec_dob, date) else None,
                name,
                date.fromisoformat(dob),
            )
            record = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in p.record.items()}
            event: dict[str, object] = {
                "record_id": p.fingerprint,
                "kind": kind.name,
                "person_id": p.person_id,
                "import_id": import_id,
                "record": record,
            }
            if match.matched:
                result[i] = ("matched", match.reason)
                events.append(event)
                newest = max(newest, _record_time(kind, p.record))
            else:
                result[i] = ("mismatch", match.reason + "; sent to the review queue")
                reviews.append(
                    {
                        "review_id": p.fingerprint,
                        "row": p.row,
                        "reason": match.reason,
                        "event": event,
                    }
                )
        if events:
            await self.records.send(events)
            await self.ledger.mark_imported([str(e["record_id"]) for e in events])
        await self.ledger.queue_review(reviews)
        return [r for r in result if r is not None], newest


async def decide_review(
    ledger: ImportLedgerPort, records: HealthRecordSink, review_id: str, accept: bool
) -> dict[str, Any] | None:
    """A data steward's decision on a mismatched record; None when there is no such item.

    An accepted record is sent on (durably) before the item leaves the queue, so a crash
    in between leaves it to decide again, never lost.
    """
    item = await ledger.review_item(review_id)
    if item is None:
        return None
    if accept:
        await records.send([item["event"]])
        await ledger.mark_imported([review_id])
    await ledger.drop_review(review_id)
    return item
