from datetime import date

import pytest

from registry.cccd import parse_cccd
from registry.errors import InvalidQrPayload

TODAY = date(2026, 11, 27)
GOOD = (
    "001090123456|012345678|Nguyễn Văn An|15031990|Nam|"
    "Số 12 Ngõ 34 Kim Mã, Phường Kim Mã, Quận Ba Đình, Hà Nội|10052021"
)


def test_design_example_parses() -> None:
    card = parse_cccd(GOOD + "\n", today=TODAY)
    assert card.as_dict() == {
        "id": "001090123456",
        "old_id": "012345678",
        "name": "Nguyễn Văn An",
        "dob": "1990-03-15",
        "gender": "Nam",
        "address": "Số 12 Ngõ 34 Kim Mã, Phường Kim Mã, Quận Ba Đình, Hà Nội",
        "issued": "2021-05-10",
    }


def test_empty_old_id_is_none_and_bytes_are_accepted() -> None:
    card = parse_cccd(("  " + GOOD.replace("012345678", "") + "\r\n").encode(), today=TODAY)
    assert card.old_id is None


def test_newer_layout_recognised_by_content() -> None:
    fields = GOOD.split("|")
    reordered = "|".join(
        [fields[2], fields[0], fields[4], fields[3], fields[6], fields[5], fields[1]]
    )
    assert parse_cccd(reordered, today=TODAY).id == "001090123456"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("001090123456|012345678|Nguyễn Văn An", "expected 7 fields"),
        (GOOD.replace("Nguyễn Văn An", ""), "name is empty"),
        (GOOD.replace("15031990", "31021990"), "not a real date"),
        (GOOD.replace("10052021", "10052099"), "in the future"),
        (GOOD.replace("012345678", "01234"), "old ID must be 9 digits"),
        (GOOD.replace("|Nam|", "|Male|"), "gender must be Nam or Nữ"),
        (GOOD.replace("001090123456", "099090123456"), "unknown province code 099"),
        (GOOD.replace("|Nam|", "|Nữ|"), "says Nam but gender is Nữ"),
        (GOOD.replace("15031990", "15031991"), "birth year 1991 but ID says 1990"),
        # nothing read with parts ignored: whose card, which name?
        (GOOD + "|079090000001", "2 different ID numbers"),
        ("079090000001|" + GOOD, "2 different ID numbers"),
        (GOOD.replace("|Số 12", "|Hà Nội|Số 12"), "field 6 is none of a card's"),
        (GOOD.replace("|Nam|", "|Nam|Nam|"), "field 6 is none of a card's"),
        (GOOD.replace("|15031990|", "|15031990|01012020|"), "is none of a card's"),
    ],
)
def test_each_broken_rule_is_named(payload: str, fragment: str) -> None:
    with pytest.raises(InvalidQrPayload) as info:
        parse_cccd(payload, today=TODAY)
    assert any(fragment in e for e in info.value.errors), info.value.errors


def test_non_utf8_is_refused() -> None:
    with pytest.raises(InvalidQrPayload, match="not UTF-8"):
        parse_cccd(GOOD.encode("utf-16"), today=TODAY)
