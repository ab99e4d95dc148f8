from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from registry.ids import check_id, make_id
from registry.reference import provinces


@given(
    province=st.sampled_from(sorted(provinces())),
    dob=st.dates(min_value=date(1900, 1, 1), max_value=date(2026, 11, 27)),
    gender=st.sampled_from(["Nam", "Nữ"]),
    serial=st.integers(0, 999_999),
)
def test_every_built_id_validates_against_its_own_birth_date_and_gender(
    province: str, dob: date, gender: str, serial: int
) -> None:
    number = make_id(province, dob.year, gender, serial)
    result = check_id(number, dob=dob, gender=gender, today=date(2026, 11, 27))
    assert result.valid, result.errors
    assert (result.birth_year, result.gender) == (dob.year, gender)
    assert result.province is not None and result.province.code == province
