"""Importing records from sources (the use case): validate every row, match it against the
registry, send matched records on to the status agent, keep a report and one outcome per
row. Mismatches wait in a review queue for a data steward.

Every row ends in exactly one outcome with a reason (matched, mismatch, unknown-id,
invalid, duplicate). It talks only to ports (:mod:`registry.ports`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from registry.errors import quote
from registry.imports import (
    KINDS,
    OUTCOMES,
    Kind,
    ParsedRow,
    content_of,
    header_problems,
    parse_row,
)
from registry.matching import normalise_name, verify
from registry.ports import HealthRecordSink, ImportLedgerPort, ResidentRegistry, StaffDirectory
from registry.reports import ImportFailed, ImportReport, ReportBuilder, columns_text

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
    staff: StaffDirectory | None = None  # where staff lists go (not to the status agent)
    _organisation: str | None = field(default=None, init=False, repr=False)

    async def run(
        self,
        kind_name: str,
        header: list[str],
        rows: Iterator[dict[str, str | None]],
        source: str,
        progress: Callable[[int], None] = lambda n: None,
        organisation: str | None = None,
    ) -> ImportReport:
        """``organisation``: an owner's import, which may name only its own organisation."""
        kind = KINDS.get(kind_name)
        if kind is None:
            raise ImportFailed(
                f"unknown import kind {kind_name!r}; one of: " + ", ".join([*KINDS, "residents"])
            )
        if kind.name == "staff" and self.staff is None:
            raise ImportFailed("staff lists are imported through the API (POST /v1/imports/staff)")
        self._organisation = organisation  # read by _own while rows are parsed
        missing, extra = header_problems(kind, header)
        if missing:
            raise ImportFailed(
                f"{kind.name} needs column(s) {', '.join(missing)}; the file "
                f"has {columns_text(header)}"
            )
        t0 = time.perf_counter()
        build = ReportBuilder(kind.name, source, OUTCOMES, extra, self.clock())
        seen_here: dict[str, str] = {}
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
                        chunk.append(self._own(parse_row(kind, number, raw)))
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

    def _own(self, row: ParsedRow) -> ParsedRow:
        """An owner's row naming another organisation is invalid (nothing else changes)."""
        org = self._organisation
        if org is None or row.error or row.record.get("organisation") in (None, org):
            return row
        return ParsedRow(
            row.row,
            row.person_id,
            error=f"organisation: {quote(str(row.record['organisation']))} is not yours ({org})",
        )

    async def _chunk(
        self, kind: Kind, import_id: str, chunk: list[ParsedRow], seen_here: dict[str, str]
    ) -> tuple[list[tuple[str, str]], str]:
        """Outcomes of one chunk, decided row by row in file order. ``seen_here`` holds the
        content of every record matched earlier in this file, by natural key."""
        result: list[tuple[str, str]] = []
        good = [p for p in chunk if not p.error]
        keys = list(dict.fromkeys(p.fingerprint for p in good))
        ids = list(dict.fromkeys(str(p.person_id) for p in good))
        applied = dict(zip(keys, await self.ledger.applied(keys), strict=True))
        known = dict(zip(ids, await self.registry.get_identities(ids), strict=True))
        events: list[dict[str, object]] = []
        reviews: list[dict[str, object]] = []
        newest = ""
        for p in chunk:
            if p.error:
                result.append(("invalid", p.error))
                continue
            event: dict[str, object] = {
                "record_id": p.fingerprint,
                "kind": kind.name,
                "person_id": p.person_id,
                "import_id": import_id,
                "record": {
                    k: (v.isoformat() if isinstance(v, date) else v) for k, v in p.record.items()
                },
            }
            before = seen_here.get(p.fingerprint, applied.get(p.fingerprint))
            if before == p.content:
                where = "earlier in this file" if p.fingerprint in seen_here else "already imported"
                result.append(("duplicate", f"the same record was {where}"))
                continue
            identity = known[str(p.person_id)]
            if identity is None:
                result.append(("unknown-id", "ID not found in the registry"))
                continue
            rec_dob = p.record.get("dob")
            match = verify(
                p.record.get("name"),  # type: ignore[arg-type]  # a str or None by the schema
                rec_dob if isinstance(rec_dob, date) else None,
                identity.name,
                identity.dob,
                aliases=identity.aliases,
                id_birth_year=p.id_birth_year,
            )
            problems = [] if match.matched else [match.reason]
            if before is not None:  # same key, other content: both kept, side by side
                problems.append(conflict_reason(kind.name, before, p.content))
            if not problems:
                result.append(("matched", match.reason))
                seen_here[p.fingerprint] = p.content
                events.append(event)
                newest = max(newest, _record_time(kind, p.record))
                continue
            reason = "; ".join(problems)
            result.append(("mismatch", reason + "; sent to the review queue"))
            name = p.record.get("name")
            reviews.append(
                review_item(
                    event,
                    reason,
                    row=p.row,
                    conflicts_with=before,
                    alias=normalise_name(str(name)) if match.name_differs and name else None,
                )
            )
        if events and kind.name == "staff" and self.staff is not None:
            await self.staff.send(events)
            await self.ledger.mark_applied(
                {str(e["record_id"]): content_of(kind.name, e["record"]) for e in events}  # type: ignore[arg-type]
            )
        elif events:
            await self.records.send(events)
        await self.ledger.queue_review(reviews)
        return result, newest


