from datetime import date

from registry.matching import name_similarity, normalise_name, verify


def test_names_compare_without_diacritics_case_or_spacing() -> None:
    assert normalise_name("  Đặng   THỊ Hồng ") == "dang thi hong"
    assert name_similarity("Nguyen van  an", "Nguyễn Văn An") == 100


def test_verify_outcomes() -> None:
    dob = date(1990, 3, 15)
    assert verify("NGUYEN VAN AN", dob, "Nguyễn Văn An", dob).matched
    wrong_name = verify("Trần Thị Bích", dob, "Nguyễn Văn An", dob)
    assert not wrong_name.matched and "name does not match" in wrong_name.reason
    wrong_dob = verify("Nguyễn Văn An", date(1990, 3, 16), "Nguyễn Văn An", dob)
    assert not wrong_dob.matched and "birth date 1990-03-16" in wrong_dob.reason
