from datetime import date

import pytest

from registry.health import apply_record
from registry.imports import KINDS, RowError, header_problems, parse_resident, parse_row
from registry.reference import hanoi_wards

VAX = KINDS["vaccinations"]
ROW = {
    "person_id": "001090123456",
    "name": "Nguyễn Văn An",
    "dob": "1990-03-15",
    "dose": "2",
    "vaccine": "Pfizer",
    "date": "2021-09-01",
    "site": "TYT Kim Mã",
}


def test_good_row_parses_and_has_a_stable_fingerprint() -> None:
    a = parse_row(VAX, 1, dict(ROW))
    b = parse_row(VAX, 9, {**ROW, "site": "elsewhere", "name": "nguyen van an"})
    assert a.error is None and a.record["dose"] == 2 and a.record["dob"] == date(1990, 3, 15)
    assert a.fingerprint == b.fingerprint  # same person, same dose: the same record


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"person_id": "12345"}, "exactly 12 digits"),
        ({"person_id": "099090123456"}, "unknown province code 099"),
        ({"dose": "two"}, "dose: not a whole number"),
        ({"dose": "9"}, "dose: must be 1-5"),
        ({"date": "31/02/2021"}, "date: not a date"),
        ({"dob": "1899-12-31"}, "dob: 1899-12-31 is before 1900-01-01"),
        ({"date": "2099-01-01"}, "date: 2099-01-01 is in the future"),
        ({"person_id": "٠٠١٠٩٠١٢٣٤٥٦"}, "exactly 12 digits, got other characters"),
        ({"vaccine": ""}, "empty required column(s): vaccine"),
    ],
)
def test_bad_rows_name_the_problem(change: dict[str, str], fragment: str) -> None:
    parsed = parse_row(VAX, 1, {**ROW, **change})
    assert parsed.error is not None and fragment in parsed.error


def test_header_reports_missing_and_extra_columns() -> None:
    missing, extra = header_problems(VAX, ["person_id", "name", "dob", "dose", "colour"])
    assert missing == ["vaccine", "date"] and extra == ["colour"]


def test_day_first_dates_and_zone_less_times_are_hanoi_time() -> None:
    f0 = parse_row(
        KINDS["f0-positives"],
        1,
        {
            "person_id": "001090123456",
            "name": "An",
            "dob": "15/03/1990",
            "sample_time": "2021-11-20T08:00:00",
            "symptomatic": "có",
        },
    )
    assert f0.error is None
    assert f0.record["sample_time"] == "2021-11-20T01:00:00+00:00"
    assert f0.record["symptomatic"] is True


def test_resident_rows_check_district_and_ward() -> None:
    wards = {d: {w.name for w in ws} for d, ws in hanoi_wards().items()}
    good = {
        "id": "001090123456",
        "name": "Nguyễn  Văn An",
        "dob": "1990-03-15",
        "gender": "Nam",
        "address": "Số 1",
        "district": "Ba Đình",
        "ward": "Phường Kim Mã",
        "household_id": "H1",
    }
    assert parse_resident(good, wards).name == "Nguyễn Văn An"
    with pytest.raises(RowError, match="not a ward of Ba Đình"):
        parse_resident({**good, "ward": "Phường Tràng Tiền"}, wards)
    with pytest.raises(RowError, match="century digit 0 says Nam but gender is Nữ"):
        parse_resident({**good, "gender": "Nữ"}, wards)


def test_applying_records_is_idempotent() -> None:
    fields: dict[str, str] = {"doses": "[]"}
    rec = {"dose": 1, "date": "2021-08-01", "vaccine": "AstraZeneca"}
    fields.update(apply_record(fields, "vaccinations", rec))
    assert apply_record(fields, "vaccinations", rec) == {}
    assert '"AstraZeneca", 1' in fields["doses"]


def test_a_birth_year_contradicting_the_id_is_left_to_matching_not_invalid() -> None:
    parsed = parse_row(VAX, 1, {**ROW, "dob": "1991-01-01"})
    assert parsed.error is None and parsed.id_birth_year == 1990


def test_test_results_rows() -> None:
    kind = KINDS["test-results"]
    row = {
        "person_id": "001090123456",
        "name": "An",
        "dob": "1990-03-15",
        "result": "Negative",
        "test_type": "pcr",
        "sampled_at": "2021-11-01T08:00:00+07:00",
    }
    parsed = parse_row(kind, 1, row)
    assert parsed.error is None and parsed.record["result"] == "negative"
    assert parsed.record["test_type"] == "PCR"
    bad = parse_row(kind, 2, {**row, "result": "maybe"})
    assert bad.error is not None and "result: must be positive or negative" in bad.error
