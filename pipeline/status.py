"""`audioverse status` and `audioverse run --dry-run`: what has happened to a dataset, and what
the next run would do. Neither loads a model or changes anything: `status` reads the runs' small
files only; the dry run plans in Ray tasks as a run would, under a throwaway id it deletes."""
from __future__ import annotations

import io
import json
import logging
import posixpath

from model_serving.s3client import resolve_storage
from operators.storage import ObjectStore
from pipeline.ledger import read_snapshot
from pipeline.lock import describe, read_lock, stale_reason
from pipeline.runs import committed_summaries, staged_run_ids
from pipeline.staging import read_progress
from pipeline.summary import planned_text
from schemas.config import PipelineConfig
from schemas.layout import Layout

log = logging.getLogger("audioverse.status")

# Used by --dry-run until a committed run has measured one: wall seconds per audio second of
# the local config on a 2-core machine (bench/run_bench.py measured 6.7x real time).
DEFAULT_RTF = 0.15
PROBE_BYTES = 256 * 1024
# Bytes per audio second when a header cannot be read (compressed formats: ~128 kbit/s).
BYTES_PER_SECOND = {".wav": 32000, ".flac": 20000}
DEFAULT_BYTES_PER_SECOND = 16000


def dataset_status(cfg: PipelineConfig) -> dict:
    """Runs (listed with a delimiter, one summary each), the lock, the ledger's stored counts,
    and the live progress of a running run. Reads no table."""
    store = ObjectStore(resolve_storage(cfg.storage))
    store.check_bucket(cfg.output.uri)
    layout = Layout(cfg.output.uri)
    summaries = committed_summaries(store, layout)
    snapshot = read_snapshot(store, layout, cfg.run.ledger_buckets)
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
    holder = lock[0] if lock else None
    for run_id in staged_run_ids(store, layout):
        if run_id in committed:
            continue
        live = holder is not None and holder["run_id"] == run_id and stale_reason(holder) is None
        plan = store.get_versioned(layout.plan_json(run_id))
        planned = json.loads(plan[0]) if plan else {}
        done = sum(1 for page in store.list_pages(layout.done_dir(run_id)) for _ in page)
        runs.append({
            "run_id": run_id, "state": "running" if live else "dead",
            "partitions": len(planned.get("partitions", [])), "partitions_done": done,
            "inputs": planned.get("counts", {}).get("to_process"),
            "progress": read_progress(store, layout, run_id) if live else None,
            "hint": None if live else f"resume with: audioverse run CONFIG --run-id {run_id}",
        })
    lock_info = None
    if holder is not None:
        why = stale_reason(holder)
        lock_info = {"holder": holder["run_id"], "description": describe(holder),
                     "stale": why}
    return {"output": cfg.output.uri, "input": cfg.input.uri, "runs": runs,
            "sources": snapshot.counts, "ledger_version": snapshot.version,
            "unmerged_runs": sorted(committed - set(snapshot.merged_runs)),
            "lock": lock_info}


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
            lines.append(f"  {r['run_id']:<22} {r['state']:<10} {r['partitions_done']} of "
                         f"{r['partitions']} partitions done, {r['inputs']} inputs"
                         + (f"; {r['hint']}" if r.get("hint") else ""))
            if r.get("progress"):
                lines.append(f"  {'':<22} {r['progress']['line']}")
    if st.get("unmerged_runs"):
        lines.append(f"  ledger    runs not yet merged into the snapshot (the next run merges "
                     f"them first): {', '.join(st['unmerged_runs'])}")
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
    """What `audioverse run` would process now, with hours and an estimated wall time. It plans
    in Ray tasks exactly as a run does, under a throwaway id whose files it deletes afterwards,
    and never takes the lock or changes the ledger."""
    import uuid

    from pipeline.fingerprint import stage_fingerprints
    from pipeline.ledger import read_takedowns
    from pipeline.plan import make_plan
    from pipeline.ray_session import ray_session

    store = ObjectStore(resolve_storage(cfg.storage))
    store.check_bucket(cfg.input.uri)
    store.check_bucket(cfg.output.uri)
    layout = Layout(cfg.output.uri)
    scratch = f"dry-run-{uuid.uuid4().hex[:12]}"
    try:
        with ray_session(cfg):
            plan = make_plan(cfg, store, layout, scratch,
                             read_snapshot(store, layout, cfg.run.ledger_buckets),
                             read_takedowns(store, cfg.input), full, stage_fingerprints(cfg),
                             reprocess)
        rows, marks = _sample(store, layout, scratch, plan, max_probes)
    finally:
        store.delete_prefix(layout.staging(scratch))
        store.delete_prefix(layout.run(scratch))
    probed_s = probed_bytes = 0.0
    probed = 0
    for row in rows:
        seconds = _probe_seconds(store, row["source_uri"], row["source_bytes"]) \
            if row["source_bytes"] > 0 else None
        if seconds is None:
            ext = posixpath.splitext(row["source_uri"])[1].lower()
            seconds = row["source_bytes"] / BYTES_PER_SECOND.get(ext, DEFAULT_BYTES_PER_SECOND)
        else:
            probed += 1
            probed_s += seconds
            probed_bytes += row["source_bytes"]
        row["seconds"] = round(seconds, 2)
    total_bytes = sum(p["bytes"] for p in plan["partitions"])
    sampled_bytes = sum(r["source_bytes"] for r in rows)
    # Objects beyond the sample: their bytes at the sample's seconds per byte.
    per_byte = (probed_s / probed_bytes) if probed_bytes else 1 / DEFAULT_BYTES_PER_SECOND
    audio_s = sum(r["seconds"] for r in rows) + (total_bytes - sampled_bytes) * per_byte
    measured = [s for s in committed_summaries(store, layout) if s.get("real_time_factor")]
    if measured:
        rtf, rtf_from = measured[-1]["real_time_factor"], f"run {measured[-1]['run_id']}"
    else:
        rtf, rtf_from = DEFAULT_RTF, "the local benchmark (no committed run has measured one)"
    lock = read_lock(store, cfg.output.uri)
    to_process = plan["counts"]["to_process"]
    return {
        "input": cfg.input.uri, "output": cfg.output.uri, "full": full,
        "sources": plan["counts"], "partitions": len(plan["partitions"]),
        "objects": rows, "objects_sampled": len(rows), "bytes": total_bytes,
        "audio_hours": round(audio_s / 3600, 4),
        "hours_from_headers": probed, "hours_estimated_from_size": to_process - probed,
        "real_time_factor": rtf, "real_time_factor_from": rtf_from,
        "estimated_wall_s": round(audio_s * rtf, 1),
        "marks": marks,
        "lock": None if lock is None else describe(lock[0]),
    }


def _sample(store: ObjectStore, layout: Layout, run_id: str, plan: dict,
            max_objects: int) -> tuple[list[dict], list[dict]]:
    """Up to `max_objects` objects the plan would process (by key), and up to as many marks."""
    from operators.parquet_io import read_parquet

    rows: list[dict] = []
    for part in plan["partitions"]:
        if len(rows) >= max_objects:
            break
        table = read_parquet(store, layout.plan_part(run_id, part["partition"]),
                             columns=["source_uri", "source_bytes"])
        rows += table.to_pylist()[: max_objects - len(rows)]
    marks: list[dict] = []
    for entry in plan["marks"]:
        if len(marks) >= max_objects:
            break
        table = read_parquet(store, layout.run(run_id) + entry["path"],
                             columns=["source_uri", "state"])
        marks += table.to_pylist()[: max_objects - len(marks)]
    return sorted(rows, key=lambda r: r["source_uri"]), marks


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
    if c["to_process"] > show:
        lines.append(f"    ... and {c['to_process'] - min(show, len(d['objects']))} more "
                     f"(--json lists the first {d['objects_sampled']})")
    for mark in d["marks"][:show]:
        lines.append(f"    {mark['state']:<9} {mark['source_uri']}")
    return "\n".join(lines)
