"""Data quality ("đúng, đủ, sạch, sống"), the use case: completeness per district, match
rates per source and import, freshness per source."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from registry.ports import ImportLedgerPort, RegistryAnalytics


async def completeness(analytics: RegistryAnalytics) -> dict[str, Any]:
    rows, colours = await asyncio.gather(analytics.completeness(), analytics.colours())
    by_district = {}
    total = vacc = addr = 0
    for district, n, v, a in rows:
        by_district[str(district)] = {
            "residents": n,
            "vaccination_share": round(v / n, 4),
            "address_share": round(a / n, 4),
        }
        total, vacc, addr = total + n, vacc + v, addr + a
    return {
        "residents": total,
        "colours": colours,
        "vaccination_share": round(vacc / total, 4) if total else None,
        "address_share": round(addr / total, 4) if total else None,
        "by_district": by_district,
    }


def _match_rates(reports: list[dict[str, Any]]) -> dict[str, Any]:
    by_source: dict[str, dict[str, int]] = defaultdict(
        lambda: {"imports": 0, "rows": 0, "matched": 0, "considered": 0}
    )
    reports = [r for r in reports if r["kind"] != "residents"]
    for r in reports:
        s = by_source[r["kind"]]
        s["imports"] += 1
        s["rows"] += r["rows"]
        s["matched"] += r["outcomes"].get("matched", 0)
        s["considered"] += r["rows"] - r["outcomes"].get("duplicate", 0)
    return {
        "by_source": {
            k: {
                "imports": v["imports"],
                "rows": v["rows"],
                "matched": v["matched"],
                "match_rate": round(v["matched"] / v["considered"], 4) if v["considered"] else None,
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
    }


def _freshness(newest_by_source: dict[str, str], now: datetime) -> dict[str, Any]:
    out = {}
    for source, newest in newest_by_source.items():
        ts = datetime.fromisoformat(newest)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        out[source] = {
            "newest_record": newest,
            "age_hours": round((now - ts).total_seconds() / 3600, 1),
        }
    return out


async def quality_report(
    analytics: RegistryAnalytics,
    ledger: ImportLedgerPort,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    complete, reports, fresh = await asyncio.gather(
        completeness(analytics), ledger.reports(), ledger.freshness()
    )
    return {
        "completeness": complete,
        "match_rates": _match_rates(reports),
        "freshness": _freshness(fresh, clock()),
    }
