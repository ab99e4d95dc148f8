from datetime import UTC, date, datetime, timedelta

import pytest

from registry.cards import HealthRecord, card_colour, load_rulebook

NOW = datetime(2021, 11, 20, 9, 0, tzinfo=UTC)
BOOK = load_rulebook()
RULES = BOOK.for_("001", NOW.date())


def days_ago(n: int) -> date:
    return (NOW - timedelta(days=n)).date()


@pytest.mark.parametrize(
    ("record", "colour", "fragment"),
    [
        (HealthRecord(), "none", "no vaccination record"),
        (HealthRecord(doses=(days_ago(3),)), "none", "less than 14 days"),
        (HealthRecord(doses=(days_ago(20),)), "yellow", "1 dose(s)"),
        (HealthRecord(doses=(days_ago(60), days_ago(20))), "green", "2 doses"),
        (HealthRecord(doses=(days_ago(60), days_ago(5))), "yellow", "not complete"),
        (
            HealthRecord(
                recovered_at=NOW - timedelta(days=100), f0_since=NOW - timedelta(days=120)
            ),
            "green",
            "recovered",
        ),
        (
            HealthRecord(
                recovered_at=NOW - timedelta(days=200), f0_since=NOW - timedelta(days=215)
            ),
            "none",
            "no vaccination",
        ),
        (
            HealthRecord(doses=(days_ago(60), days_ago(20)), f0_since=NOW - timedelta(days=1)),
            "red",
            "F0 since",
        ),
        (
            HealthRecord(doses=(days_ago(60), days_ago(20)), f1_since=NOW - timedelta(days=2)),
            "red",
            "F1 in quarantine",
        ),
        (HealthRecord(f1_since=NOW - timedelta(days=9)), "none", "no vaccination"),
        (HealthRecord(negative_test_at=NOW - timedelta(hours=30)), "yellow", "negative test"),
    ],
)
def test_colour_rules(record: HealthRecord, colour: str, fragment: str) -> None:
    status = card_colour(record, RULES, NOW)
    assert status.colour == colour
    assert any(fragment in r for r in status.reasons), status.reasons
    assert status.rule_version == "hn-2021-10"


def test_rulebook_picks_the_province_then_the_national_rule() -> None:
    assert BOOK.for_("001", date(2021, 12, 1)).version == "hn-2021-10"
    assert BOOK.for_("079", date(2021, 12, 1)).version == "vn-2021-10"


def test_colour_is_computed_when_read_so_expiries_need_no_event() -> None:
    from datetime import UTC, datetime

    from registry.cards import load_rulebook
    from registry.residents import status_view

    rules = load_rulebook()
    fields = {"province": "001", "neg_test_at": "2021-11-01T08:00:00+00:00", "colour": "yellow"}
    fresh = status_view(fields, rules, datetime(2021, 11, 2, 8, 0, tzinfo=UTC))
    assert fresh["colour"] == "yellow"
    later = status_view(fields, rules, datetime(2021, 11, 10, 8, 0, tzinfo=UTC))
    assert later["colour"] == "none"  # the stored "yellow" was only a cache
