from datetime import date

from registry.matching import name_similarity, normalise_name, verify


def test_names_compare_without_diacritics_case_or_spacing() -> None:
    assert normalise_name("  Đặng   THỊ Hồng ") == "dang thi hong"
    assert name_similarity("Nguyen van  an", "Nguyễn Văn An") == 100


def test_verify_outcomes() -> None:
    dob = date(1990, 3, 15)
    assert verify("NGUYEN VAN AN", dob, "Nguyễn Văn An", dob).matched
    wrong_name = verify("Trần Thị Bích", dob, "Nguyễn Văn An", dob)
    assert not wrong_name.matched and "name differs" in wrong_name.reason
    wrong_dob = verify("Nguyễn Văn An", date(1990, 3, 16), "Nguyễn Văn An", dob)
    assert not wrong_dob.matched and "birth date 1990-03-16" in wrong_dob.reason


def test_any_other_spelling_is_a_mismatch_with_its_score_until_it_is_an_alias() -> None:
    dob = date(1990, 3, 15)
    near = verify("Nguyễn Văn Anh", dob, "Nguyễn Văn An", dob)
    assert not near.matched and near.name_differs and "similarity 96/100" in near.reason
    assert verify("Nguyễn Văn Anh", dob, "Nguyễn Văn An", dob, aliases={"nguyen van anh"}).matched


def test_a_birth_year_contradicting_the_id_is_a_mismatch() -> None:
    dob = date(1991, 3, 15)
    result = verify("An", dob, "An", dob, id_birth_year=1990)
    assert not result.matched and "contradicts the ID (1990)" in result.reason
