"""The run summary: counts by content type and reason, hours, wall time, real-time factor.

Built from the stats each partition's writer reported about the files it wrote (additive
figures; operators/partition_io.py `partition_stats`), so summary.json and the Parquet files
cannot disagree, and the driver never reads a row to write it.
"""
from __future__ import annotations

ADDITIVE = ("inputs", "recordings_annotated", "recordings_rejected", "segments",
            "segments_kept", "audio_s", "segment_s")
BY_KEY = ("rejected_by_reason", "segments_by_content_type", "segments_dropped_by_reason",
          "segment_s_by_content_type")
CAPTION_COUNTS = ("captioned", "repaired", "corrected", "invalid", "endpoint_errors")


def _add_into(into: dict, more: dict) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


class RunTotals:
    """The sum of the partitions' stats, and the list of every file they wrote (one small
    record per file): what the driver keeps of a night, whatever its size."""

    def __init__(self) -> None:
        self.figures: dict = {k: 0 for k in ADDITIVE}
        self.figures.update({k: {} for k in BY_KEY})
        self.captions: dict = {"sources": {}, **{k: 0 for k in CAPTION_COUNTS}}
        self.files: dict[str, list[dict]] = {"annotations": [], "rejects": [], "ledger": []}
        self.partitions: set[str] = set()
        self.nodes: dict[str, int] = {}

    def add(self, stats: dict) -> None:
        """One partition's stats (its done marker); a partition counts once."""
        if stats["partition"] in self.partitions:
            return
        self.partitions.add(stats["partition"])
        for key in ADDITIVE:
            self.figures[key] += stats[key]
        for key in BY_KEY:
            _add_into(self.figures[key], stats[key])
        _add_into(self.captions["sources"], stats["captions"]["sources"])
        for key in CAPTION_COUNTS:
            self.captions[key] += stats["captions"][key]
        for table, entry in stats["files"].items():
            self.files[table].append({**entry, "node": stats.get("node")})
        self.nodes[stats.get("node")] = self.nodes.get(stats.get("node"), 0) + 1


def build_summary(*, run_id: str, status: str, totals: RunTotals, wall_s: float,
                  started_at: str, finished_at: str, models: dict, config_path: str,
                  limits: dict) -> dict:
    f = totals.figures
    audio_s, inputs = f["audio_s"], f["inputs"]
    files = {table: sorted(entries, key=lambda e: e["path"])
             for table, entries in totals.files.items()}
    return {
        "run_id": run_id,
        "status": status,
        "started_at": started_at,
        "finished_at": finished_at,
        "config": config_path,
        "inputs": inputs,
        "recordings_annotated": f["recordings_annotated"],
        "recordings_rejected": f["recordings_rejected"],
        "rejected_by_reason": dict(sorted(f["rejected_by_reason"].items())),
        "rejected_fraction": round(f["recordings_rejected"] / inputs, 4) if inputs else 0.0,
        "segments": f["segments"],
        "segments_by_content_type": dict(sorted(f["segments_by_content_type"].items())),
        "segments_kept": f["segments_kept"],
        "segments_dropped_by_reason": dict(sorted(f["segments_dropped_by_reason"].items())),
        "audio_hours": round(audio_s / 3600, 6),
        "segment_hours": round(f["segment_s"] / 3600, 6),
        "segment_hours_by_content_type": {k: round(v / 3600, 6) for k, v in
                                          sorted(f["segment_s_by_content_type"].items())},
        "wall_s": round(wall_s, 2),
        "real_time_factor": round(wall_s / audio_s, 4) if audio_s else None,
        "captions": {**totals.captions,
                     "sources": dict(sorted(totals.captions["sources"].items()))},
        "partitions": len(totals.partitions),
        "files": files,
        "models": models,
        "limits": limits,
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
        deferred = (f", {src['deferred_by_limit']} left for a later run by input.limit"
                    if src.get("deferred_by_limit") else "")
        lines.append(f"  sources           {src['listed']} listed: {planned_text(src)}, "
                     f"{src['unchanged']} unchanged (skipped){deferred}; {src['deleted']} "
                     f"marked deleted, {src['takedown']} taken down")
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
        if len(files) <= 4:
            for f in files:
                lines.append(f"    {f['path']:<36} {f['rows']} rows")
        else:
            lines.append(f"    {table + '/':<36} {sum(f['rows'] for f in files)} rows in "
                         f"{len(files)} files")
    lines.append("    summary.json")
    return "\n".join(lines)
