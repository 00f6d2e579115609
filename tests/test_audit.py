"""`audioverse audit`: DuckDB views over a run's / a release's Parquet on a real S3 server
(SeaweedFS), ad-hoc SQL checked against counts computed here from the rows written, and the HTML
report with its PNGs."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.audit import add_audit_parser
from pipeline.cli import main as audioverse
from pipeline.errors import EXIT_CONFIG, EXIT_STORAGE
from schemas.release import RELEASE_FORMAT, SELECTION_SCHEMA, SHARD_SCHEMA
from schemas.tables import ANNOTATIONS_SCHEMA, REJECTS_SCHEMA
from tests.conftest import LOCAL_CONFIG, ROOT, TEST_BUCKET

BASE = f"s3://{TEST_BUCKET}/audit-test"
RUN_URI = f"{BASE}/runs/r1/"
EMPTY_RUN_URI = f"{BASE}/runs/r0/"
RELEASE_URI = f"{BASE}/releases/x1"  # no trailing slash on purpose

# recording, index, content_type, language, duration_s, drop_reason, event tags, speaker_count
SEGMENTS = [
    ("rec-a", 0, "speech", "en", 4.0, None, ["Speech", "Male speech"], 1),
    ("rec-a", 1, "speech", "en", 6.5, None, ["Speech", "Conversation"], 2),
    ("rec-a", 2, "speech", "en", 0.4, "too_short", ["Speech"], 1),
    ("rec-b", 0, "speech", "de", 12.0, None, ["Speech", "Female speech"], 1),
    ("rec-b", 1, "speech", "de", 3.0, "low_asr_agreement", ["Speech"], 3),
    ("rec-c", 0, "speech", "fr", 8.0, "hallucination", ["Speech", "Music"], 2),
    ("rec-d", 0, "music", None, 30.0, None, ["Music", "Guitar"], None),
    ("rec-d", 1, "music", None, 2.5, "too_short", ["Music"], None),
    ("rec-e", 0, "sound", None, 5.0, None, ["Dog", "Bark"], None),
    ("rec-e", 1, "sound", None, 1.0, "low_snr", ["Dog"], None),
    ("rec-f", 0, "sound", None, 9.0, None, ["Rain", "Thunder"], 0),
    ("rec-f", 1, "music", None, 15.0, "caption_invalid", ["Music", "Piano"], None),
]
REJECTS = [("rec-x", "decode", "undecodable"), ("rec-y", "decode", "undecodable"),
           ("rec-z", "list", "too_large")]


def _source(run_id: str, rec: str) -> dict:
    return {"run_id": run_id, "recording_id": rec,
            "source_uri": f"s3://{TEST_BUCKET}/raw/{rec}.wav",
            "source_etag": f"etag-{rec}", "source_bytes": 1000, "pipeline_version": "test"}


def annotation_rows(run_id: str = "r1") -> list[dict]:
    rows = []
    for rec, idx, ctype, lang, dur, drop, tags, speakers in SEGMENTS:
        rows.append({
            **_source(run_id, rec), "segment_id": f"{rec}-{idx}", "segment_index": idx,
            "content_type": ctype, "language": lang, "duration_s": dur, "drop_reason": drop,
            "recording_duration_s": 60.0, "speaker_count": speakers,
            "event_labels": [{"mid": f"/m/{i}", "name": t, "score": 0.9 - 0.1 * i}
                             for i, t in enumerate(tags)],
        })
    return rows


def reject_rows(run_id: str = "r1") -> list[dict]:
    return [{**_source(run_id, rec), "stage": stage, "reason": reason, "detail": "test"}
            for rec, stage, reason in REJECTS]


def selection_rows() -> list[dict]:
    rows = []
    for i, (rec, idx, ctype, lang, dur, drop, _tags, _spk) in enumerate(SEGMENTS[:10]):
        eligible = drop is None
        rows.append({
            "run_id": "r1", "recording_id": rec, "segment_id": f"{rec}-{idx}",
            "source_uri": f"s3://{TEST_BUCKET}/raw/{rec}.wav", "source_etag": f"etag-{rec}",
            "content_type": ctype, "language": lang, "duration_s": dur, "drop_reason": drop,
            "quality_score": 0.3 + 0.06 * i, "quality_eligible": eligible,
            "quality_gate": None if eligible else "min_snr_db",
            "stratum": ctype, "split": "train" if i % 3 else "validation",
            "selected": eligible and i != 3,  # one eligible segment is not selected
        })
    return rows


def shard_rows(selection: list[dict]) -> list[dict]:
    tags = {f"{s[0]}-{s[1]}": s[6] for s in SEGMENTS}
    return [{
        "segment_id": r["segment_id"], "recording_id": r["recording_id"], "split": r["split"],
        "content_type": r["content_type"], "language": r["language"],
        "duration_s": r["duration_s"], "quality_score": r["quality_score"],
        "event_tags": tags[r["segment_id"]], "caption_speaker_count": 1 if r["language"] else 0,
        "codes": [[1, 2, 3], [4, 5, 6]], "num_codebooks": 2, "num_frames": 3, "run_id": "r1",
    } for r in selection if r["selected"]]


def _parquet(rows: list[dict], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def _put(client, uri: str, body: bytes) -> None:
    bucket, _, key = uri[len("s3://"):].partition("/")
    client.put_object(Bucket=bucket, Key=key, Body=body)


def _write_run(client, prefix: str, ann: list[dict], rej: list[dict], split_at: int) -> dict:
    files = {"annotations": [], "rejects": []}
    for n, chunk in enumerate([ann[:split_at], ann[split_at:]]):
        path = f"annotations/part-{n:05d}.parquet"
        _put(client, prefix + path, _parquet(chunk, ANNOTATIONS_SCHEMA))
        files["annotations"].append({"path": path, "rows": len(chunk)})
    _put(client, prefix + "rejects/part-00000.parquet", _parquet(rej, REJECTS_SCHEMA))
    files["rejects"].append({"path": "rejects/part-00000.parquet", "rows": len(rej)})
    summary = {"run_id": prefix.rstrip("/").rsplit("/", 1)[-1], "status": "succeeded",
               "segments": len(ann), "files": files}
    _put(client, prefix + "summary.json", json.dumps(summary).encode())
    return summary


@pytest.fixture(scope="module")
def stored(s3_server, s3_client):
    """A run r1 (12 segments in 2 files + a stray, unlisted file), an empty run r0, a release x1."""
    ann, rej = annotation_rows(), reject_rows()
    _write_run(s3_client, RUN_URI, ann, rej, split_at=7)
    # Left by an "earlier attempt": under annotations/ but not in summary.json; never read.
    _put(s3_client, RUN_URI + "annotations/part-00099.parquet",
         _parquet(ann[:5], ANNOTATIONS_SCHEMA))
    _write_run(s3_client, EMPTY_RUN_URI, [], [], split_at=0)

    sel = selection_rows()
    shards = shard_rows(sel)
    prefix = RELEASE_URI + "/"
    _put(s3_client, prefix + "selection/part-00000.parquet", _parquet(sel, SELECTION_SCHEMA))
    _put(s3_client, prefix + "train/shard-00000.parquet", _parquet(shards, SHARD_SCHEMA))
    manifest = {"format": RELEASE_FORMAT, "release_id": "x1",
                "selection_files": ["selection/part-00000.parquet"],
                "splits": {"train": {"shards": [{"path": "train/shard-00000.parquet",
                                                 "rows": len(shards)}]},
                           "validation": {"shards": []}, "test": {"shards": []}}}
    _put(s3_client, prefix + "manifest.json", json.dumps(manifest).encode())
    return {"annotations": ann, "rejects": rej, "selection": sel, "shards": shards}


def sql(capsys, uri: str, query: str, *extra: str) -> tuple[list[str], list[list[str]]]:
    """Run `audit URI --sql QUERY` in-process; (header, rows split on whitespace)."""
    assert main([uri, "--sql", query, *extra]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"\(\d+ rows?(; more not shown, raise --limit)?\)", lines[-1]), lines
    return lines[0].split(), [ln.split() for ln in lines[2:-1]]


def main(args: list[str]) -> int:
    """`audioverse audit ARGS` in this process."""
    return audioverse(["audit", *args])


def cli(*args: str):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "audit", *args],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ),
                          timeout=120)


# --- a run -----------------------------------------------------------------------------------
def test_sql_counts_by_content_type_match_rows_written(stored, capsys):
    header, rows = sql(capsys, RUN_URI,
                       "SELECT content_type, count(*) n FROM annotations GROUP BY 1 ORDER BY 1")
    assert header == ["content_type", "n"]
    expected = Counter(r["content_type"] for r in stored["annotations"])
    assert {ct: int(n) for ct, n in rows} == dict(expected)
    assert [ct for ct, _ in rows] == sorted(expected)


def test_views_read_exactly_the_listed_files(stored, capsys):
    _, rows = sql(capsys, RUN_URI, "SELECT (SELECT count(*) FROM annotations) a, "
                                   "(SELECT count(*) FROM rejects) r")
    # 12, not 17: the stray part-00099.parquet is not listed in summary.json
    assert rows == [[str(len(stored["annotations"])), str(len(stored["rejects"]))]]
    _, rows = sql(capsys, RUN_URI, "SELECT reason, count(*) FROM rejects GROUP BY 1 ORDER BY 1")
    assert {r: int(n) for r, n in rows} == dict(Counter(r["reason"] for r in stored["rejects"]))


def test_sql_over_nested_columns_and_limit(stored, capsys):
    _, rows = sql(capsys, RUN_URI, "SELECT l.name, count(*) n FROM annotations, "
                                   "unnest(event_labels) t(l) GROUP BY 1 ORDER BY n DESC, 1",
                  "--limit", "3")
    tags = Counter(t for s in SEGMENTS for t in s[6])
    assert len(rows) == 3
    top3 = sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [(n, int(c)) for n, c in rows] == top3
    out = main([RUN_URI, "--sql", "SELECT * FROM annotations", "--limit", "2"])
    assert out == 0 and "more not shown" in capsys.readouterr().out


def _check_png(path: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 200 and img.shape[1] >= 300, (path, img.shape)
    rgb = (img[..., :3].reshape(-1, 3) * 255).astype(np.uint32)
    assert rgb.std() > 2, f"{path.name} is a flat image"
    colours = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert len(colours) > 20, f"{path.name} has {len(colours)} colours"


def _report(uri: str, out: Path | None) -> tuple[list[Path], str]:
    assert main([uri, "--out", str(out)] if out else [uri]) == 0
    out = out or Path(f"audit-{uri.rstrip('/').rsplit('/', 1)[-1]}")  # the default
    pngs = sorted(out.glob("*.png"))
    return pngs, (out / "index.html").read_text()


def test_run_report_writes_html_and_pngs(stored, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pngs, page = _report(RUN_URI, None)  # no --out: ./audit-r1/
    assert (tmp_path / "audit-r1" / "index.html").is_file()
    names = {p.stem for p in pngs}
    assert names == {"hours_by_language", "kept_fraction", "drop_reasons", "duration",
                     "event_tags", "speaker_counts"}
    for png in pngs:
        _check_png(png)
        assert f"src='{png.name}'" in page
    assert page.count("<details>") >= len(pngs) + 1
    assert "FROM annotations" in page and "unnest(event_labels)" in page
    assert "a run has no quality scores" in page  # nothing computed for a run
    assert "class=\"num bad\"" not in page        # rows read == rows listed
    kept = sum(1 for s in SEGMENTS if s[5] is None)
    assert f"<td class=\"num\">{kept}</td>" in page  # summary table: segments_kept
    out = capsys.readouterr().out
    assert "index.html" in out


def test_empty_run_report_says_no_data(stored, tmp_path, capsys):
    pngs, page = _report(EMPTY_RUN_URI, tmp_path / "empty")
    assert len(pngs) == 6
    for png in pngs:
        _check_png(png)  # a "no data" figure, not a crash or a blank image
    assert page.count("no data: the queries returned no rows") == 6


def test_old_run_without_some_columns_still_reports(stored, s3_client, tmp_path, capsys):
    prefix = f"{BASE}/runs/old/"
    schema = ANNOTATIONS_SCHEMA
    for name in ("event_labels", "speaker_count"):  # as if written before they existed
        schema = schema.remove(schema.get_field_index(name))
    rows = [{k: v for k, v in r.items() if k in schema.names} for r in annotation_rows("old")]
    _put(s3_client, prefix + "annotations/part-00000.parquet", _parquet(rows, schema))
    _put(s3_client, prefix + "summary.json", json.dumps({"run_id": "old", "files": {
        "annotations": [{"path": "annotations/part-00000.parquet", "rows": len(rows)}],
        "rejects": []}}).encode())
    pngs, page = _report(prefix, tmp_path / "old")
    assert len(pngs) == 6
    for png in pngs:
        _check_png(png)
    assert page.count("not available: ") == 2  # event tags and speaker counts
    assert "no data" not in page


# --- a release -------------------------------------------------------------------------------
def test_release_views(stored, capsys):
    _, rows = sql(capsys, RELEASE_URI, "SELECT count(*) FILTER (WHERE selected) s, "
                                       "count(*) FILTER (WHERE quality_eligible) e, count(*) n "
                                       "FROM selection")
    sel = stored["selection"]
    assert rows == [[str(sum(r["selected"] for r in sel)),
                     str(sum(r["quality_eligible"] for r in sel)), str(len(sel))]]
    _, rows = sql(capsys, RELEASE_URI, "SELECT split, count(*) FROM shards GROUP BY 1 ORDER BY 1")
    assert {s: int(n) for s, n in rows} == dict(Counter(r["split"] for r in stored["shards"]))
    _, rows = sql(capsys, RELEASE_URI, "SELECT column_name FROM (DESCRIBE shards)")
    columns = {r[0] for r in rows}
    assert "codes" not in columns and {"event_tags", "caption_speaker_count"} <= columns


def test_release_report(stored, tmp_path, capsys):
    pngs, page = _report(RELEASE_URI, tmp_path / "rel")
    names = {p.stem for p in pngs}
    assert "quality_score" in names and len(names) == 7
    for png in pngs:
        _check_png(png)
        assert f"src='{png.name}'" in page
    assert "FROM shards, unnest(event_tags)" in page and "class=\"num bad\"" not in page


# --- user errors: one line, an exit code, no traceback ---------------------------------------
def test_wrong_uri_is_one_clear_line(stored):
    proc = cli(f"{BASE}/runs/nope/", "--sql", "SELECT 1")
    assert proc.returncode == EXIT_STORAGE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert (f"no summary.json or manifest.json under {BASE}/runs/nope/: not a committed run or "
            f"a finished release") in lines[0]


def test_bad_sql_is_exit_2_without_traceback(stored):
    proc = cli(RUN_URI, "--sql", "SELECT no_such_column FROM annotations")
    assert proc.returncode == EXIT_CONFIG
    assert proc.stderr.startswith("audioverse: SQL error: ") and "no_such_column" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_syntax_error_in_process(stored, capsys):
    assert main([RUN_URI, "--sql", "SELEC 1"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("audioverse: SQL error: ") and len(err.strip().splitlines()) == 1


def test_listed_file_that_cannot_be_read_is_a_storage_error(stored, s3_client, capsys):
    prefix = f"{BASE}/runs/broken/"
    summary = {"run_id": "broken", "files": {
        "annotations": [{"path": "s3://no-such-bucket-audit/x.parquet", "rows": 1}],
        "rejects": []}}
    _put(s3_client, prefix + "summary.json", json.dumps(summary).encode())
    assert main([prefix, "--sql", "SELECT 1"]) == EXIT_STORAGE
    err = capsys.readouterr().err
    assert err.startswith("audioverse: storage error: cannot read the annotations files")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_config_storage_section_is_used(stored, tmp_path, capsys):
    data = yaml.safe_load(LOCAL_CONFIG.read_text())
    data["storage"].update(endpoint_url="http://127.0.0.1:9", max_attempts=1)
    config = tmp_path / "bad-endpoint.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main([RUN_URI, "--config", str(config), "--sql", "SELECT 1"]) == EXIT_STORAGE
    assert "cannot reach S3 at http://127.0.0.1:9" in capsys.readouterr().err


def test_help_has_example_queries():
    import argparse

    parser = argparse.ArgumentParser(prog="audioverse")
    text = add_audit_parser(parser.add_subparsers()).format_help()
    for needle in ("--sql", "--out", "--limit", "--config", "FROM annotations", "FROM selection"):
        assert needle in text
