"""Reading lead files: dotted CSV columns, JSON Lines, line numbers for unreadable rows."""

from __future__ import annotations

from producers.importer import read_csv, read_jsonl, text_stream, unflatten


def test_dotted_columns_become_nested_fields_and_empty_cells_vanish() -> None:
    assert unflatten(
        {"phone": "79", "utm.utm_source": "s", "utm.utm_medium": "", "flag": "true"}
    ) == {"phone": "79", "utm": {"utm_source": "s"}, "flag": True}


def test_csv_rows_carry_their_file_line_numbers() -> None:
    rows = list(read_csv(text_stream("phone,utm.utm_source\n79,a\n80,b\n"), None))
    assert [(r.line, r.lead["phone"]) for r in rows] == [(2, "79"), (3, "80")]


def test_jsonl_keeps_line_numbers_and_reports_broken_lines() -> None:
    rows = list(read_jsonl(text_stream('{"a": 1}\n\n{broken\n{"key": "k1", "a": 2}\n'), "key"))
    assert [r.line for r in rows] == [1, 3, 4]
    assert rows[1].error is not None and rows[1].error.field == "line"
    assert (rows[2].lead, rows[2].idempotency_key) == ({"a": 2}, "k1")
