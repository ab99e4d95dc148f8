"""Data quality ("đúng, đủ, sạch, sống"): completeness per district, match rates per source
and import, freshness per source."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from infra.clickhouse import ClickHouse
from infra.imports import ImportLedger


def completeness(ch: ClickHouse) -> dict[str, Any]:
    rows = ch.call(
        lambda c: (
            c.query(
                f"SELECT district, count(), countIf(doses > 0), countIf(has_address = 1) "
                f"FROM {ch.db}.residents FINAL GROUP BY district ORDER BY district"
            ).result_rows
        )
    )
    by_district = {}
    total = vacc = addr = 0
    for district, n, v, a in rows:
        by_district[str(district)] = {
            "residents": n,
            "vaccination_share": round(v / n, 4),
            "address_share": round(a / n, 4),
        }
        total, vacc, addr = total + n, vacc + v, addr + a
    colours = ch.call(
        lambda c: (
            c.query(
                f"SELECT colour, count() FROM {ch.db}.residents FINAL GROUP BY colour"
            ).result_rows
        )
    )
    return {
        "residents": total,
        "colours": {str(k): int(v) for k, v in colours},
        "vaccination_share": round(vacc / total, 4) if total else None,
        "address_share": round(addr / total, 4) if total else None,
        "by_district": by_district,
    }


async def quality_report(ch: ClickHouse, ledger: ImportLedger) -> dict[str, Any]:
    complete, reports, fresh = await asyncio.gather(
        asyncio.to_thread(completeness, ch), ledger.reports(), ledger.freshness()
    )
    by_source: dict[str, dict[str, float]] = defaultdict(
        lambda: {"imports": 0, "rows": 0, "matched": 0, "considered": 0}
    )
    reports = [r for r in reports if r["kind"] != "residents"]
    for r in reports:
        s = by_source[r["kind"]]
        s["imports"] += 1
        s["rows"] += r["rows"]
        s["matched"] += r["outcomes"].get("matched", 0)
        s["considered"] += r["rows"] - r["outcomes"].get("duplicate", 0)
    now = datetime.now(UTC)
    freshness = {}
    for source, newest in fresh.items():
        ts = datetime.fromisoformat(newest)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        freshness[source] = {
            "newest_record": newest,
            "age_hours": round((now - ts).total_seconds() / 3600, 1),
        }
    return {
        "completeness": complete,
        "match_rates": {
            "by_source": {
                k: {
                    "imports": int(v["imports"]),
                    "rows": int(v["rows"]),
                    "matched": int(v["matched"]),
                    "match_rate": round(v["matched"] / v["considered"], 4)
                    if v["considered"]
                    else None,
                }
                for k, v in by_source.items()
            },
            "by_import": [
                {
                    "import_id": r["import_id"],
                    "kind": r["kind"],
                    "rows": r["rows"],
                    "match_rate": r["match_rate"],
                }
                for r in reports
            ],
        },
        "freshness": freshness,
    }
