"""Loading the registry from a real export (CSV/JSON Lines): every row validated, each
ending ``loaded`` or ``rejected`` with the reason. Re-loading a file changes nothing:
identity fields are overwritten with the same values, health and status are kept."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson

from infra.clickhouse import ClickHouse
from infra.imports import ImportFailed, ImportLedger, ImportReport
from infra.residents import ResidentStore, insert_residents, resident_row
from registry.cards import RuleBook
from registry.imports import RESIDENT_COLUMNS, RowError, parse_resident
from registry.reference import hanoi_wards
from registry.residents import Resident, recompute

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
    store: ResidentStore,
    ledger: ImportLedger,
    clickhouse: ClickHouse,
    pseudonymize: Callable[[str], str],
    rules: RuleBook,
    progress: Callable[[int], None] = lambda n: None,
) -> ImportReport:
    missing = [c for c in RESIDENT_COLUMNS if c not in header]
    if missing:
        raise ImportFailed(
            f"residents need column(s) {', '.join(missing)}; the file has "
            f"{', '.join(header) or 'none'}"
        )
    wards = {d: {w.name for w in ws} for d, ws in hanoi_wards().items()}
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    import_id = f"imp-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    report = ImportReport(
        import_id,
        "residents",
        source,
        now.isoformat(),
        ignored_columns=sorted(set(header) - set(RESIDENT_COLUMNS)),
    )
    path = ledger.records_path(import_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    samples: dict[str, list[dict[str, object]]] = defaultdict(list)
    first_row: dict[str, int] = {}
    number = 0
    with open(path, "wb") as out:
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
            existing = await store.get_many([r.id for r in good])
            rows_out: list[dict[str, str]] = []
            for res, old in zip(good, existing, strict=True):
                fields = {**(old or {}), **res.fields()}
                if not old or "colour" not in old:
                    fields.update(recompute(fields, rules, now))
                rows_out.append(fields)
            await store.put_many(rows_out)
            await asyncio.to_thread(
                insert_residents,
                clickhouse,
                [resident_row(f, pseudonymize, "registry", now) for f in rows_out],
            )
            lines = []
            for row, pid, loaded, reason in batch:
                outcome = "loaded" if loaded is not None else "rejected"
                line = {"row": row, "outcome": outcome, "reason": reason, "person_id": pid}
                lines.append(orjson.dumps(line))
                counts[outcome] += 1
                reasons[outcome][reason.split(":")[0]] += 1
                if len(samples[outcome]) < 5:
                    samples[outcome].append(line)
            out.write(b"\n".join(lines) + b"\n")
            progress(len(batch))
    report.rows = number
    report.outcomes = {"loaded": counts["loaded"], "rejected": counts["rejected"]}
    report.reasons = {o: dict(c.most_common(20)) for o, c in reasons.items()}
    report.samples = dict(samples)
    report.finished_at = datetime.now(UTC).isoformat()
    report.seconds = round(time.perf_counter() - t0, 2)
    await ledger.save_report(report)
    await ledger.touch_freshness("residents", now.isoformat())
    return report
