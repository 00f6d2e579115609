"""`audioverse audit`: DuckDB views over a run's / a release's Parquet on a real S3 server
(SeaweedFS), ad-hoc SQL checked against counts computed here from the rows written, and the HTML
report with its PNGs: example rows (escaped) with clips read back from a real WAV on the server,
the change since the previous run, readable units and the report folder names."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import wave
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
PREVIOUS_RUN_URI = f"{BASE}/runs/rp/"  # the night before r1 (finished_at), with fewer rows

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


SCRIPT = '<script>alert("x")</script> & Co'  # a transcript that must show as text
RATE = 16000
# rec-a is a real WAV on the server: a tone per segment, so a clip can be checked to be its own
TONES_HZ = {"rec-a-0": 440.0, "rec-a-1": 880.0, "rec-a-2": 1760.0}


def _source(run_id: str, rec: str, etags: dict | None = None) -> dict:
    return {"run_id": run_id, "recording_id": rec,
            "source_uri": f"{BASE}/raw/{rec}.wav",
            "source_etag": (etags or {}).get(rec, f"etag-{rec}"), "source_bytes": 1000,
            "pipeline_version": "test"}


def _times() -> dict[str, tuple[float, float]]:
    """segment id -> (start_s, end_s): the segments of a recording one after the other."""
    out, at = {}, {}
    for rec, idx, _ct, _lang, dur, *_ in SEGMENTS:
        start = at.get(rec, 0.0)
        out[f"{rec}-{idx}"] = (start, start + dur)
        at[rec] = start + dur
    return out


def annotation_rows(run_id: str = "r1", etags: dict | None = None) -> list[dict]:
    rows, times = [], _times()
    for rec, idx, ctype, lang, dur, drop, tags, speakers in SEGMENTS:
        sid = f"{rec}-{idx}"
        start, end = times[sid]
        rows.append({
            **_source(run_id, rec, etags), "segment_id": sid, "segment_index": idx,
            "content_type": ctype, "language": lang, "duration_s": dur, "drop_reason": drop,
            "drop_stage": drop and "rules", "drop_detail": drop and f"why {sid}",
            "start_s": start, "end_s": end, "start_sample": round(start * RATE),
            "end_sample": round(end * RATE),
            "transcript": (SCRIPT if sid == "rec-b-0" else f"words of {sid}")
            if ctype == "speech" else None,
            "asr_agreement": 0.5 + 0.1 * idx if ctype == "speech" else None,
            "snr_db": 10.0 + len(rows), "caption_description": f"a {ctype} clip {sid}",
            "caption_scene": "studio",
            "recording_duration_s": 60.0, "speaker_count": speakers,
            "event_labels": [{"mid": f"/m/{i}", "name": t, "score": 0.9 - 0.1 * i}
                             for i, t in enumerate(tags)],
        })
    return rows


def tone_wav() -> bytes:
    """rec-a as a 22.05 kHz stereo WAV: each segment's own tone (the decoder resamples)."""
    import numpy as np

    rate, parts = 22050, []
    for sid, (start, end) in _times().items():
        if sid in TONES_HZ:
            t = np.arange(round(start * rate), round(end * rate)) / rate
            parts.append(0.5 * np.sin(2 * np.pi * TONES_HZ[sid] * t))
    x = (np.concatenate(parts + [np.zeros(rate)]) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(x, 2).tobytes())
    return buf.getvalue()


def reject_rows(run_id: str = "r1") -> list[dict]:
    return [{**_source(run_id, rec), "stage": stage, "reason": reason, "detail": "test"}
            for rec, stage, reason in REJECTS]


