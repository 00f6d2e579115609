"""Drill-down for the audit report: a few example rows per drop reason, reject reason, language
and content type (picked in SQL, pipeline/audit_queries.py), each segment with a short clip an
auditor can play in the page.

A clip is read again from the segment's source object (pinned to its ETag, so a replaced object
is not mistaken for the annotated one), decoded by the pipeline's own decoder
(operators/decode.py read_segments), cut to at most SNIPPET_MAX_S from the segment's start, and
embedded as a 16 kHz mono 16-bit WAV data URI. Clips are capped per group, in all, and in bytes;
one that cannot be read says why in one line and the report goes on.
"""
from __future__ import annotations

import base64
import io
import logging
import wave

import numpy as np

from schemas.tables import PIPELINE_RATE_HZ

log = logging.getLogger("audioverse.audit")

SNIPPET_MAX_S = 4.0
SNIPPETS_PER_GROUP = 2
MAX_SNIPPETS = 40
MAX_SNIPPET_BYTES = 6 * 1024 * 1024   # of data URIs in the page, all clips together
MAX_SOURCE_BYTES = 200 * 1024 * 1024  # a bigger source is not read for a clip
SNIPPET_RATE = PIPELINE_RATE_HZ


def wav_data_uri(audio: np.ndarray, rate: int = SNIPPET_RATE) -> str:
    """Mono float32 [-1, 1] -> data:audio/wav;base64,... (16-bit PCM)."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def short_reason(why: str, limit: int = 160) -> str:
    """Why a clip could not be read, in one short line."""
    why = " ".join(why.split())
    if "NoSuchKey" in why or "Not Found" in why or "(404)" in why:
        return "the source object is gone (NoSuchKey)"
    if "PreconditionFailed" in why or "(412)" in why:
        return "the source object changed since the run read it (its ETag differs)"
    return why if len(why) <= limit else why[:limit - 1] + "…"


def _snippet_rows(sections: list[dict]) -> list[dict]:
    """The example rows that get a clip, in a fair order: the first example of every group of
    every section, then the second ... (so one section with many groups does not take all)."""
    ranked = []
    for s_i, section in enumerate(sections):
        for r_i, row in enumerate(section["rows"]):
            if "snippet_start" in row and row["example"] <= SNIPPETS_PER_GROUP:
                row["_section"] = section["title"]
                ranked.append((row["example"], s_i, r_i, row))
    ranked.sort(key=lambda t: t[:3])
    return [t[3] for t in ranked]


def attach_snippets(store, sections: list[dict], decode_cfg=None) -> dict:
    """Set row["audio"] (a data URI) or row["audio_note"] (why not) on the rows that get a clip;
    returns counts: clips, notes, bytes."""
    from operators.decode import read_segments
    from schemas.config import DecodeConfig

    decode_cfg = decode_cfg or DecodeConfig()
    wanted, used, first = [], 0, {}
    for row in _snippet_rows(sections):
        sid = row.get("segment_id")
        if sid is not None and sid in first:  # shown in another section too: one clip
            row["audio_ref"] = first[sid]
            continue
        if row.get("snippet_start") is None or row.get("snippet_end") is None \
                or row.get("snippet_etag") is None or not row.get("source_uri"):
            row["audio_note"] = "no clip: this row has no source offsets"
            continue
        if (row.get("snippet_bytes") or 0) > MAX_SOURCE_BYTES:
            row["audio_note"] = (f"no clip: the source is {row['snippet_bytes'] / 2**20:.0f} MiB "
                                 f"(over {MAX_SOURCE_BYTES // 2**20} MiB)")
            continue
        if len(wanted) >= MAX_SNIPPETS:
            row["audio_note"] = f"no clip: the page holds at most {MAX_SNIPPETS}"
            continue
        wanted.append(row)
        if sid is not None:
            first[sid] = row
    if not wanted:
        return {"clips": 0, "notes": 0, "bytes": 0}
    cut = [{"source_uri": r["source_uri"], "source_etag": r["snippet_etag"],
            "start_sample": int(r["snippet_start"]),
            "end_sample": min(int(r["snippet_end"]),
                              int(r["snippet_start"]) + int(SNIPPET_MAX_S * PIPELINE_RATE_HZ))}
           for r in wanted]
    decode_log = logging.getLogger("audioverse.stage.decode")
    level = decode_log.level
    decode_log.setLevel(logging.ERROR)  # one line per source: the page says it, per row
    try:
        audio, errors = read_segments(store, cut, list(range(len(cut))), decode_cfg,
                                      rate=SNIPPET_RATE)
    except Exception as exc:  # noqa: BLE001 - a clip never fails the report
        audio, errors = {}, {i: f"{type(exc).__name__}: {exc}" for i in range(len(cut))}
    finally:
        decode_log.setLevel(level)
    if errors:
        log.warning("audit: %d of %d example clips could not be read (the report says why)",
                    len(errors), len(cut))
    clips = notes = 0
    for i, row in enumerate(wanted):
        if i in audio:
            uri = wav_data_uri(audio[i])
            if used + len(uri) > MAX_SNIPPET_BYTES:
                row["audio_note"] = (f"no clip: the page's clips are capped at "
                                     f"{MAX_SNIPPET_BYTES // 2**20} MiB")
                notes += 1
                continue
            used += len(uri)
            row["audio"] = uri
            row["audio_id"] = f"clip-{i}"
            row["audio_s"] = round(audio[i].size / SNIPPET_RATE, 2)
            clips += 1
        else:
            row["audio_note"] = "no clip: " + short_reason(str(errors.get(i, "not decoded")))
            notes += 1
    for section in sections:  # a repeated segment points at its clip (or says why none)
        for row in section["rows"]:
            ref = row.pop("audio_ref", None)
            if ref is None:
                continue
            if "audio" in ref:
                row["audio_link"] = (ref["audio_id"], ref["_section"])
            else:
                row["audio_note"] = ref.get("audio_note", "no clip")
    return {"clips": clips, "notes": notes, "bytes": used}


def fetch_examples(con, kind: str, fetch) -> list[dict]:
    """Run the drill-down queries; each section: its SQL, rows, or why it could not run."""
    from pipeline.audit_queries import example_sections

    present = {}
    views = ("annotations", "rejects") if kind == "run" else ("selection", "shards")
    for view in views:
        present[view] = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
    sections = example_sections(kind, present)
    for section in sections:
        section["rows"], section["error"] = [], None
        try:
            section["rows"] = fetch(con, section["sql"])
        except Exception as exc:  # noqa: BLE001 - duckdb.Error: say why, go on
            from pipeline.audit import error_line

            section["error"] = f"not available: {error_line(exc)}"
    return sections
