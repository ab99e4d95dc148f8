from datetime import date

import pytest

from registry.errors import InvalidPersonalId
from registry.ids import check_id, make_id, validate_id

TODAY = date(2026, 11, 27)


def test_valid_id_decodes_province_gender_and_year() -> None:
    r = check_id("001090123456", today=TODAY)
    assert r.valid
    assert r.province is not None and r.province.name == "Hà Nội"
    assert (r.gender, r.birth_year) == ("Nam", 1990)


def test_female_2000s_digit() -> None:
    r = check_id("079305123456", today=TODAY)
    assert (r.gender, r.birth_year) == ("Nữ", 2005)


@pytest.mark.parametrize(
    ("number", "fragment"),
    [
        ("00109012345", "exactly 12 digits"),
        ("00109012345a", "exactly 12 digits"),
        ("099090123456", "unknown province code 099"),
        ("001399123456", "in the future"),
    ],
)
def test_structural_rules(number: str, fragment: str) -> None:
    r = check_id(number, today=TODAY)
    assert not r.valid
    assert any(fragment in e for e in r.errors), r.errors


def test_consistency_with_gender_and_dob() -> None:
    r = check_id("001090123456", gender="Nữ", dob=date(1999, 1, 1), today=TODAY)
    assert "century digit 0 says Nam but gender is Nữ" in r.errors
    assert "birth year 1999 but ID says 1990" in r.errors


def test_validate_raises_with_every_rule() -> None:
    with pytest.raises(InvalidPersonalId) as info:
        validate_id("099090123456", gender="Nữ")
    assert len(info.value.errors) == 2


def test_make_id_round_trips() -> None:
    number = make_id("001", 2003, "Nữ", 42)
    r = check_id(number, dob=date(2003, 5, 1), gender="Nữ", today=TODAY)
    assert r.valid and number == "001303000042"