def selection_rows() -> list[dict]:
    rows = []
    for i, (rec, idx, ctype, lang, dur, drop, _tags, _spk) in enumerate(SEGMENTS[:10]):
        eligible = drop is None
        rows.append({
            "run_id": "r1", "recording_id": rec, "segment_id": f"{rec}-{idx}",
            "source_uri": f"{BASE}/raw/{rec}.wav", "source_etag": f"etag-{rec}",
            "content_type": ctype, "language": lang, "duration_s": dur, "drop_reason": drop,
            "quality_score": 0.3 + 0.06 * i, "quality_eligible": eligible,
            "quality_gate": None if eligible else "min_snr_db",
            "stratum": ctype, "split": "train" if i % 3 else "validation",
            "selected": eligible and i != 3,  # one eligible segment is not selected
        })
    return rows


def shard_rows(selection: list[dict], etags: dict | None = None) -> list[dict]:
    tags, times = {f"{s[0]}-{s[1]}": s[6] for s in SEGMENTS}, _times()
    return [{
        "source_uri": r["source_uri"],
        "source_etag": (etags or {}).get(r["recording_id"], r["source_etag"]),
        "start_sample": round(times[r["segment_id"]][0] * RATE),
        "end_sample": round(times[r["segment_id"]][1] * RATE), "sample_rate": RATE,
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


def _put(client, uri: str, body: bytes) -> str:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')


def _write_run(client, prefix: str, ann: list[dict], rej: list[dict], split_at: int,
               finished_at: str | None = None) -> dict:
    files = {"annotations": [], "rejects": []}
    for n, chunk in enumerate([ann[:split_at], ann[split_at:]]):
        path = f"annotations/part-{n:05d}.parquet"
        _put(client, prefix + path, _parquet(chunk, ANNOTATIONS_SCHEMA))
        files["annotations"].append({"path": path, "rows": len(chunk)})
    _put(client, prefix + "rejects/part-00000.parquet", _parquet(rej, REJECTS_SCHEMA))
    files["rejects"].append({"path": "rejects/part-00000.parquet", "rows": len(rej)})
    summary = {"run_id": prefix.rstrip("/").rsplit("/", 1)[-1], "status": "succeeded",
               "segments": len(ann), "files": files}
    if finished_at:
        summary["finished_at"] = finished_at
    _put(client, prefix + "summary.json", json.dumps(summary).encode())
    return summary


@pytest.fixture(scope="module")
def stored(s3_server, s3_client):
    return write_test_data(s3_client)


def write_test_data(s3_client) -> dict:
    """A run r1 (12 segments in 2 files + a stray, unlisted file), the run rp committed the night
    before it (its first 7 segments, 1 reject), an empty run r0, a release x1; rec-a's source."""
    etags = {"rec-a": _put(s3_client, f"{BASE}/raw/rec-a.wav", tone_wav())}
    ann, rej = annotation_rows(etags=etags), reject_rows()
    _write_run(s3_client, PREVIOUS_RUN_URI, annotation_rows("rp", etags)[:7],
               reject_rows("rp")[:1], split_at=4, finished_at="2026-01-02T03:00:00Z")
    _write_run(s3_client, RUN_URI, ann, rej, split_at=7, finished_at="2026-01-03T03:00:00Z")
    # Left by an "earlier attempt": under annotations/ but not in summary.json; never read.
    _put(s3_client, RUN_URI + "annotations/part-00099.parquet",
         _parquet(ann[:5], ANNOTATIONS_SCHEMA))
    _write_run(s3_client, EMPTY_RUN_URI, [], [], split_at=0)

    sel = selection_rows()
    shards = shard_rows(sel, etags)
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


RUN_FIGURES = {"hours_by_language", "kept_fraction", "drop_reasons", "language_quality",
               "duration", "event_tags", "speaker_counts"}
SECTIONS = ("summary", "previous", "figures", "examples", "rerun")


def _report(uri: str, out: Path) -> tuple[list[Path], str]:
    assert main([uri, "--out", str(out)]) == 0
    return sorted(out.glob("*.png")), (out / "index.html").read_text()


@pytest.fixture(scope="module")
def run_report(stored, tmp_path_factory):
    """The report of r1, written once for the tests that read it: (pngs, page, folder)."""
    out = tmp_path_factory.mktemp("report") / "r1"
    pngs, page = _report(RUN_URI, out)
    return pngs, page, out


def _section(page: str, ident: str) -> str:
    """The HTML of one <div|section id=...> (up to the next one)."""
    at = page.index(f'id="{ident}"')
    nxt = re.search(r'<(div class="example-section"|section) id=', page[at:])
    return page[at: at + nxt.start()] if nxt else page[at:]


def _example_rows(html_part: str) -> list[dict]:
    """Example rows: group, fields (unescaped) and the audio data URI or the note."""
    import html

    rows = []
    for tr in re.findall(r'<tr>\s*<td class="group">(.*?)</tr>', html_part, re.S):
        fields = {k: html.unescape(v) for k, v in
                  re.findall(r'<dd class="field-(\w+)">(.*?)</dd>', tr, re.S)}
        audio = re.search(r'<audio id="clip-\d+" controls preload="none" src="([^"]+)"', tr)
        link = re.search(r'<a class="clip-link" href="#(clip-\d+)"', tr)
        note = re.search(r'<span class="note">(.*?)</span>', tr, re.S)
        rows.append({"group": html.unescape(tr.split("<br>", 1)[0]), "fields": fields,
                     "audio": audio.group(1) if audio else None,
                     "link": link.group(1) if link else None,
                     "note": html.unescape(note.group(1)) if note else None})
    return rows


def test_run_report_writes_html_and_pngs(run_report):
    pngs, page, _ = run_report
    assert {p.stem for p in pngs} == RUN_FIGURES
    for png in pngs:
        _check_png(png)
        assert f"src='{png.name}'" in page
    for ident in SECTIONS + ("captions",):
        assert f'<section id="{ident}">' in page
    assert page.count("<details class=\"sql\">") >= len(pngs) + 1
    assert "FROM annotations" in page and "unnest(event_labels)" in page
    assert "a run has no quality scores" in page  # nothing computed for a run
    assert "class=\"num bad\"" not in page        # rows read == rows listed
    kept = sum(1 for s in SEGMENTS if s[5] is None)
    assert f"<td class=\"num\">{kept}</td>" in page  # summary table: segments_kept
    # readable units: 95.9 s of segments reads in minutes, not as 0.0266 h
    total = sum(s[4] for s in SEGMENTS)
    assert f"<td class=\"num\">{total / 60:.1f} min</td>" in page
    # quality by language: en has 3 segments, 2 kept; its agreement median 0.6
    quality = _section(page, "language_quality")
    assert re.search(r">en</td><td class=\"num\">3</td><td class=\"num\">2</td>"
                     r"<td class=\"num\">66\.7%</td>", quality), quality[:3000]
    text = re.sub(r'src="data:[^"]+"', "", page)
    for leak, flags in ((r"\bNone\b", 0), (r"\bnan\b", re.I), (r"\{\{|\{%", 0),
                        (r"Undefined", 0)):
        assert not re.search(leak, text, flags), leak


def test_drill_down_examples_are_escaped_and_complete(run_report):
    _, page, _ = run_report
    drops = _example_rows(_section(page, "examples_drop_reason"))
    assert {r["group"] for r in drops} == {s[5] for s in SEGMENTS if s[5]}
    for r in drops:  # each example is of its group, with its detail and source
        assert r["fields"]["drop_reason"] == r["group"]
        assert r["fields"]["drop_detail"] == f"why {r['fields']['segment_id']}"
        assert r["fields"]["source_uri"].startswith(f"{BASE}/raw/")
    assert Counter(r["group"] for r in drops)["too_short"] == 2  # rec-a-2, rec-d-1
    rejects = _example_rows(_section(page, "examples_reject_reason"))
    assert {(r["group"], r["fields"]["stage"], r["fields"]["detail"]) for r in rejects} == \
        {(reason, stage, "test") for _, stage, reason in REJECTS}
    langs = _example_rows(_section(page, "examples_language"))
    assert {r["group"] for r in langs} == {"en", "de", "fr", "(none)"}
    assert max(Counter(r["group"] for r in langs).values()) == 3  # at most 3 per group
    de = {r["fields"]["segment_id"]: r["fields"] for r in langs if r["group"] == "de"}
    assert de["rec-b-0"]["transcript"] == SCRIPT and de["rec-b-0"]["time"] == "0.00 – 12.00 s"
    types = _example_rows(_section(page, "examples_content_type"))
    assert {r["group"] for r in types} == {"speech", "music", "sound"}
    assert all("drop_reason" not in r["fields"] for r in types)  # kept segments only
    # the transcript is text, never markup
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in page
    # the same rows on every report of the same data (picked by md5 of the segment id)
    assert "md5(segment_id)" in page


def test_audio_snippets_decode_to_the_segment_and_its_length(run_report):
    import numpy as np

    _, page, _ = run_report
    rows = [r for ident in ("examples_drop_reason", "examples_language",
                            "examples_content_type")
            for r in _example_rows(_section(page, ident))]
    clips = [r for r in rows if r["audio"]]
    assert clips and {r["fields"]["segment_id"] for r in clips} <= set(TONES_HZ)
    durations = {f"{s[0]}-{s[1]}": s[4] for s in SEGMENTS}
    for r in clips:
        sid = r["fields"]["segment_id"]
        prefix = "data:audio/wav;base64,"
        assert r["audio"].startswith(prefix)
        with wave.open(io.BytesIO(base64.b64decode(r["audio"][len(prefix):]))) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32)
        assert x.size == round(min(durations[sid], 4.0) * 16000), sid  # cut at 4 s
        peak_hz = np.argmax(np.abs(np.fft.rfft(x))) * 16000 / x.size
        assert abs(peak_hz - TONES_HZ[sid]) < 15, (sid, peak_hz)  # its own part of the source
    ids = [r["fields"]["segment_id"] for r in clips]
    assert len(ids) == len(set(ids))  # a segment shown in several sections: one clip, links
    linked = [r for r in rows if r["link"]]
    assert linked and all(f'<audio id="{r["link"]}"' in page for r in linked)
    assert {r["fields"]["segment_id"] for r in linked} <= set(ids)
    # rec-a-2 (0.4 s, too_short) is the first example of its drop reason: it always has a clip
    assert any(r["fields"]["segment_id"] == "rec-a-2" for r in clips)
    # the other sources are not on the server: one line each, and the report went on
    missing = [r for r in rows if r["fields"]["segment_id"][:5] not in ("rec-a",)
               and r["note"] is not None]
    assert missing and all(r["note"] == "no clip: the source object is gone (NoSuchKey)"
                           for r in missing)
    assert len(clips) + len(missing) <= 40  # the cap on clips read


def test_clips_are_capped_in_bytes_and_by_group(stored, monkeypatch):
    import numpy as np

    from operators.storage import ObjectStore
    from pipeline import audit_examples
    from schemas.config import StorageConfig

    ann = {r["segment_id"]: r for r in stored["annotations"]}

    def row(sid, example):
        r = ann[sid]
        return {"grp": "g", "example": example, "segment_id": sid,
                "source_uri": r["source_uri"], "snippet_etag": r["source_etag"],
                "snippet_start": r["start_sample"], "snippet_end": r["end_sample"],
                "snippet_bytes": r["source_bytes"]}

    rows = [row("rec-a-0", 1), row("rec-a-1", 2), row("rec-a-2", 3)]
    one_clip = len(audit_examples.wav_data_uri(np.zeros(4 * 16000, np.float32)))
    monkeypatch.setattr(audit_examples, "MAX_SNIPPET_BYTES", one_clip + 100)
    got = audit_examples.attach_snippets(ObjectStore(StorageConfig()),
                                         [{"title": "t", "rows": rows}])
    assert got == {"clips": 1, "notes": 1, "bytes": one_clip}  # a 4 s clip fits, not two
    assert "audio" in rows[0] and rows[1]["audio_note"].startswith("no clip: the page's clips")
    assert "audio" not in rows[2] and "audio_note" not in rows[2]  # 3rd of a group: none


def test_deltas_against_the_previous_night(run_report):
    _, page, _ = run_report
    part = _section(page, "previous")
    assert "previous run: rp" in part and PREVIOUS_RUN_URI in part

    def row(metric):
        m = re.search(rf'<tr><td class="text">{re.escape(metric)}</td><td class="num">(.*?)'
                      r'</td><td class="num">(.*?)</td><td class="num">(.*?)</td></tr>', part)
        assert m, metric
        return m.groups()

    assert row("segments") == ("12", "7", "+5 (+71.4%)")
    prev_kept = sum(1 for s in SEGMENTS[:7] if s[5] is None)
    kept = sum(1 for s in SEGMENTS if s[5] is None)
    assert row("segments_kept") == (str(kept), str(prev_kept), f"+{kept - prev_kept} "
                                    f"(+{100 * (kept - prev_kept) / prev_kept:.1f}%)")
    assert row("kept_share") == ("50.0%", "57.1%", "-7.1 pp")
    assert row("audio_s") == ("1.6 min", "64 s", "+33 s (+50.9%)")  # 96.4 s vs 63.9 s
    assert row("caption_invalid") == ("1", "0", "+1")       # segment 12 is new
    assert row("too_short") == ("2", "1", "+1 (+100.0%)")
    assert row("hallucination") == ("1", "1", "0")
    assert row("undecodable") == ("2", "1", "+1 (+100.0%)")  # reject reasons
    assert row("too_large") == ("1", "0", "+1")


def test_units_and_folder_names():
    from pipeline.audit import AuditSource
    from pipeline.audit_charts import draw_hours
    from pipeline.audit_format import cell_text, duration_unit, format_change, format_duration
    from pipeline.audit_report import default_report_dir

    assert [format_duration(v) for v in (0, 0.4, 58, 192, 5400, 360000, -90)] == \
        ["0 s", "0.4 s", "58 s", "3.2 min", "1.5 h", "100 h", "-1.5 min"]
    assert duration_unit(57.6) == (1.0, "seconds") and duration_unit(600)[1] == "minutes"
    assert duration_unit(7200) == (3600.0, "hours")
    assert cell_text(float("nan")) == "—" and cell_text(None) == "NULL"
    assert cell_text(0.5, "kept_share") == "50.0%" and cell_text(120.0, "audio_s") == "2.0 min"
    assert format_change(30.0, 150.0, "audio_s") == "-2.0 min (-80.0%)"
    assert format_change(3, 0, "segments") == "+3" and format_change(0.5, 0.25, "kept_share") \
        == "+25.0 pp"
    rows = [{"language": "en", "content_type": "speech", "audio_s": 3.0 * 3600,
             "kept_audio_s": 1.5 * 3600}]
    assert draw_hours(rows, "run", Path(os.devnull)).axes[0].get_ylabel() == "hours"
    rows[0].update(audio_s=58.0, kept_audio_s=20.0)
    assert draw_hours(rows, "run", Path(os.devnull)).axes[0].get_ylabel() == "seconds"

    def src(kind):
        return AuditSource(kind, f"{BASE}/{kind}s/demo-1/", "demo-1", "x.json", {})
    assert str(default_report_dir(src("run"))) == "audit-run-demo-1"
    assert str(default_report_dir(src("release"))) == "audit-release-demo-1"


def test_histogram_groups_are_outlines_the_legend_shows():
    from matplotlib.colors import same_color
    from matplotlib.patches import Rectangle, StepPatch

    from pipeline.audit_charts import draw_hist

    rows = [{"grp": g, "bin": b, "lo": 0.0, "width": 1.0, "n": n}
            for g, b, n in [("dropped", 0, 3), ("dropped", 1, 1), ("kept", 1, 4),
                            ("kept", 2, 2)]]
    ax = draw_hist(rows, "t", "x", Path(os.devnull)).axes[0]
    steps = [p for p in ax.patches if isinstance(p, StepPatch)]
    assert len(steps) == 2 and not any(isinstance(p, Rectangle) for p in ax.patches)
    assert not any(p.get_fill() for p in steps)  # outlines: nothing blends
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["dropped (4)", "kept (6)"]
    for handle, step in zip(legend.legend_handles, steps):  # the legend draws what is drawn
        assert same_color(handle.get_color(), step.get_edgecolor())
        assert handle.get_linestyle() == step.get_linestyle() or step.get_linestyle() == "solid"
    assert not same_color(steps[0].get_edgecolor(), steps[1].get_edgecolor())


def test_report_folder_default(stored, tmp_path, monkeypatch, capsys):
    """Without --out: ./audit-run-<id>/ (pipeline/audit.py uses default_report_dir)."""
    monkeypatch.chdir(tmp_path)
    assert main([EMPTY_RUN_URI]) == 0
    assert (tmp_path / "audit-run-r0" / "index.html").is_file()
    assert "audit-run-r0/index.html" in capsys.readouterr().out


def test_empty_run_report_says_no_data(stored, tmp_path, capsys):
    pngs, page = _report(EMPTY_RUN_URI, tmp_path / "empty")
    assert len(pngs) == len(RUN_FIGURES)
    for png in pngs:
        _check_png(png)  # a "no data" figure, not a crash or a blank image
    assert page.count("no data: the queries returned no rows") == len(RUN_FIGURES)
    assert page.count("no example: the query returned no rows") == 4
    assert "<audio" not in page


def test_old_run_without_some_columns_still_reports(stored, s3_client, tmp_path, capsys):
    prefix = f"{BASE}/runs/old/"
    schema = ANNOTATIONS_SCHEMA
    for name in ("event_labels", "speaker_count", "transcript"):  # as if written before
        schema = schema.remove(schema.get_field_index(name))
    rows = [{k: v for k, v in r.items() if k in schema.names} for r in annotation_rows("old")]
    _put(s3_client, prefix + "annotations/part-00000.parquet", _parquet(rows, schema))
    _put(s3_client, prefix + "summary.json", json.dumps({"run_id": "old", "files": {
        "annotations": [{"path": "annotations/part-00000.parquet", "rows": len(rows)}],
        "rejects": []}}).encode())
    pngs, page = _report(prefix, tmp_path / "old")
    assert len(pngs) == len(RUN_FIGURES)
    for png in pngs:
        _check_png(png)
    assert page.count("not available: ") == 2  # event tags and speaker counts
    assert "no data: the queries" not in page
    # the examples go on without the column, and say so
    assert page.count("columns this run lacks (shown as absent): transcript") == 3
    assert "drop_reason" in _section(page, "examples_drop_reason")


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
    assert names == RUN_FIGURES | {"quality_score"}
    for png in pngs:
        _check_png(png)
        assert f"src='{png.name}'" in page
    assert "FROM shards, unnest(event_tags)" in page and "class=\"num bad\"" not in page
    assert "no previous release under" in _section(page, "previous")  # x1 is the only one
    gates = _example_rows(_section(page, "examples_drop_reason"))
    not_eligible = [r for r in stored["selection"] if not r["quality_eligible"]]
    assert len(gates) == len(not_eligible)  # 1 per group: 'drop: <reason>'
    assert {r["group"] for r in gates} == {f"drop: {r['drop_reason']}" for r in not_eligible}
    langs = _example_rows(_section(page, "examples_language"))
    assert {r["fields"]["segment_id"] for r in langs} <= {r["segment_id"]
                                                          for r in stored["shards"]}
    # shards carry the offsets (at sample_rate): the selected rec-a segments play
    clipped = {r["fields"]["segment_id"] for r in langs if r["audio"]}
    assert clipped and clipped <= {"rec-a-0", "rec-a-1"}
    assert "<section id=\"captions\">" not in page


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
