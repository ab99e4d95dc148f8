"""Exposure rules on a hand-computed scenario, and a property: the result does not depend on
the order in which visits arrive."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tracing.exposure import (
    Case,
    ExposureRules,
    MemoryVisits,
    extend,
    infectious_window,
    trace,
)
from tracing.visits import Visit

RULES = ExposureRules()


def t(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2021, 11, day, hh, mm, tzinfo=UTC)


def v(person: str, cp: str, start: datetime, end: datetime) -> Visit:
    return Visit(f"{person}-{cp}-{start:%d%H%M}", person, cp, start, end, "gate")


CASE = Case(
    "r1", "A", sample_time=t(11, 8), reported_at=t(12, 12), symptomatic=True, onset=t(10, 0)
)
VISITS = [
    v("A", "cp1", t(10, 10), t(10, 11)),
    v("B", "cp1", t(10, 10, 46), t(10, 11, 30)),  # 14 minutes with A: not F1
    v("C", "cp1", t(10, 10, 45), t(10, 11, 30)),  # 15 minutes: F1
    v("D", "cp1", t(10, 10, 44), t(10, 12)),  # 16 minutes: F1
    v("A", "cp2", t(7, 20), t(7, 21)),  # before the window (onset - 2 days = 8th 00:00)
    v("E", "cp2", t(7, 20), t(7, 21)),
    v("C", "cp3", t(10, 14), t(10, 15)),  # C's own window: from 10th 10:45
    v("G", "cp3", t(10, 14, 10), t(10, 15)),  # F2 through C
    v("B", "cp3", t(10, 14), t(10, 15)),  # not F1 by 14 min, F2 through C
    v("D", "cp3", t(10, 14), t(10, 15)),  # F1 already: stays F1
    v("C", "cp4", t(9, 9), t(9, 10)),  # before C's exposure began
    v("X", "cp4", t(9, 9), t(9, 10)),  # ... so X is not F2
    v("C", "cp5", t(12, 13), t(12, 14)),  # after the report: C was isolated
    v("Y", "cp5", t(12, 13), t(12, 14)),
]


def summary(exposures):  # type: ignore[no-untyped-def]
    return [
        (e.tier, e.person_key, e.via, e.reason, e.checkpoint_id, round(e.overlap_minutes))
        for e in exposures
    ]


def test_the_window_runs_from_two_days_before_onset_to_the_report() -> None:
    w = infectious_window(CASE, RULES)
    assert (w.start, w.end) == (t(8, 0), t(12, 12))
    asymptomatic = Case("r2", "A", sample_time=t(11, 8), reported_at=t(12, 12))
    assert infectious_window(asymptomatic, RULES).start == t(9, 8)
    old = Case("r3", "A", sample_time=t(1, 8), reported_at=t(30, 12))
    assert infectious_window(old, RULES).start == t(16, 12)  # clipped to 14 days


def test_hand_computed_scenario() -> None:
    result = trace(CASE, MemoryVisits.of(VISITS), household=["A", "H1"], rules=RULES)
    assert summary(result) == [
        ("F1", "C", "A", "co-location", "cp1", 15),
        ("F1", "D", "A", "co-location", "cp1", 16),
        ("F1", "H1", "A", "household", None, round((t(12, 12) - t(8, 0)).total_seconds() / 60)),
        # B missed F1 by a minute but stayed on with C (F1 from 10:45): F2 at cp1, its
        # earliest qualifying overlap (10:46-11:30), before the later one at cp3.
        ("F2", "B", "C", "co-location", "cp1", 44),
        ("F2", "G", "C", "co-location", "cp3", 50),
    ]
    c = next(e for e in result if e.person_key == "C")
    assert (c.overlap_start, c.overlap_end) == (t(10, 10, 45), t(10, 11))


def test_the_threshold_and_window_are_configurable() -> None:
    looser = ExposureRules(version="test", min_overlap=timedelta(minutes=14))
    people = {e.person_key for e in trace(CASE, MemoryVisits.of(VISITS), [], looser)}
    assert "B" in people and "X" not in people


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_result_does_not_depend_on_arrival_order(seed: int) -> None:
    rng = random.Random(seed)
    people = [f"p{i}" for i in range(12)]
    visits = []
    for i in range(60):
        start = t(10, 0) + timedelta(minutes=rng.randrange(0, 48 * 60, 5))
        end = start + timedelta(minutes=rng.choice((10, 15, 20, 30, 60, 90)))
        visits.append(Visit(f"s{i}", rng.choice(people), f"cp{rng.randrange(4)}", start, end, "x"))
    case = Case("r", "p0", sample_time=t(11, 9), reported_at=t(12, 0))
    expected = trace(case, MemoryVisits.of(visits), ["p1"], RULES)
    shuffled = visits[:]
    rng.shuffle(shuffled)
    assert trace(case, MemoryVisits.of(shuffled), ["p1"], RULES) == expected
    assert all(e.overlap_minutes >= 15 for e in expected if e.reason == "co-location")


def _random_visits(rng: random.Random, n: int, people: int) -> list[Visit]:
    names = [f"p{i}" for i in range(people)]
    out = []
    for i in range(n):
        start = t(10, 0) + timedelta(minutes=rng.randrange(0, 48 * 60, 5))
        end = start + timedelta(minutes=rng.choice((10, 15, 20, 30, 60, 90)))
        out.append(Visit(f"s{i}", rng.choice(names), f"cp{rng.randrange(4)}", start, end, "x"))
    return out


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 100_000), late_share=st.sampled_from((0.1, 0.3, 0.6, 1.0)))
def test_late_visits_joined_one_by_one_give_the_full_trace(seed: int, late_share: float) -> None:
    """Scans that arrive after the report, in any order, each joined incrementally
    (:func:`extend`, or a re-trace for the F0's own), end where a trace over everything
    ends."""
    rng = random.Random(seed)
    visits = _random_visits(rng, 70, 10)
    case = Case("r", "p0", sample_time=t(11, 9), reported_at=t(12, 0))
    household = ["p1"]
    expected = trace(case, MemoryVisits.of(visits), household, RULES)
    order = visits[:]
    rng.shuffle(order)
    cut = len(order) - int(len(order) * late_share)
    seen, late = order[:cut], order[cut:]
    current = trace(case, MemoryVisits.of(seen), household, RULES)
    for visit in late:
        seen.append(visit)
        lookup = MemoryVisits.of(seen)
        step = extend(case, current, visit, lookup, RULES)
        current = trace(case, lookup, household, RULES) if step is None else step
    assert current == expected


def test_a_late_visit_makes_a_new_f1_and_their_f2() -> None:
    before = [x for x in VISITS if x.person_key != "D"]
    current = trace(CASE, MemoryVisits.of(before), ["A", "H1"], RULES)
    assert "D" not in {e.person_key for e in current}
    late = v("D", "cp1", t(10, 10, 44), t(10, 12))
    d_at_cp3 = v("D", "cp3", t(10, 14), t(10, 15))
    lookup = MemoryVisits.of([*before, d_at_cp3, late])
    after = extend(CASE, current, late, lookup, RULES)
    assert after == trace(CASE, lookup, ["A", "H1"], RULES)
    assert ("F1", "D") in {(e.tier, e.person_key) for e in after or []}
    own = v("A", "cp9", t(11, 9), t(11, 10))  # the F0's own late visit: traced again
    assert extend(CASE, after or [], own, MemoryVisits.of([*before, own]), RULES) is None


def test_graph_clusters_and_hotspots() -> None:
    from tracing.graph import clusters, contact_graph, hotspots

    second = Case("r2", "Z", sample_time=t(11, 8), reported_at=t(12, 12))
    visits = [*VISITS, v("Z", "cp3", t(10, 14, 30), t(10, 15, 30))]
    lookup = MemoryVisits.of(visits)
    exposures = [
        *trace(CASE, lookup, ["A", "H1"], RULES),
        *trace(second, lookup, [], RULES),
    ]
    g = contact_graph({"r1": "A", "r2": "Z"}, exposures)
    assert g.nodes["A"]["tier"] == "F0" and g.nodes["Z"]["tier"] == "F0"
    assert g.nodes["C"]["tier"] == "F1" and g.nodes["G"]["tier"] == "F1"  # F1 of Z beats F2
    assert g.edges["A", "C"]["checkpoint_id"] == "cp1" and g.edges["A", "C"]["minutes"] == 15
    assert g.edges["A", "H1"]["reason"] == "household"
    case_visits = [x for x in visits if x.person_key in ("A", "Z")]
    (cluster,) = clusters(g, case_visits)  # A and Z share F1s (C, D, G) at cp3
    assert cluster.cases == ("A", "Z")
    assert hotspots(case_visits) == []  # no checkpoint has both A's and Z's visits
    near = [*case_visits, v("Z", "cp1", t(12, 9), t(12, 10))]
    (spot,) = hotspots(near)
    assert spot.checkpoint_id == "cp1" and spot.cases == ("A", "Z")


def test_a_cluster_id_never_reads_as_a_personal_id() -> None:
    """Pseudonyms are hex, and sometimes their first 12 characters are all digits: the
    dashboard's markup would then carry what looks like a CCCD number."""
    import re

    from tracing.graph import cluster_id

    digits = "781477658543" + "ab" * 10
    assert not re.search(r"(?<![0-9A-Za-z.])[0-9]{12}(?![0-9A-Za-z])", cluster_id(digits))
    assert cluster_id(digits) != cluster_id("781477658544" + "ab" * 10)
