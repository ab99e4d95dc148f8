"""The chaos table: each fault test records what it did and what happened (events sent,
lost, duplicated, recovery time) as one JSON line; ``python -m tests.chaos.report`` prints
the table ``make chaos`` ends with (README carries it).

The file is ``$DANCU_CHAOS_REPORT`` (``make chaos`` sets it), else
``.dancu/chaos-report.jsonl``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson


def report_path() -> Path:
    return Path(os.environ.get("DANCU_CHAOS_REPORT", ".dancu/chaos-report.jsonl"))


@dataclass(frozen=True)
class Outcome:
    test: str  # what was broken, in a few words
    events: int  # records sent through the fault (scans, reports, requests)
    lost: int  # acknowledged but missing afterwards
    duplicated: int  # stored more than once
    recovery_s: float  # from the fault's end until everything was caught up
    note: str = ""


def record(outcome: Outcome) -> None:
    """Append one line to the report (the test still asserts its own counts)."""
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {**asdict(outcome), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with path.open("ab") as f:
        f.write(orjson.dumps(line) + b"\n")


def table(path: Path) -> str:
    """The Markdown table of a report (the last line per test wins)."""
    rows: dict[str, dict[str, object]] = {}
    if path.exists():
        for raw in path.read_bytes().splitlines():
            if raw.strip():
                row = orjson.loads(raw)
                rows[str(row["test"])] = row
    head = (
        "| test | events | lost | duplicated | recovery time | note |\n"
        "|---|---:|---:|---:|---:|---|"
    )
    lines = [
        f"| {r['test']} | {int(r['events']):,} | {r['lost']} | {r['duplicated']} "  # type: ignore[call-overload]
        f"| {float(r['recovery_s']):.1f} s | {r.get('note', '')} |"  # type: ignore[arg-type]
        for r in rows.values()
    ]
    return "\n".join([head, *lines]) if lines else head + "\n(no fault test recorded)"


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else report_path()))
