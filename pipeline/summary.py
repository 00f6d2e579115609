"""The run summary: counts by content type and reason, hours, wall time, real-time factor.

Built from the two published tables, so summary.json and the Parquet files cannot disagree."""
from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    return dict(sorted(Counter(v for v in column.to_pylist() if v is not None).items()))


def build_summary(*, run_id: str, status: str, inputs: int, annotations: pa.Table,
                  rejects: pa.Table, wall_s: float, started_at: str, finished_at: str,
                  files: dict, models: dict, config_path: str, limits: dict) -> dict:
    rec_dur = {}
    for rid, dur in zip(annotations.column("recording_id").to_pylist(),
                        annotations.column("recording_duration_s").to_pylist()):
        rec_dur[rid] = dur or 0.0
    audio_s = float(sum(rec_dur.values()))
    seg_s = pc.sum(annotations.column("duration_s")).as_py() or 0.0
    kept = annotations.filter(pc.is_null(annotations.column("drop_reason")))
    hours_by_type: dict[str, float] = {}
    for ct, dur in zip(annotations.column("content_type").to_pylist(),
                       annotations.column("duration_s").to_pylist()):
        hours_by_type[ct] = hours_by_type.get(ct, 0.0) + dur / 3600
    return {
        "run_id": run_id,
        "status": status,
        "started_at": started_at,
        "finished_at": finished_at,
        "config": config_path,
        "inputs": inputs,
        "recordings_annotated": len(rec_dur),
        "recordings_rejected": rejects.num_rows,
        "rejected_by_reason": _counts(rejects.column("reason")),
        "rejected_fraction": round(rejects.num_rows / inputs, 4) if inputs else 0.0,
        "segments": annotations.num_rows,
        "segments_by_content_type": _counts(annotations.column("content_type")),
        "segments_kept": kept.num_rows,
        "segments_dropped_by_reason": _counts(annotations.column("drop_reason")),
        "audio_hours": round(audio_s / 3600, 6),
        "segment_hours": round(seg_s / 3600, 6),
        "segment_hours_by_content_type": {k: round(v, 6) for k, v in sorted(hours_by_type.items())},
        "wall_s": round(wall_s, 2),
        "real_time_factor": round(wall_s / audio_s, 4) if audio_s else None,
        "captions": _caption_counts(annotations),
        "files": files,
        "models": models,
        "limits": limits,
    }


def _caption_counts(ann: pa.Table) -> dict:
    """How the captioner did: where captions came from, how many needed repair or correction."""
    rows = ann.select(["caption_source", "caption_description", "caption_repaired",
                       "caption_flags", "drop_reason"]).to_pylist()
    captioned = [r for r in rows if r["caption_description"] is not None]
    return {
        "sources": _counts(pa.chunked_array([[r["caption_source"] for r in captioned]],
                                            pa.string())),
        "captioned": len(captioned),
        "repaired": sum(1 for r in captioned if r["caption_repaired"]),
        "corrected": sum(1 for r in captioned
                         if any(f.startswith("corrected:") for f in r["caption_flags"] or [])),
        "invalid": sum(1 for r in rows if r["drop_reason"] == "caption_invalid"),
        "endpoint_errors": sum(1 for r in rows if r["drop_reason"] == "caption_error"),
    }


def planned_text(src: dict) -> str:
    """Why the objects of a run were processed, e.g. "2 new, 1 changed, 3 reconfigured"; only
    the reasons that apply (a run without --full says nothing of --full)."""
    parts = [f"{src.get('new', 0)} new", f"{src.get('changed', 0)} changed"]
    if src.get("retried"):
        parts.append(f"{src['retried']} retried after a read error")
    if src.get("reconfigured"):
        parts.append(f"{src['reconfigured']} reconfigured (a reject or drop whose settings "
                     f"changed)")
    if src.get("reprocess_reason"):
        parts.append(f"{src['reprocess_reason']} by --reprocess "
                     f"{','.join(src.get('reprocess') or [])}")
    if src.get("full"):
        parts.append(f"{src.get('reprocessed', 0)} reprocessed (--full)")
    return ", ".join(parts)


def format_summary(s: dict, prefix: str) -> str:
    lines = [
        f"run {s['run_id']}: {s['status']}",
        f"  inputs            {s['inputs']} objects: {s['recordings_annotated']} annotated, "
        f"{s['recordings_rejected']} rejected",
    ]
    for reason, n in s["rejected_by_reason"].items():
        lines.append(f"    rejected  {reason:<22} {n}")
    src = s.get("sources")
    if src:
        lines.append(f"  sources           {src['listed']} listed: {planned_text(src)}, "
                     f"{src['unchanged']} unchanged (skipped); {src['deleted']} marked deleted, "
                     f"{src['takedown']} taken down")
    if s.get("resumed_recordings"):
        lines.append(f"  resumed           {s['resumed_recordings']} recordings from the "
                     f"checkpoints of an earlier attempt")
    by_type = ", ".join(f"{k} {v}" for k, v in s["segments_by_content_type"].items()) or "none"
    lines.append(f"  segments          {s['segments']} ({by_type}); {s['segments_kept']} kept")
    for reason, n in s["segments_dropped_by_reason"].items():
        lines.append(f"    dropped   {reason:<22} {n}")
    c = s.get("captions") or {}
    if c:
        sources = ", ".join(f"{k} {v}" for k, v in c["sources"].items()) or "none"
        lines.append(f"  captions          {c['captioned']} ({sources}); {c['repaired']} repaired, "
                     f"{c['corrected']} corrected from measurements, {c['invalid']} invalid")
    rtf = s["real_time_factor"]
    lines += [
        f"  audio             {s['audio_hours'] * 60:.2f} min decoded, "
        f"{s['segment_hours'] * 60:.2f} min in segments",
        f"  wall time         {s['wall_s']:.1f} s"
        + (f" (real-time factor {rtf:.3f})" if rtf is not None else ""),
        f"  results           {prefix}",
    ]
    for table, files in s["files"].items():
        for f in files:
            lines.append(f"    {f['path']:<36} {f['rows']} rows")
    lines.append("    summary.json")
    return "\n".join(lines)
