"""The traffic the fault tests send: an F0 report whose exposures are known (F1: C, D by
co-location and H of the F0's household; F2: B and G through C), residents of one
district with cards of every colour, and bulk scans of people no report touches."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from registry.ids import make_id

DISTRICT, WARD = "Ba Đình", "Phường Kim Mã"
T0 = (datetime.now(UTC) - timedelta(hours=12)).replace(second=0, microsecond=0)
REPORTED = T0 + timedelta(hours=10)

NAMES = ["A", "B", "C", "D", "G", "H"]
# Serials far from those the bulk scans use (make_id's last six digits).
IDS = {n: make_id("001", 1990, "Nam", 900_100 + i) for i, n in enumerate(NAMES)}
F1 = {"C", "D", "H"}
F2 = {"B", "G"}
CHECKPOINTS = ("chaos-cp1", "chaos-cp3")


def bystanders(n: int) -> list[tuple[str, int, str]]:
    """(ID, birth year, gender) of n more residents of the district."""
    out = []
    for i in range(n):
        year, gender = 1950 + i % 50, ("Nam", "Nữ")[i % 2]
        out.append((make_id("001", year, gender, 910_000 + i), year, gender))
    return out


GIVEN = ("An", "Bình", "Chi", "Dũng", "Giang", "Hà", "Khánh", "Lan", "Minh", "Ngọc")


def name_of(i: int) -> str:
    return f"Trần {GIVEN[i // 10 % 10]} {GIVEN[i % 10]}"


def residents_csv(extra: list[tuple[str, int, str]]) -> str:
    """The scenario's people (A and H one household) and ``extra`` residents."""
    rows = ["id,name,dob,gender,address,district,ward,household_id"]
    for n, pid in IDS.items():
        home = "CHA" if n in ("A", "H") else f"CH{n}"
        rows.append(f"{pid},Nguyễn Văn {n},1990-01-01,Nam,Số 1 Kim Mã,{DISTRICT},{WARD},{home}")
    for i, (pid, year, gender) in enumerate(extra):
        rows.append(
            f"{pid},{name_of(i)},{year}-01-01,{gender},Số {i} Kim Mã,{DISTRICT},{WARD},CB{i}"
        )
    return "\n".join(rows) + "\n"


def vaccinations_csv(extra: list[tuple[str, int, str]]) -> str:
    """Two doses for every third extra resident, one dose for every third after it."""
    rows = ["person_id,name,dob,dose,vaccine,date"]
    for i, (pid, year, _) in enumerate(extra):
        doses = 2 if i % 3 == 0 else 1 if i % 3 == 1 else 0
        for d in range(1, doses + 1):
            rows.append(f"{pid},{name_of(i)},{year}-01-01,{d},Pfizer,2021-0{6 + d}-01")
    return "\n".join(rows) + "\n"


def results_csv(extra: list[tuple[str, int, str]]) -> str:
    """A recent negative PCR for every fifth extra resident, a positive for every
    seventh."""
    recent = (datetime.now(UTC) - timedelta(hours=5)).replace(microsecond=0).isoformat()
    rows = ["person_id,name,dob,result,test_type,sampled_at"]
    for i, (pid, year, _) in enumerate(extra):
        if i % 7 == 3:
            rows.append(f"{pid},{name_of(i)},{year}-01-01,positive,PCR,{recent}")
        elif i % 5 == 2:
            rows.append(f"{pid},{name_of(i)},{year}-01-01,negative,PCR,{recent}")
    return "\n".join(rows) + "\n"


def checkpoints() -> list[dict[str, str]]:
    return [{"checkpoint_id": cp, "type": "restaurant", "district": DISTRICT} for cp in CHECKPOINTS]


def _visit(name: str, cp: str, start: int, end: int) -> dict[str, object]:
    """A visit from ``start`` to ``end`` minutes after T0."""
    return {
        "scan_id": f"chaos-{name}-{cp}-{start}",
        "person_id": IDS[name],
        "checkpoint_id": cp,
        "ts": (T0 + timedelta(minutes=start)).isoformat(),
        "t_out": (T0 + timedelta(minutes=end)).isoformat(),
        "source": "gate",
    }


def visits() -> list[dict[str, object]]:
    cp1, cp3 = CHECKPOINTS
    return [
        _visit("A", cp1, 0, 60),
        _visit("B", cp1, 46, 90),  # 14 minutes with A: not F1, but 44 with C: F2
        _visit("C", cp1, 45, 90),  # 15 minutes: F1
        _visit("D", cp1, 44, 120),  # 16 minutes: F1
        _visit("C", cp3, 180, 240),
        _visit("G", cp3, 190, 240),  # F2 through C
    ]


def report(report_id: str) -> dict[str, object]:
    return {
        "report_id": report_id,
        "person_id": IDS["A"],
        "sample_time": (T0 + timedelta(hours=5)).isoformat(),
        "symptomatic": False,
        "reported_at": REPORTED.isoformat(),
    }


BULK_CHECKPOINTS = [f"chaos-bulk-{i}" for i in range(20)]


def bulk_scans(n: int, tag: str, seed: int = 1) -> list[dict[str, object]]:
    """``n`` scans of 2,000 people nobody reports, over the last ten hours."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    people = [make_id("001", 1960 + i % 40, ("Nam", "Nữ")[i % 2], 500_000 + i) for i in range(2000)]
    return [
        {
            "scan_id": f"{tag}-{i}",
            "person_id": rng.choice(people),
            "checkpoint_id": rng.choice(BULK_CHECKPOINTS),
            "ts": (now - timedelta(minutes=rng.uniform(1, 600))).isoformat(),
            "source": "gate",
        }
        for i in range(n)
    ]


def expected_colours(extra: list[tuple[str, int, str]]) -> dict[str, str]:
    """The colours once the imports and the report are applied (F2s keep their own colour
    when it is already no better than yellow, as B's and G's "none" is)."""
    out = {IDS[n]: "red" for n in ("A", *sorted(F1))}
    out |= {IDS[n]: "none" for n in F2}
    for i, (pid, _, _) in enumerate(extra):
        if i % 7 == 3:
            out[pid] = "red"  # a positive test: F0
        elif i % 3 == 0:
            out[pid] = "green"  # two doses
        elif i % 3 == 1 or i % 5 == 2:
            out[pid] = "yellow"  # one dose, or a negative test
        else:
            out[pid] = "none"
    return out


def with_records(extra: list[tuple[str, int, str]]) -> int:
    """How many of ``extra`` have a health record (a dose or a test) to restore."""
    return sum(1 for i in range(len(extra)) if i % 3 in (0, 1) or i % 7 == 3 or i % 5 == 2)
