"""What the fault tests share: a private Redis they may kill, which process of a platform
is the API and which a worker, and exact counts read from the stores afterwards
(ClickHouse, both Redis visit indexes, residents' statuses)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar, cast

import httpx
import orjson

from infra.redis_store import VisitIndex, make_redis
from infra.settings import RedisSettings, Settings
from tests.integration.conftest import Platform, free_port

T = TypeVar("T")


def poll(fetch: Callable[[], T], ok: Callable[[T], bool], timeout: float) -> tuple[bool, object]:
    """Call ``fetch`` until ``ok`` holds for its value or ``timeout`` passes: (whether it
    held, the last value or error). A fetch that raises counts as not yet: a store may be
    on its way back."""
    deadline = time.monotonic() + timeout
    value: object = None
    while time.monotonic() < deadline:
        try:
            value = fetch()
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            value = exc
        else:
            if ok(value):  # type: ignore[arg-type]
                return True, value
        time.sleep(0.3)
    return False, value


def wait_for(fetch: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str) -> T:
    """:func:`poll`, failing the test when ``ok`` never held."""
    held, value = poll(fetch, ok, timeout)
    if not held:
        raise AssertionError(f"{what}: not within {timeout}s (last: {str(value)[:500]})")
    return value  # type: ignore[return-value]


# --- a Redis of the test's own ---------------------------------------------------------


class PrivateRedis:
    """A redis-server on a free port with its data under ``root``: the test may kill it,
    wipe it and start it again (the shared Redis on 16379 is never touched)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.root), "--appendonly", "yes", "--save", "",
            "--logfile", str(self.root / "redis.log"), "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"redis-server not ready in {timeout}s: {self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown save, clients cut mid-command."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def wipe(self) -> None:
        """Its data gone (the directory emptied)."""
        assert self.proc is None or self.proc.poll() is not None, "kill it first"
        shutil.rmtree(self.root, ignore_errors=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        path = self.root / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


def on_redis(base: Settings, url: str) -> Settings:
    """The shared settings with another Redis (for :class:`Platform`: its own settings, its
    tokens and devices, then live there too)."""
    return base.model_copy(update={"redis": RedisSettings(url=url)})


# --- the platform's processes ----------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[1])


def alive(pid: int) -> bool:
    """Running (a zombie is dead)."""
    return _ppid(pid) is not None


def descendants(pid: int) -> list[int]:
    parents = {p: _ppid(p) for p in (int(d) for d in os.listdir("/proc") if d.isdigit())}
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _role(pid: int) -> str | None:
    args = cmdline(pid)
    return args[args.index("--role") + 1] if "--role" in args[:-1] else None


def platform_pids(platform: Platform) -> list[int]:
    """Every process of the platform (the API first)."""
    assert platform.proc is not None
    return [platform.proc.pid, *descendants(platform.proc.pid)]


@dataclass(frozen=True)
class Roles:
    """Which of the platform's processes serve the API and which run the Faust agents,
    as the fault tests need them. The one place that knows how ``dancu up`` lays out its
    processes: the public API is the process the test started; the agents run in the
    processes started with ``--role worker`` (``dancu up --workers N``) or, before there
    were any, in the store's owner (``--role store``). ``worker_what`` says which, for
    the chaos table."""

    api: int
    workers: tuple[int, ...]
    worker_what: str


def roles(platform: Platform) -> Roles:
    pids = platform_pids(platform)
    api = pids[0]
    for role, what in (("worker", "a worker process"), ("store", "the store/worker process")):
        found = tuple(p for p in pids[1:] if _role(p) == role)
        if found:
            return Roles(api, found, what)
    return Roles(api, (api,), "the all-in-one process (API and worker are one)")


def wait_gone(pids: Iterable[int], timeout: float = 60) -> None:
    left = list(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in left if alive(p)]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes still alive after {timeout}s: {left}")


def sigkill_api(platform: Platform) -> None:
    """SIGKILL the API process; wait for the whole platform to be gone (its children die
    with their parent), so it can start again on the same data."""
    assert platform.proc is not None
    everyone = platform_pids(platform)
    os.kill(roles(platform).api, signal.SIGKILL)
    platform.proc.wait(30)
    wait_gone(everyone)


# --- exact counts afterwards -----------------------------------------------------------

_QUERY = """
import json, sys
from infra.clickhouse import ClickHouse
ch = ClickHouse(sys.argv[1], sys.argv[2])
try:
    out = [
        ch.call(lambda c: c.query(q.format(db=ch.db)).result_rows)
        for q in json.loads(sys.argv[3])
    ]
finally:
    ch.close()
print(json.dumps(out, default=str))
"""


def clickhouse(platform: Platform, *queries: str) -> list[list[list[object]]]:
    """The rows of each query (``{db}`` is the database), read by a process of its own:
    the embedded ClickHouse is one process's at a time, so stop the platform first."""
    s = platform.settings
    done = subprocess.run(
        [sys.executable, "-c", _QUERY, s.clickhouse_url, s.clickhouse.database,
         json.dumps(queries)],
        env=platform.env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows: list[list[list[object]]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


@dataclass(frozen=True)
class Stored:
    """Per scan ID: its rows in ClickHouse as the platform reads them (FINAL) and as
    written (before merges collapse replays); per (report, person) likewise for
    exposures."""

    visits: Counter[str]
    visit_rows: Counter[str]
    exposures: Counter[tuple[str, str, str]]  # (report_id, person_key, tier), withdrawn = 0
    exposure_rows: Counter[tuple[str, str]]


def stored(platform: Platform, scan_ids: Iterable[str] | None = None) -> Stored:
    """What ClickHouse holds (scans limited to ``scan_ids`` when given)."""
    visits, raw, exposures, exposure_rows = clickhouse(
        platform,
        "SELECT scan_id, count() FROM {db}.visits FINAL GROUP BY scan_id",
        "SELECT scan_id, count() FROM {db}.visits GROUP BY scan_id",
        "SELECT report_id, person_key, tier, count() FROM {db}.exposures FINAL "
        "WHERE withdrawn = 0 GROUP BY report_id, person_key, tier",
        "SELECT report_id, person_key, count() FROM {db}.exposures GROUP BY report_id, person_key",
    )
    keep = set(scan_ids) if scan_ids is not None else None

    def counts(rows: list[list[object]]) -> Counter[str]:
        return Counter(
            {str(s): int(n) for s, n in rows if keep is None or s in keep}  # type: ignore[call-overload]
        )

    return Stored(
        counts(visits),
        counts(raw),
        Counter({(str(r), str(k), str(t)): int(n) for r, k, t, n in exposures}),  # type: ignore[call-overload]
        Counter({(str(r), str(k)): int(n) for r, k, n in exposure_rows}),  # type: ignore[call-overload]
    )


def hourly_counts(platform: Platform) -> tuple[int, int]:
    """The visits the dashboard's insert-time views counted: (by hour and district, by
    hour and checkpoint). Exact only if no replay reached them twice."""
    by_district, by_checkpoint = clickhouse(
        platform,
        "SELECT sum(scans) FROM {db}.scans_hourly",
        "SELECT sum(visits) FROM {db}.checkpoint_visits_hourly",
    )
    return int(by_district[0][0]), int(by_checkpoint[0][0])  # type: ignore[call-overload]


def resends_skipped(platform: Platform) -> int:
    """Replayed visit rows the sink found written before and skipped (from the logs)."""
    logs = [platform.log, *(platform.settings.data_dir / "logs").glob("*.log")]
    return sum(
        int(m.group(1))
        for log in logs
        if log.exists()
        for m in _SKIPPED.finditer(log.read_text("utf-8", "replace"))
    )


_SKIPPED = re.compile(r"(\d+) replayed visits rows written before")


@dataclass(frozen=True)
class Indexed:
    """The two Redis visit indexes: scan ID → its entries in the person index and in the
    checkpoint index; ``entries``: every (key, member, check-in) of both, for digests.

    The check-in (the entry's score) is in whole milliseconds, truncated: ClickHouse keeps
    times to the millisecond (``DateTime64(3)``), so an index rebuilt from it holds
    12:00:01.234 where the live one held the device's 12:00:01.234567."""

    by_person: Counter[str]
    by_checkpoint: Counter[str]
    entries: list[tuple[str, str, int]]


def indexed(settings: Settings) -> Indexed:
    """Both visit indexes of a platform, read whole (its Redis, its prefix)."""

    async def read() -> Indexed:
        redis = make_redis(settings.redis_url)
        index = VisitIndex(redis, settings.redis_prefix, timedelta(days=settings.visit_window_days))
        counts: list[Counter[str]] = []
        entries: list[tuple[str, str, int]] = []
        try:
            for pattern in (index._person("*"), index._checkpoint("*")):
                found: Counter[str] = Counter()
                async for key in redis.scan_iter(match=pattern, count=1000):
                    pairs = await redis.zrange(key, 0, -1, withscores=True)
                    for member, score in cast(list[tuple[str, float]], pairs):
                        found[str(member).split("|", 1)[0]] += 1
                        ms = round(float(score) * 1e6) // 1000  # whole µs, then truncated
                        entries.append((str(key), str(member), ms))
                counts.append(found)
        finally:
            await redis.aclose()
        return Indexed(counts[0], counts[1], sorted(entries))

    return asyncio.run(read())


def once(expected: Iterable[str], found: Counter[str]) -> tuple[int, int, int]:
    """(missing, duplicated, unexpected) of ``expected`` IDs in ``found``: exactly once
    each is (0, 0, 0)."""
    want = set(expected)
    missing = sum(1 for s in want if found[s] == 0)
    duplicated = sum(1 for s in want if found[s] > 1)
    unexpected = sum(1 for s in found if s not in want)
    return missing, duplicated, unexpected


def statuses(platform: Platform, ids: Iterable[str], district: str) -> dict[str, list[object]]:
    """Each resident's status as an official of their district reads it."""
    official = platform.api("official", district)
    out: dict[str, list[object]] = {}
    for pid in ids:
        r = official.get(f"/v1/residents/{pid}/status", timeout=30)
        assert r.status_code == 200, r.text
        s = r.json()
        out[pid] = [s["colour"], s["reasons"], s["rule_version"]]
    return out


def digest(value: object) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
