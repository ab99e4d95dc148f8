"""Loading the registry from a real export (CSV/JSON Lines), the use case: every row
validated, each ending ``loaded`` or ``rejected`` with the reason. Re-loading a file
changes nothing: identity fields are overwritten with the same values, health and status
are kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from registry.cards import RuleBook
from registry.imports import RESIDENT_COLUMNS, RowError, parse_resident
from registry.ports import ImportLedgerPort, RegistryAnalytics, ResidentRegistry
from registry.reference import hanoi_wards
from registry.reports import ImportFailed, ImportReport, ReportBuilder, columns_text
from registry.residents import Resident, analytics_row, recompute

CHUNK = 10_000


def _parse_row(
    number: int, raw: dict[str, str | None], wards: dict[str, set[str]], first_row: dict[str, int]
) -> tuple[int, str | None, Resident | None, str]:
    """(row, id, resident or None, reason) for one input row."""
    pid = (raw.get("id") or "").strip() or None
    if "__error__" in raw:
        return number, pid, None, str(raw["__error__"])
    try:
        r = parse_resident(raw, wards)
    except RowError as exc:
        return number, pid, None, str(exc)
    if r.id in first_row:
        return number, pid, None, f"ID already on row {first_row[r.id]} of this file"
    first_row[r.id] = number
    return number, pid, r, "validated and loaded"


async def load_residents(
    header: list[str],
    rows: Iterator[dict[str, str | None]],
    *,
    source: str,
    registry: ResidentRegistry,
    ledger: ImportLedgerPort,
    analytics: RegistryAnalytics,
    pseudonymize: Callable[[str], str],
    rules: RuleBook,
    progress: Callable[[int], None] = lambda n: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ImportReport:
    missing = [c for c in RESIDENT_COLUMNS if c not in header]
    if missing:
        raise ImportFailed(
            f"residents need column(s) {', '.join(missing)}; the file has {columns_text(header)}"
        )
    wards = {d: {w.name for w in ws} for d, ws in hanoi_wards().items()}
    t0 = time.perf_counter()
    now = clock()
    ignored = sorted(set(header) - set(RESIDENT_COLUMNS))
    build = ReportBuilder("residents", source, ("loaded", "rejected"), ignored, now)
    first_row: dict[str, int] = {}
    number = 0
    with ledger.records_writer(build.import_id) as out:
        while True:
            batch: list[tuple[int, str | None, Resident | None, str]] = []
            for raw in rows:
                number += 1
                batch.append(_parse_row(number, raw, wards, first_row))
                if len(batch) >= CHUNK:
                    break
            if not batch:
                break
            good = [r for _, _, r, _ in batch if r is not None]
            existing = await registry.get_many([r.id for r in good])
            rows_out: list[dict[str, str]] = []
            for res, old in zip(good, existing, strict=True):
                fields = {**(old or {}), **res.fields()}
                if not old or "colour" not in old:
                    fields.update(recompute(fields, rules, now))
                rows_out.append(fields)
            await registry.put_many(rows_out)
            await analytics.insert_residents(
                [analytics_row(f, pseudonymize, "registry", now) for f in rows_out]
            )
            lines = [
                build.add(row, "loaded" if loaded is not None else "rejected", reason, pid)
                for row, pid, loaded, reason in batch
            ]
            out.write(b"\n".join(lines) + b"\n")
            progress(len(batch))
    report = build.finish(time.perf_counter() - t0)
    await ledger.save_report(report.as_dict())
    await ledger.touch_freshness("residents", now.isoformat())
    return report
