"""`audioverse status` and `audioverse run --dry-run`: what has happened to a dataset, and what
the next run would do. Both only read S3; neither starts Ray or loads a model."""
from __future__ import annotations

import io
import json
import logging
import posixpath

from model_serving.s3client import resolve_storage
from operators.storage import ObjectStore
from pipeline.dataset_view import committed_runs
from pipeline.ledger import read_ledger, state_counts
from pipeline.lock import describe, read_lock, stale_reason
from pipeline.staging import staging_root
from pipeline.summary import planned_text
from schemas.config import PipelineConfig

log = logging.getLogger("audioverse.status")

# Used by --dry-run until a committed run has measured one: wall seconds per audio second of
# the local config on a 2-core machine (bench/run_bench.py measured 6.7x real time).
DEFAULT_RTF = 0.15
PROBE_BYTES = 256 * 1024
# Bytes per audio second when a header cannot be read (compressed formats: ~128 kbit/s).
BYTES_PER_SECOND = {".wav": 32000, ".flac": 20000}
DEFAULT_BYTES_PER_SECOND = 16000


def dataset_status(cfg: PipelineConfig) -> dict:
    store = ObjectStore(resolve_storage(cfg.storage))
    store.check_bucket(cfg.output.uri)
    summaries = committed_runs(store, cfg.output.uri)
    ledger = read_ledger(store, summaries)
    lock = read_lock(store, cfg.output.uri)
    runs = []
    for s in summaries:
        runs.append({
            "run_id": s["run_id"], "state": "committed", "status": s["status"],
            "started_at": s.get("started_at"), "finished_at": s.get("finished_at"),
            "inputs": s["inputs"], "annotated": s["recordings_annotated"],
            "rejected": s["recordings_rejected"], "segments": s["segments"],
            "segments_kept": s.get("segments_kept"), "audio_hours": s.get("audio_hours"),
            "wall_s": s.get("wall_s"), "sources": s.get("sources"),
            "resumed_recordings": s.get("resumed_recordings", 0),
        })
    committed = {r["run_id"] for r in runs}
    staged: dict[str, dict] = {}
    for obj in store.list(staging_root(cfg.output.uri)):
        run_id, _, rest = obj.uri[len(staging_root(cfg.output.uri)):].partition("/")
        entry = staged.setdefault(run_id, {"parts": 0, "plan": None})
        if rest.startswith("parts/"):
            entry["parts"] += 1
        elif rest == "plan.json":
            entry["plan"] = json.loads(store.get(obj.uri)).get("counts", {})
    holder = lock[0] if lock else None
    for run_id, entry in sorted(staged.items()):
        if run_id in committed:
            continue
        live = holder is not None and holder["run_id"] == run_id and stale_reason(holder) is None
        runs.append({
            "run_id": run_id, "state": "running" if live else "dead",
            "checkpoints": entry["parts"],
            "inputs": (entry["plan"] or {}).get("to_process"),
            "hint": None if live else f"resume with: audioverse run CONFIG --run-id {run_id}",
        })
    lock_info = None
    if holder is not None:
        why = stale_reason(holder)
        lock_info = {"holder": holder["run_id"], "description": describe(holder),
                     "stale": why}
    return {"output": cfg.output.uri, "input": cfg.input.uri, "runs": runs,
            "sources": state_counts(ledger), "lock": lock_info}


def format_status(st: dict) -> str:
    lines = [f"dataset {st['output']} (input {st['input']})"]
    if st["lock"] is None:
        lines.append("  lock      free")
    else:
        lock = st["lock"]
        lines.append(f"  lock      held by {lock['description']}"
                     + (f"; STALE: {lock['stale']}, the next run takes it over"
                        if lock["stale"] else ""))
    src = st["sources"]
    lines.append(f"  sources   {src['annotated']} annotated, {src['rejected']} rejected, "
                 f"{src['deleted']} deleted, {src['takedown']} taken down (ledger, latest "
                 f"state of each)")
    if not st["runs"]:
        lines.append("  runs      none yet")
        return "\n".join(lines)
    lines.append(f"  {'run':<22} {'state':<10} {'status':<23} {'inputs':>6} {'annot.':>6} "
                 f"{'rej.':>5} {'segments':>8} {'hours':>7} {'wall s':>8}  finished")
    for r in st["runs"]:
        if r["state"] == "committed":
            lines.append(
                f"  {r['run_id']:<22} {r['state']:<10} {r['status']:<23} {r['inputs']:>6} "
                f"{r['annotated']:>6} {r['rejected']:>5} {r['segments']:>8} "
                f"{(r['audio_hours'] or 0):>7.3f} {(r['wall_s'] or 0):>8.1f}  "
                f"{r['finished_at'] or ''}")
            src = r.get("sources") or {}
            if src:
                lines.append(f"  {'':<22} sources: {src.get('listed', 0)} listed, "
                             f"{src.get('new', 0)} new, {src.get('changed', 0)} changed, "
                             f"{src.get('unchanged', 0)} unchanged, {src.get('deleted', 0)} "
                             f"deleted, {src.get('takedown', 0)} taken down"
                             + (f"; {r['resumed_recordings']} recordings resumed"
                                if r.get("resumed_recordings") else ""))
        else:
            lines.append(f"  {r['run_id']:<22} {r['state']:<10} {r['checkpoints']} checkpoint "
                         f"file(s) of {r['inputs']} inputs"
                         + (f"; {r['hint']}" if r.get("hint") else ""))
    return "\n".join(lines)