def conflict_reason(kind_name: str, before: str, now: str) -> str:
    """'… the same dose: vaccine AstraZeneca → Pfizer' : what differs from the other record."""
    old, new = orjson.loads(before), orjson.loads(now)
    diffs = [
        f"{k} {quote(str(old.get(k)), 80)} → {quote(str(new.get(k)), 80)}".replace("'", "")
        for k in new
        if old.get(k) != new.get(k)
    ]
    key = KINDS[kind_name].key if kind_name in KINDS else ("key",)
    return f"conflicts with another record for the same {', '.join(key)}: " + "; ".join(diffs)


def review_item(
    event: dict[str, object],
    reason: str,
    *,
    row: int | None = None,
    conflicts_with: str | None = None,
    alias: str | None = None,
) -> dict[str, object]:
    """A review item: the new record, and the record it conflicts with, side by side. Its
    ID names the record (its key, content and identity), so the same record queued twice
    is one item."""
    record = event.get("record")
    facts = record if isinstance(record, dict) else {}
    content = content_of(str(event.get("kind")), facts)
    review_id = hashlib.blake2b(
        f"{event.get('record_id')}|{content}|{facts.get('name')}|{facts.get('dob')}".encode(),
        digest_size=12,
    ).hexdigest()
    item: dict[str, object] = {"review_id": review_id, "row": row, "reason": reason}
    item["event"] = {**event, "supersedes": True} if conflicts_with is not None else event
    if conflicts_with is not None:
        item["conflicts_with"] = orjson.loads(conflicts_with)
    if alias:
        item["alias"] = alias
    return item


async def decide_review(
    ledger: ImportLedgerPort,
    records: HealthRecordSink,
    registry: ResidentRegistry,
    review_id: str,
    accept: bool,
    staff: StaffDirectory | None = None,
) -> dict[str, Any] | None:
    """A data steward's decision on a mismatched record; None when there is no such item.

    An accepted record is sent on (durably) before the item leaves the queue, so a crash
    in between leaves it to decide again, never lost; the status agent marks it applied
    (a staff record goes to the organisation's list, marked applied here).
    Accepting a differently spelled name records that spelling as the person's alias.
    """
    item = await ledger.review_item(review_id)
    if item is None:
        return None
    if accept:
        event = item["event"]
        if event.get("kind") == "staff":
            if staff is None:
                raise ImportFailed("staff lists are decided through the API")
            await staff.send([event])
            await ledger.mark_applied(
                {str(event["record_id"]): content_of("staff", event["record"])}
            )
        else:
            await records.send([event])
        if item.get("alias"):  # this spelling of the name matches from now on
            await registry.add_alias(str(event["person_id"]), str(item["alias"]))
    await ledger.drop_review(review_id)
    return item
