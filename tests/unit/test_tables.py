from pathlib import Path

import pytest

from infra.tables import TableError, read_table, table_from_bytes


def test_csv_with_bom_and_short_rows(tmp_path: Path) -> None:
    f = tmp_path / "v.csv"
    f.write_bytes("\ufeffperson_id,name\n001090123456,An\n001090123457\n".encode())
    header, rows = read_table(f)
    assert header == ["person_id", "name"]
    assert list(rows) == [
        {"person_id": "001090123456", "name": "An"},
        {"person_id": "001090123457", "name": None},
    ]


def test_jsonl_bad_lines_become_error_rows(tmp_path: Path) -> None:
    f = tmp_path / "v.jsonl"
    f.write_bytes(b'{"person_id": "1", "dose": 2}\n{oops\n[1]\n\n')
    header, rows = read_table(f)
    got = list(rows)
    assert header == ["person_id", "dose"] and got[0] == {"person_id": "1", "dose": "2"}
    assert "not valid JSON" in got[1]["__error__"] and "not a JSON object" in got[2]["__error__"]


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("v.xlsx", b"x", "unsupported file type"),
        ("v.csv", b"\xff\xfe\x00", "not UTF-8"),
        ("v.csv", b"", "no header row"),
        ("v.jsonl", b"[1]\n", "not a JSON object"),
    ],
)
def test_unreadable_files_say_why(tmp_path: Path, name: str, data: bytes, fragment: str) -> None:
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(TableError, match=fragment):
        read_table(f)


def test_uploads_are_sniffed() -> None:
    header, rows = table_from_bytes(b'{"a": 1}\n{"a": 2}\n', "upload")
    assert header == ["a"] and [r["a"] for r in rows] == ["1", "2"]
    header, rows = table_from_bytes(b"a,b\n1,2\n", "upload")
    assert header == ["a", "b"] and list(rows) == [{"a": "1", "b": "2"}]


def test_oversized_fields_and_lines_are_error_rows_and_the_rest_still_counts() -> None:
    big = "x" * 200_000
    _, rows = table_from_bytes(f"a,b\n1,2\n3,{big}\n5,6\n".encode(), "t.csv")
    got = list(rows)
    assert got[0] == {"a": "1", "b": "2"} and got[2] == {"a": "5", "b": "6"}
    assert "field larger than field limit" in got[1]["__error__"]
    assert big[:100] not in got[1]["__error__"]

    body = b'{"a": "1"}\n{"a": "' + b"y" * 20_000 + b'"}\n{"a": "3"}\n'
    _header, rows = table_from_bytes(body, "t.jsonl")
    got = list(rows)
    assert got[0] == {"a": "1"} and got[2] == {"a": "3"}
    assert "longer than 10,000 characters" in got[1]["__error__"]

    body = b'{"a": "1"}\n{"a": "' + b"z" * (2 << 20) + b'"}\n{"a": "3"}\n'
    got = list(table_from_bytes(body, "t.jsonl")[1])
    assert got[0] == {"a": "1"} and got[2] == {"a": "3"}
    assert "line longer than" in got[1]["__error__"]


def test_broken_utf8_midway_keeps_the_rows_before() -> None:
    _header, rows = table_from_bytes(b"a,b\n1,2\n" + b"3,\xff\xfe\n" * 3000, "t.csv")
    got = list(rows)
    assert got[0] == {"a": "1", "b": "2"} and "not UTF-8" in got[-1]["__error__"]