def _probe_seconds(store: ObjectStore, uri: str, size: int) -> float | None:
    """Duration from the header of the first PROBE_BYTES (WAV, FLAC, AIFF...), or None."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(store.get_range(uri, min(size, PROBE_BYTES))))
    except Exception:  # noqa: BLE001 - a header libsndfile cannot read: estimate from size
        return None
    if info.samplerate <= 0 or info.frames <= 0:
        return None
    return info.frames / info.samplerate


def dry_run(cfg: PipelineConfig, full: bool, max_probes: int = 500,
            reprocess: frozenset[str] = frozenset()) -> dict:
    """What `audioverse run` would process now, with hours and an estimated wall time."""
    from pipeline.runner import plan_inputs

    store = ObjectStore(resolve_storage(cfg.storage))
    store.check_bucket(cfg.input.uri)
    store.check_bucket(cfg.output.uri)
    plan, summaries = plan_inputs(cfg, store, "dry-run", full, reprocess)
    rows = plan.todo.select(["source_uri", "source_bytes"]).to_pylist()
    probed = estimated = 0
    for i, row in enumerate(rows):
        seconds = _probe_seconds(store, row["source_uri"], row["source_bytes"]) \
            if i < max_probes and row["source_bytes"] > 0 else None
        if seconds is None:
            ext = posixpath.splitext(row["source_uri"])[1].lower()
            seconds = row["source_bytes"] / BYTES_PER_SECOND.get(ext, DEFAULT_BYTES_PER_SECOND)
            estimated += 1
        else:
            probed += 1
        row["seconds"] = round(seconds, 2)
    audio_s = sum(r["seconds"] for r in rows)
    measured = [s for s in summaries if s.get("real_time_factor")]
    if measured:
        rtf, rtf_from = measured[-1]["real_time_factor"], f"run {measured[-1]['run_id']}"
    else:
        rtf, rtf_from = DEFAULT_RTF, "the local benchmark (no committed run has measured one)"
    lock = read_lock(store, cfg.output.uri)
    return {
        "input": cfg.input.uri, "output": cfg.output.uri, "full": full,
        "sources": plan.counts, "objects": rows,
        "bytes": sum(r["source_bytes"] for r in rows),
        "audio_hours": round(audio_s / 3600, 4),
        "hours_from_headers": probed, "hours_estimated_from_size": estimated,
        "real_time_factor": rtf, "real_time_factor_from": rtf_from,
        "estimated_wall_s": round(audio_s * rtf, 1),
        "marks": [{"source_uri": m["source_uri"], "state": m["state"]} for m in plan.marks],
        "lock": None if lock is None else describe(lock[0]),
    }


def format_dry_run(d: dict, show: int = 50) -> str:
    c = d["sources"]
    lines = [
        f"dry run: nothing is processed or written ({'--full' if d['full'] else 'incremental'})",
        f"  input             {d['input']}: {c['listed']} objects listed",
        f"  would process     {c['to_process']} objects ({planned_text(c)}), "
        f"{d['bytes'] / 1e6:.1f} MB",
        f"  would skip        {c['unchanged']} unchanged"
        + (f", {c['deferred_by_limit']} over input.limit" if c.get("deferred_by_limit") else ""),
        f"  would mark        {c['deleted']} deleted, {c['takedown']} taken down",
        f"  audio             {d['audio_hours']:.3f} h ({d['hours_from_headers']} from headers, "
        f"{d['hours_estimated_from_size']} estimated from size)",
        f"  estimated wall    {d['estimated_wall_s'] / 60:.1f} min (real-time factor "
        f"{d['real_time_factor']:.3f}, from {d['real_time_factor_from']})",
        f"  lock              {d['lock'] or 'free'}",
    ]
    for row in d["objects"][:show]:
        lines.append(f"    {row['source_uri']}  {row['source_bytes']} B  {row['seconds']:.1f} s")
    if len(d["objects"]) > show:
        lines.append(f"    ... and {len(d['objects']) - show} more (--json lists all)")
    for mark in d["marks"][:show]:
        lines.append(f"    {mark['state']:<9} {mark['source_uri']}")
    return "\n".join(lines)
