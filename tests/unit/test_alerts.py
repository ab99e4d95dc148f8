"""Alerts, pure: building them from flags and reports, the follow-up steps, and the
webhooks' signature, back-off and where a receiver may be."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from infra.webhooks import backoff, signature, signature_ok, url_problem
from tracing.alerts import (
    AlertError,
    AlertWithdrawn,
    exposure_alert,
    next_status,
    venue_alert_id,
    venue_alerts,
    withdrawal,
)
from tracing.events import ExposureFlagged
from tracing.exposure import Exposure
from tracing.visits import Visit


def t(hh: int, mm: int = 0) -> datetime:
    return datetime(2021, 11, 10, hh, mm, tzinfo=UTC)


def flag(**changes: object) -> ExposureFlagged:
    fields: dict[str, object] = {
        "exposure_id": "e" * 24,
        "report_id": "r1",
        "person_key": "pk-C",
        "tier": "F1",
        "via_key": "pk-A",
        "reason": "co-location",
        "checkpoint_id": "cp1",
        "district": "Ba Đình",
        "overlap_start": t(10, 45),
        "overlap_end": t(11),
        "overlap_minutes": 15.0,
        "rule_version": "moh-2021",
        "flagged_at": t(22),
        "withdrawn": False,
        "version": 7,
    }
    return ExposureFlagged(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_flag_is_an_alert_for_the_persons_district() -> None:
    d = exposure_alert(flag())
    assert d is not None
    assert (d.alert_id, d.kind, d.scope, d.withdrawn, d.version) == (
        "e" * 24,
        "exposure",
        "d:Ba Đình",
        False,
        7,
    )
    assert d.body["person_key"] == "pk-C" and d.body["tier"] == "F1"
    assert d.body["overlap_start"] == "2021-11-10T10:45:00+00:00"
    assert d.at == t(22)  # event time, the same on a replay


def test_the_same_decision_has_the_same_fingerprint_and_a_new_one_another() -> None:
    first = exposure_alert(flag())
    again = exposure_alert(flag())
    assert first is not None and again is not None and first.fingerprint == again.fingerprint
    corrected = exposure_alert(flag(version=9))
    withdrawn = exposure_alert(flag(withdrawn=True))
    moved = exposure_alert(flag(overlap_start=t(10, 40), overlap_minutes=20.0))
    prints = {x.fingerprint for x in (first, corrected, withdrawn, moved) if x is not None}
    assert len(prints) == 4


def test_no_alert_without_a_district_but_a_withdrawal_goes_where_the_alert_is() -> None:
    assert exposure_alert(flag(district="")) is None
    gone = exposure_alert(flag(district="", withdrawn=True, version=9))
    assert gone is not None and gone.withdrawn and gone.scope == "" and gone.body == {}


def visit(person: str, cp: str, start: datetime, end: datetime) -> Visit:
    return Visit(f"{person}-{cp}-{start:%H%M}", person, cp, start, end, "gate")


def exposure(person: str, cp: str | None, start: datetime, end: datetime, **kw: str) -> Exposure:
    return Exposure(
        "r1",
        person,
        kw.get("tier", "F1"),  # type: ignore[arg-type]
        kw.get("via", "A"),
        kw.get("reason", "co-location"),  # type: ignore[arg-type]
        cp,
        start,
        end,
    )


PLACES = {
    "shop": {"owner": "Cửa hàng Hoa", "name": "Hoa, Kim Mã"},
    "office": {"owner": "Công ty X", "name": "X tầng 3"},
    "gate": {"name": "Cổng Ba Đình"},  # no owner: nobody to tell
}
WINDOW = (t(8), t(20))


def test_venue_alerts_count_flagged_visitors_per_slot_and_never_name_them() -> None:
    f0 = [
        visit("A", "shop", t(10, 10), t(11, 5)),
        visit("A", "shop", t(15, 20), t(15, 40)),
        visit("A", "gate", t(9), t(9, 5)),
        visit("A", "office", t(6), t(7)),  # before the window: not an infectious visit
    ]
    exposures = [
        exposure("C", "shop", t(10, 45), t(11, 5)),
        exposure("D", "shop", t(10, 44), t(11, 5)),
        exposure("E", "shop", t(15, 20), t(15, 40)),
        exposure("C", "shop", t(15, 20), t(15, 40)),  # C again, later: counted once in total
        exposure("H", None, t(8), t(20), reason="household"),
        exposure("G", "shop", t(16), t(17), tier="F2", via="C"),  # through an F1, not the F0
    ]
    (d,) = venue_alerts("r1", "A", f0, exposures, PLACES, WINDOW, t(20))
    assert d.kind == "venue" and d.scope == "o:Cửa hàng Hoa"
    assert d.alert_id == venue_alert_id("r1", "shop", "Cửa hàng Hoa")
    assert d.body["slots"] == [
        {
            "start": "2021-11-10T10:00:00+00:00",
            "end": "2021-11-10T11:30:00+00:00",
            "visitors_flagged": 2,
        },
        {
            "start": "2021-11-10T15:00:00+00:00",
            "end": "2021-11-10T16:00:00+00:00",
            "visitors_flagged": 2,
        },
    ]
    assert d.body["visitors_flagged"] == 3
    assert d.body["checkpoint_name"] == "Hoa, Kim Mã"
    text = repr(d.body)
    assert not any(f"'{p}'" in text for p in ("A", "C", "D", "E", "G", "H"))


def test_venue_slots_merge_and_stay_inside_the_window() -> None:
    f0 = [
        visit("A", "office", t(7, 50), t(8, 20)),  # starts before the window
        visit("A", "office", t(8, 25), t(8, 40)),  # the same half hour: one slot
    ]
    (d,) = venue_alerts("r1", "A", f0, [], PLACES, WINDOW, t(20))
    assert d.body["slots"] == [
        {
            "start": "2021-11-10T08:00:00+00:00",
            "end": "2021-11-10T09:00:00+00:00",
            "visitors_flagged": 0,
        }
    ]
    assert d.body["visitors_flagged"] == 0


def test_a_venue_alert_changes_only_when_what_it_says_changes() -> None:
    f0 = [visit("A", "shop", t(10), t(11))]
    one = venue_alerts("r1", "A", f0, [exposure("C", "shop", t(10), t(11))], PLACES, WINDOW, t(20))
    same = venue_alerts("r1", "A", f0, [exposure("C", "shop", t(10), t(11))], PLACES, WINDOW, t(20))
    more = venue_alerts(
        "r1",
        "A",
        f0,
        [exposure("C", "shop", t(10), t(11)), exposure("D", "shop", t(10), t(11))],
        PLACES,
        WINDOW,
        t(20),
    )
    assert one[0].fingerprint == same[0].fingerprint != more[0].fingerprint
    assert one[0].alert_id == more[0].alert_id
    other_owner = {**PLACES, "shop": {"owner": "Chủ mới"}}
    (moved,) = venue_alerts("r1", "A", f0, [], other_owner, WINDOW, t(20))
    assert moved.alert_id != one[0].alert_id and moved.scope == "o:Chủ mới"


def test_a_withdrawal_is_its_own_decision() -> None:
    w = withdrawal("a" * 24, "venue", "o:X", t(20))
    assert w.withdrawn and w.body == {} and w.scope == "o:X"
    assert w.fingerprint == withdrawal("a" * 24, "venue", "o:X", t(21)).fingerprint


@pytest.mark.parametrize(
    ("status", "step", "after"),
    [
        ("open", "ack", "acknowledged"),
        ("acknowledged", "ack", "acknowledged"),
        ("open", "contacted", "acknowledged"),
        ("acknowledged", "quarantined", "acknowledged"),
        ("acknowledged", "tested", "acknowledged"),
        ("open", "result", "closed"),
        ("acknowledged", "result", "closed"),
        ("closed", "ack", "closed"),
        ("closed", "contacted", "closed"),
    ],
)
def test_follow_up_steps(status: str, step: str, after: str) -> None:
    assert next_status(status, step) == after  # type: ignore[arg-type]


def test_a_withdrawn_alert_takes_no_step() -> None:
    with pytest.raises(AlertWithdrawn, match="withdrawn"):
        next_status("withdrawn", "ack")
    with pytest.raises(AlertError, match="unknown alert status"):
        next_status("lost", "ack")


def test_signature_is_the_hmac_of_the_body() -> None:
    body = b'{"alert": 1}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret", body) == f"sha256={expected}"
    assert signature_ok("s3cret", body, f"sha256={expected}")
    assert not signature_ok("s3cret", body + b" ", f"sha256={expected}")
    assert not signature_ok("other", body, f"sha256={expected}")
    assert not signature_ok("s3cret", body, None)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(a, 1.0, 300.0) for a in range(10)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
        256.0,
        300.0,
    ]
    assert backoff(10_000, 0.5, 60.0) == 60.0
    with pytest.raises(ValueError, match="attempt"):
        backoff(-1, 1.0, 2.0)


def fake_dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str) -> list[str]:
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    return resolve


DNS = fake_dns(
    {
        "hooks.example.org": ["93.184.216.34"],
        "sneaky.example.org": ["93.184.216.34", "10.0.0.5"],
        "intranet.health.local": ["10.20.0.7"],
    }
)
LOOPBACK = ["127.0.0.1", "::1", "localhost"]


@pytest.mark.parametrize(
    ("url", "allow", "problem"),
    [
        ("https://hooks.example.org/dancu", [], None),
        ("http://127.0.0.1:9000/hook", LOOPBACK, None),
        ("http://localhost:9000/hook", LOOPBACK, None),
        ("http://[::1]:9000/hook", LOOPBACK, None),
        ("http://intranet.health.local/hook", ["10.20.0.0/16"], None),
        ("http://127.0.0.1:9000/hook", [], "private, loopback or reserved"),
        ("http://169.254.169.254/latest/meta-data", LOOPBACK, "private, loopback or reserved"),
        ("http://sneaky.example.org/", [], "private, loopback or reserved"),
        ("http://intranet.health.local/hook", [], "private, loopback or reserved"),
        ("ftp://hooks.example.org/", [], "only http and https"),
        ("file:///etc/passwd", [], "only http and https"),
        ("https://user:pw@hooks.example.org/", [], "credentials"),
        ("https:///nohost", [], "names no host"),
        ("https://nowhere.invalid/", [], "cannot be resolved"),
        ("http://127.0.0.1:99999/", LOOPBACK, "not a valid URL"),
    ],
)
def test_where_a_webhook_may_point(url: str, allow: list[str], problem: str | None) -> None:
    found = url_problem(url, allow, DNS)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_venue_window_edges_are_event_time() -> None:
    # A visit that ends exactly at the window's start never counts.
    f0 = [visit("A", "shop", t(7), t(8))]
    assert venue_alerts("r1", "A", f0, [], PLACES, WINDOW, t(20)) == []
    assert venue_alerts("r1", "A", f0, [], PLACES, (t(7) + timedelta(minutes=59), t(9)), t(20))
