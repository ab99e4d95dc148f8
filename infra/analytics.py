"""The dashboard's ClickHouse queries: each reads the small tables the migrations keep
(``scans_hourly``, ``checkpoint_visits_hourly``, ``resident_groups``; ``f0_cases`` and
``exposures``, one row per case and per flagged person), never the raw visits, and
returns plain rows for the pure rules in :mod:`registry.analytics`.

Every method blocks (chDB or the sync client, under :meth:`ClickHouse.call`'s lock):
async callers run it in a thread. Times go in as epoch milliseconds, so no client-side
time-zone conversion can shift them; days are Hà Nội days.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from infra.clickhouse import ClickHouse, as_utc

VN = "Asia/Ho_Chi_Minh"
_DAY_MS = 86_400_000

CASE_COLUMNS = [
    "report_id",
    "person_key",
    "district",
    "ward",
    "sample_time",
    "reported_at",
    "status",
    "version",
    "recorded_at",
]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _intervals(db: str) -> str:
    """Who is F0 (0), F1 (1) or F2 (2) from when to when, by the card rules: an F0 from
    the sample until a recovery recorded after it; an F1 from the report that flagged
    them until ``f1_days`` after the last contact; an F2 likewise with ``f2_days``."""
    return f"""
        SELECT person_key, toUInt8(0) AS tier, sample_time AS start,
               if(empty(after), toDateTime64('2299-12-31 00:00:00', 3, 'UTC'),
                  arrayMin(after)) AS stop
        FROM (
            SELECT c.person_key AS person_key, c.sample_time AS sample_time,
                   arrayFilter(x -> x >= c.sample_time, r.recoveries) AS after
            FROM (SELECT person_key, sample_time FROM {db}.f0_cases FINAL
                  WHERE status != 'withdrawn') AS c
            LEFT JOIN (
                SELECT person_key,
                       groupArray(toDateTime64(toDate(JSONExtractString(record,
                           'recovered_date')), 3, '{VN}')) AS recoveries
                FROM {db}.health_records FINAL
                WHERE kind = 'recoveries'
                  AND person_key IN (SELECT person_key FROM {db}.f0_cases)
                GROUP BY person_key
            ) AS r ON r.person_key = c.person_key
        )
        UNION ALL
        SELECT person_key, toUInt8(if(flag = 'F1', 1, 2)) AS tier, flagged_at AS start,
               overlap_end + toIntervalDay(if(flag = 'F1', %(f1_days)s, %(f2_days)s)) AS stop
        FROM (
            SELECT person_key, tier AS flag, flagged_at, overlap_end
            FROM {db}.exposures FINAL WHERE withdrawn = 0
        )
    """


class Analytics:
    """Read side of the dashboard (and the ``f0_cases`` sink) on one ClickHouse."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.ch = clickhouse

    def _rows(self, sql: str, params: dict[str, object] | None = None) -> list[Any]:
        return self.ch.call(lambda c: list(c.query(sql, parameters=params or {}).result_rows))

    # Visits ---------------------------------------------------------------------------
    def scans_by_hour(self, since: datetime, district: str | None = None) -> list[Any]:
        """``(hour, district, scans)`` from ``since`` (an hour's start) on."""
        where = "hour >= toDateTime(intDiv(toInt64(%(since)s), 1000), 'UTC')"
        params: dict[str, object] = {"since": _ms(since)}
        if district is not None:
            where += " AND district = %(district)s"
            params["district"] = district
        rows = self._rows(
            f"SELECT hour, district, sum(scans) AS n FROM {self.ch.db}.scans_hourly "
            f"WHERE {where} GROUP BY hour, district HAVING n > 0 ORDER BY hour, district",
            params,
        )
        return [(as_utc(h), str(d), int(n)) for h, d, n in rows]

    def top_checkpoints(self, since: datetime, limit: int) -> list[Any]:
        """``(checkpoint_id, name, district, visits)``, most visited first from ``since``;
        name and district as registered (a checkpoint never registered: ``unknown``)."""
        db = self.ch.db
        rows = self._rows(
            f"""
            SELECT t.checkpoint_id, c.name, if(c.district = '', 'unknown', c.district),
                   t.visits
            FROM (
                SELECT checkpoint_id, sum(visits) AS visits
                FROM {db}.checkpoint_visits_hourly
                WHERE hour >= toDateTime(intDiv(toInt64(%(since)s), 1000), 'UTC')
                GROUP BY checkpoint_id
                ORDER BY visits DESC, checkpoint_id
                LIMIT %(limit)s
            ) AS t
            LEFT JOIN (
                SELECT checkpoint_id, argMax(name, updated_at) AS name,
                       argMax(district, updated_at) AS district
                FROM {db}.checkpoints GROUP BY checkpoint_id
            ) AS c ON c.checkpoint_id = t.checkpoint_id
            ORDER BY t.visits DESC, t.checkpoint_id
            """,
            {"since": _ms(since), "limit": limit},
        )
        return [(str(i), str(n), str(d), int(v)) for i, n, d, v in rows]

    # Residents ------------------------------------------------------------------------
    def coverage_groups(
        self, year: int, bounds: Sequence[int], full_doses: int, by_ward: bool = False
    ) -> list[Any]:
        """``(district, [ward,] band, residents, one_dose, full)``: ``band`` is how many
        of ``bounds`` (ascending lower ages) the age this year reaches (0: birth year
        unknown, or younger than the first bound)."""
        ward = "ward, " if by_ward else ""
        rows = self._rows(
            f"""
            SELECT district, {ward}
                   if(birth_year = 0, 0,
                      arrayCount(b -> toInt32(%(year)s) - toInt32(birth_year) >= b,
                                 %(bounds)s)) AS band,
                   sum(residents), sumIf(residents, doses >= 1),
                   sumIf(residents, doses >= %(full)s)
            FROM {self.ch.db}.resident_groups
            GROUP BY district, {ward} band
            ORDER BY district, {ward} band
            """,
            {"year": year, "bounds": list(bounds), "full": full_doses},
        )
        return [tuple(r) for r in rows]

    def colour_groups(self) -> list[Any]:
        """``(district, stored colour, residents)``."""
        rows = self._rows(
            f"SELECT district, colour, sum(residents) FROM {self.ch.db}.resident_groups "
            "GROUP BY district, colour ORDER BY district, colour"
        )
        return [(str(d), str(c), int(n)) for d, c, n in rows]

    # Cases and exposures ----------------------------------------------------------------
    def flagged_now(self, now: datetime, f1_days: int, f2_days: int) -> list[Any]:
        """``(district, stored colour, tier, people)`` of everyone F0, F1 or F2 at ``now``
        (each once, at their most severe tier): what the stored colours do not show yet.
        The flagged people go on the join's right (built in memory): far fewer than the
        residents."""
        db = self.ch.db
        rows = self._rows(
            f"""
            SELECT r.district, r.colour, a.tier, count()
            FROM {db}.residents AS r FINAL
            INNER JOIN (
                SELECT person_key, min(tier) AS tier FROM ({_intervals(db)})
                WHERE toUnixTimestamp64Milli(start) <= %(now)s
                  AND %(now)s < toUnixTimestamp64Milli(stop)
                GROUP BY person_key
            ) AS a ON r.person_key = a.person_key
            GROUP BY r.district, r.colour, a.tier
            """,
            {"now": _ms(now), "f1_days": f1_days, "f2_days": f2_days},
        )
        return [(str(d), str(c), int(t), int(n)) for d, c, t, n in rows]

    def active_by_day(
        self, first: datetime, count: int, now: datetime, f1_days: int, f2_days: int
    ) -> list[Any]:
        """``(k, f0, f1, f2)``: people active at instant k, ``min(first + k days, now)``
        for k < ``count`` (the end of each day, today counted at ``now``), each once at
        their most severe tier. Instants without anyone are left out.

        The instants an interval covers are a range of k, found by arithmetic: Hà Nội
        keeps no daylight saving, so its days are all 24 hours."""
        db = self.ch.db

        def index(t: str) -> str:  # how many instants fall before ``t``
            return (
                f"if({t} > %(now)s, %(count)s, least(greatest(intDiv({t} - %(first)s "
                f"+ {_DAY_MS} - 1, {_DAY_MS}), 0), %(count)s))"
            )

        rows = self._rows(
            f"""
            SELECT k, countIf(tier = 0), countIf(tier = 1), countIf(tier = 2)
            FROM (
                SELECT k, cityHash64(person_key) AS person, min(tier) AS tier
                FROM (
                    SELECT person_key, tier,
                           {index("toUnixTimestamp64Milli(start)")} AS lo,
                           {index("toUnixTimestamp64Milli(stop)")} AS hi
                    FROM ({_intervals(db)})
                    WHERE lo < hi
                )
                ARRAY JOIN range(lo, hi) AS k
                GROUP BY k, person
            )
            GROUP BY k ORDER BY k
            """,
            {
                "first": _ms(first),
                "count": count,
                "now": _ms(now),
                "f1_days": f1_days,
                "f2_days": f2_days,
            },
        )
        return [(int(k), int(a), int(b), int(c)) for k, a, b, c in rows]

    def new_cases(self, since: datetime, until: datetime) -> list[Any]:
        """``(district, ward, people)`` reported F0 in ``(since, until]`` (each person
        once; withdrawn reports left out)."""
        rows = self._rows(
            f"""
            SELECT district, ward, uniqExact(person_key)
            FROM {self.ch.db}.f0_cases FINAL
            WHERE status != 'withdrawn'
              AND reported_at > fromUnixTimestamp64Milli(toInt64(%(since)s), 'UTC')
              AND reported_at <= fromUnixTimestamp64Milli(toInt64(%(until)s), 'UTC')
            GROUP BY district, ward
            """,
            {"since": _ms(since), "until": _ms(until)},
        )
        return [(str(d), str(w), int(n)) for d, w, n in rows]

    # The f0_cases sink ----------------------------------------------------------------
    def insert_cases(self, rows: Sequence[Sequence[object]]) -> None:
        if not rows:
            return
        db = self.ch.db
        self.ch.call(
            lambda c: c.insert(f"{db}.f0_cases", [list(r) for r in rows], column_names=CASE_COLUMNS)
        )

    def refresh_residents(self) -> None:
        """Recount ``resident_groups`` now (after a bulk load; it refreshes by itself)."""
        db = self.ch.db
        self.ch.call(lambda c: c.command(f"SYSTEM REFRESH VIEW {db}.resident_groups_mv"))
        self.ch.call(lambda c: c.command(f"SYSTEM WAIT VIEW {db}.resident_groups_mv"))


class ClickHouseCaseSink:
    """The case sink port on ClickHouse, off the event loop."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.analytics = Analytics(clickhouse)

    async def insert(self, rows: Sequence[Sequence[object]]) -> None:
        await asyncio.to_thread(self.analytics.insert_cases, rows)
