"""`audioverse audit --sql`: several statements, CSV and JSON output, and the same one-line error
as `run`/`status` for a bucket that does not exist (the run r1 of tests/test_audit.py)."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter

from pipeline.errors import EXIT_CONFIG, EXIT_STORAGE
from tests.test_audit import RUN_URI, SEGMENTS, main, stored  # noqa: F401 - the fixture

COUNT_BY_TYPE = "SELECT content_type, count(*) AS n FROM annotations GROUP BY 1 ORDER BY 1"


def test_every_statement_is_printed_in_order(stored, capsys):  # noqa: F811
    assert main([RUN_URI, "--sql", "SELECT count(*) AS segments FROM annotations; "
                                   "SELECT 'a;b' AS text; "
                                   "SELECT count(*) AS rejects FROM rejects"]) == 0
    out = capsys.readouterr().out
    blocks = [b.splitlines() for b in out.strip().split("\n\n")]
    assert [b[0].strip() for b in blocks] == ["segments", "text", "rejects"]
    assert blocks[0][2].strip() == str(len(SEGMENTS))
    assert blocks[1][2].strip() == "a;b"            # a ';' inside a string is not a split
    assert blocks[2][2].strip() == "3"


def test_csv_is_every_row_with_a_header(stored, capsys):  # noqa: F811
    assert main([RUN_URI, "--format", "csv", "--sql", COUNT_BY_TYPE]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["content_type"]: int(r["n"]) for r in rows} == dict(Counter(s[2] for s in SEGMENTS))


def test_csv_and_json_are_not_cut_at_the_table_limit(stored, capsys):  # noqa: F811
    # 12 rows; the table's default would print 50, so cut with --limit 5 and check both ways
    assert main([RUN_URI, "--format", "json", "--sql", "SELECT segment_id FROM annotations"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(SEGMENTS)
    assert main([RUN_URI, "--format", "json", "--limit", "5", "--sql",
                 "SELECT segment_id FROM annotations"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 5 and "only the first 5 rows" in captured.err


def test_json_keeps_types_and_nested_values(stored, capsys):  # noqa: F811
    assert main([RUN_URI, "--format", "json", "--sql",
                 "SELECT segment_id, duration_s, drop_reason, event_labels FROM annotations "
                 "ORDER BY segment_id LIMIT 1; SELECT 1 AS one"]) == 0
    first, second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    row = first[0]
    assert row["segment_id"] == "rec-a-0" and row["duration_s"] == 4.0
    assert row["drop_reason"] is None
    assert [e["name"] for e in row["event_labels"]] == ["Speech", "Male speech"]
    assert second == [{"one": 1}]


def test_an_empty_query_is_an_sql_error(stored, capsys):  # noqa: F811
    assert main([RUN_URI, "--sql", " ; "]) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith("audioverse: SQL error: ")


def test_a_misspelt_bucket_says_the_bucket_does_not_exist(stored, capsys):  # noqa: F811
    assert main(["s3://no-such-bucket-audit-sql/out/runs/r1/", "--sql", "SELECT 1"]) == \
        EXIT_STORAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bucket does not exist" in err
