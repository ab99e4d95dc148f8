"""ClickHouse adapter: one client (chDB in process, or a server over HTTP), versioned
migrations, the columnar visit sink and the analytics queries.

chDB and the sync client block: every call goes through :meth:`ClickHouse.call` under one
lock, and async callers run it in a worker thread (``asyncio.to_thread``), never on the loop.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from tracing.visits import Visit

T = TypeVar("T")
_VERSION = re.compile(r"^(\d{4})_.*\.sql$")

VISIT_COLUMNS = [
    "scan_id",
    "person_key",
    "checkpoint_id",
    "district",
    "ward",
    "t_in",
    "t_out",
    "source",
    "recorded_at",
]


def visit_rows(
    visits: Sequence[Visit], places: dict[str, dict[str, str]], now: datetime
) -> list[list[Any]]:
    """The ``visits`` rows of a batch (columns in :data:`VISIT_COLUMNS`), each with the
    district and ward of its checkpoint."""
    rows = []
    for v in visits:
        place = places.get(v.checkpoint_id) or {}
        rows.append(
            [
                v.scan_id,
                v.person_key,
                v.checkpoint_id,
                place.get("district", "unknown"),
                place.get("ward", ""),
                v.t_in,
                v.t_out,
                v.source,
                now,
            ]
        )
    return rows


def connect(url: str) -> Client:
    if url.startswith("chdb:"):
        return clickhouse_connect.get_client(dsn=url)
    return clickhouse_connect.get_client(dsn=url, connect_timeout=5, send_receive_timeout=60)


class ClickHouse:
    """The project's ClickHouse: a database name, a client, a lock."""

    def __init__(self, url: str, database: str) -> None:
        self.url = url
        self.db = database
        self._client: Client | None = None
        self._lock = threading.RLock()

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.url)
        return self._client

    def call(self, fn: Callable[[Client], T]) -> T:
        with self._lock:
            return fn(self.client)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # Schema ---------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply the versioned migration files not yet applied; returns versions applied."""

        def apply(c: Client) -> list[int]:
            c.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
            c.command(
                f"CREATE TABLE IF NOT EXISTS {self.db}.schema_migrations "
                "(version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
                "ENGINE = MergeTree ORDER BY version"
            )
            done = {
                r[0]
                for r in c.query(f"SELECT version FROM {self.db}.schema_migrations").result_rows
            }
            applied = []
            for version, name, sql in migrations():
                if version in done:
                    continue
                # Comment lines go first, so a ';' inside a comment never splits a statement.
                code = "\n".join(
                    line for line in sql.splitlines() if not line.lstrip().startswith("--")
                )
                for statement in filter(None, (part.strip() for part in code.split(";"))):
                    c.command(statement.replace("{db}", self.db))
                c.insert(
                    f"{self.db}.schema_migrations",
                    [[version, name, datetime.now(UTC)]],
                    column_names=["version", "name", "applied_at"],
                )
                applied.append(version)
            return applied

        return self.call(apply)

    # Visits ---------------------------------------------------------------------------
    def insert_visits(self, visits: Sequence[Visit], places: dict[str, dict[str, str]]) -> None:
        """Columnar insert of a batch of visits (one insert per batch)."""
        if not visits:
            return
        rows = visit_rows(visits, places, datetime.now(UTC))
        cols = [list(c) for c in zip(*rows, strict=True)]
        self.call(
            lambda c: c.insert(
                f"{self.db}.visits", cols, column_names=VISIT_COLUMNS, column_oriented=True
            )
        )

    def written_scans(self, rows: Sequence[Sequence[Any]], chunk: int = 250) -> set[str]:
        """The scan IDs of these ``visits`` rows (columns as :data:`VISIT_COLUMNS`) that
        the table holds already: the check of rows that may be a replay (infra/replays.py).
        Looked up by the table's key (checkpoints, then a time range, then scan IDs), so the
        primary index keeps the read small; ``chunk`` rows a query keep it well under
        ClickHouse's ``max_query_size`` (256 KiB) with IDs of the longest allowed length."""
        i_id, i_cp, i_t = (VISIT_COLUMNS.index(c) for c in ("scan_id", "checkpoint_id", "t_in"))
        sql = (
            f"SELECT DISTINCT scan_id FROM {self.db}.visits WHERE checkpoint_id IN %(cps)s "
            "AND t_in >= fromUnixTimestamp64Milli(%(lo)s, 'UTC') "
            "AND t_in <= fromUnixTimestamp64Milli(%(hi)s, 'UTC') AND scan_id IN %(ids)s"
        )
        found: set[str] = set()
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            times = [as_utc(r[i_t]).timestamp() for r in part]
            params = {
                "cps": sorted({str(r[i_cp]) for r in part}),
                "ids": sorted({str(r[i_id]) for r in part}),
                "lo": int(min(times) * 1000) - 1,  # whole milliseconds, either way
                "hi": int(max(times) * 1000) + 1,
            }

            def fetch(c: Client, p: dict[str, object] = params) -> list[Any]:
                return list(c.query(sql, parameters=p).result_rows)

            found.update(str(r[0]) for r in self.call(fetch))
        return found

    def visit_totals(self) -> tuple[int, int]:
        """(distinct scans, raw rows) in the visits table."""
        row = self.call(
            lambda c: c.query(
                f"SELECT uniqExact(scan_id), count() FROM {self.db}.visits"
            ).result_rows[0]
        )
        return int(row[0]), int(row[1])

    def visits_by_district(self) -> dict[str, int]:
        rows = self.call(
            lambda c: (
                c.query(
                    f"SELECT district, uniqExact(scan_id) FROM {self.db}.visits GROUP BY district "
                    "ORDER BY district"
                ).result_rows
            )
        )
        return {str(d): int(n) for d, n in rows}

    def iter_visits(self, since: datetime, chunk: int = 50_000) -> Iterator[list[Visit]]:
        """Visits since a time, deduplicated, in chunks (for rebuilding Redis)."""
        sql = (
            "SELECT scan_id, any(person_key), any(checkpoint_id), any(t_in), any(t_out), "
            f"any(source) FROM {self.db}.visits WHERE t_in >= %(since)s "
            "GROUP BY scan_id ORDER BY scan_id LIMIT %(limit)s OFFSET %(offset)s"
        )
        offset = 0
        while True:
            params: dict[str, object] = {"since": since, "limit": chunk, "offset": offset}

            def fetch(c: Client, p: dict[str, object] = params) -> list[Any]:
                return list(c.query(sql, parameters=p).result_rows)

            rows = self.call(fetch)
            if not rows:
                return
            yield [Visit(r[0], r[1], r[2], as_utc(r[3]), as_utc(r[4]), r[5]) for r in rows]
            offset += chunk

    def ping(self) -> None:
        self.call(lambda c: c.query("SELECT 1"))


def as_utc(value: datetime) -> datetime:
    """A ClickHouse DateTime64 read back (naive means UTC) as an aware UTC time."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def migrations() -> list[tuple[int, str, str]]:
    """The migration files shipped in infra/migrations, in version order."""
    folder = resources.files("infra").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = _VERSION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found)
