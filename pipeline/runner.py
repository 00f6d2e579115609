"""One night, start to finish: preflight, lock, plan (or the frozen plan of a resumed run), one
streaming execution that ends in workers writing the partitions, commit, ledger merge.

The driver plans, schedules and commits; it holds no row of any table. What it keeps grows with
the number of output files only (one small record each, for summary.json). Preflight happens
before Ray starts, so a wrong endpoint, bad keys, a missing bucket or a missing model fail in
seconds with one line. A run id whose summary.json exists is already committed and is not run
again; a run id with a frozen plan resumes: its finished partitions are skipped.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from model_serving.registry import ModelRegistry
from model_serving.s3client import resolve_storage
from operators.logs import set_run_id, stage_logger
from operators.parquet_io import write_parquet
from operators.storage import ObjectStore
from pipeline.caption_service import caption_service, check_configured_endpoint
from pipeline.config import model_roles
from pipeline.dag import build_dataset
from pipeline.errors import EXIT_OK, EXIT_TOO_MANY_FAILED
from pipeline.fingerprint import stage_fingerprints
from pipeline.ledger import Snapshot, merge_runs, read_snapshot, read_takedowns
from pipeline.lock import RunLock
from pipeline.plan import load_plan, make_plan, save_plan
from pipeline.ray_session import (Progress, new_run_id, now, ray_session, run_with_worker_retries,
                                  stream)
from pipeline.runs import committed_summaries, read_summary
from pipeline.signals import note_committed
from pipeline.staging import (clean_dead_runs, clear, done_partitions, read_marker,
                              write_progress)
from pipeline.summary import RunTotals, build_summary, planned_text
from schemas.config import PipelineConfig
from schemas.layout import RUN_TABLES, Layout
from schemas.tables import ANNOTATIONS_SCHEMA, LEDGER_SCHEMA, REJECTS_SCHEMA

log = stage_logger("driver")
EMPTY_SCHEMAS = {"annotations": ANNOTATIONS_SCHEMA, "rejects": REJECTS_SCHEMA,
                 "ledger": LEDGER_SCHEMA}


class RunResult:
    def __init__(self, exit_code: int, summary: dict, prefix: str, already_committed: bool = False):
        self.exit_code = exit_code
        self.summary = summary
        self.prefix = prefix
        self.already_committed = already_committed


def preflight(cfg: PipelineConfig, store: ObjectStore) -> dict:
    """Check storage, models and a configured caption endpoint before any work. Raises
    StorageError / ModelError / EndpointError."""
    stage_logger("preflight").info("checking %s and %s", cfg.input.uri, cfg.output.uri)
    store.check_bucket(cfg.input.uri)
    store.check_bucket(cfg.output.uri)
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir, store.cfg)
    models = {}
    for role, name in model_roles(cfg).items():
        resolved = registry.resolve(name)  # joins packaged weights into the cache once, here
        models[role] = resolved.label
        stage_logger("preflight").info("model %s ok (%s)", resolved.label, resolved.directory)
    check_configured_endpoint(cfg)
    return models


def update_ledger(cfg: PipelineConfig, store: ObjectStore, layout: Layout) -> Snapshot:
    """The ledger snapshot with every committed run merged in: normally it is, since a run
    merges itself after it commits; a run that died in between (or runs written before the
    snapshot existed) are merged here first."""
    snapshot = read_snapshot(store, layout, cfg.run.ledger_buckets)
    pending = committed_summaries(store, layout, skip=set(snapshot.merged_runs))
    if pending:
        log.info("merging %d committed run(s) into the ledger snapshot first: %s",
                 len(pending), ", ".join(s["run_id"] for s in pending))
    return merge_runs(store, cfg.storage, layout, snapshot, pending)


def plan_inputs(cfg: PipelineConfig, store: ObjectStore, layout: Layout, run_id: str,
                full: bool, reprocess: frozenset[str] = frozenset(),
                listed: bool = False) -> dict:
    """Plan a run in tasks (pipeline/plan.py): its counts, partitions and marks."""
    snapshot = update_ledger(cfg, store, layout)
    return make_plan(cfg, store, layout, run_id, snapshot, read_takedowns(store, cfg.input),
                     full, stage_fingerprints(cfg), reprocess, listed)


def _log_plan(counts: dict, uri: str, partitions: int) -> None:
    stage_logger("plan").info(
        "%d objects under %s: %d to process (%s) in %d partitions, %d unchanged and skipped, "
        "%d deleted, %d taken down%s", counts["listed"], uri, counts["to_process"],
        planned_text(counts), partitions, counts["unchanged"], counts["deleted"],
        counts["takedown"], f", {counts['deferred_by_limit']} left for later by input.limit"
        if counts.get("deferred_by_limit") else "")


def run_pipeline(cfg: PipelineConfig, run_id: str | None = None, config_path: str = "",
                 full: bool = False, reprocess: frozenset[str] = frozenset(),
                 middle=None, listed: bool = False) -> RunResult:
    """`middle`: the stages between loading and writing (default: all of them); `listed`: the
    listing is in the staging area already (default: list input.uri). Both are for the scale
    benchmark, which replays rows for synthetic objects."""
    run_id = run_id or new_run_id()
    set_run_id(run_id)
    started_at, t0 = now(), time.monotonic()
    store = ObjectStore(resolve_storage(cfg.storage))
    layout = Layout(cfg.output.uri)
    models = preflight(cfg, store)
    committed = read_summary(store, layout, run_id)
    if committed is not None:
        committed.pop("_prefix", None)
        log.info("run %s is already committed at %s; nothing to do", run_id, layout.run(run_id))
        return RunResult(EXIT_OK, committed, layout.run(run_id), already_committed=True)

    with RunLock(store, cfg.output.uri, run_id, cfg.run.lock_ttl_s) as lock, ray_session(cfg):
        clean_dead_runs(store, layout, keep_run_id=run_id)
        plan = load_plan(store, layout, run_id)
        done: set[str] = set()
        if plan is None:
            plan = plan_inputs(cfg, store, layout, run_id, full, reprocess, listed)
            plan["started_at"] = started_at
            save_plan(store, layout, run_id, plan)  # the plan is frozen from here on
        else:
            # Same run id after a crash: the same partitions as the first attempt.
            started_at = plan["started_at"]
            done = done_partitions(store, layout, run_id)
            update_ledger(cfg, store, layout)
            log.warning("resuming run %s: %d of %d partitions were finished by an earlier "
                        "attempt", run_id, len(done), len(plan["partitions"]))
        counts = plan["counts"]
        _log_plan(counts, cfg.input.uri, len(plan["partitions"]))

        totals = _execute(cfg, store, layout, run_id, plan, done, middle)
        resumed = sum(totals.resumed_recordings.values())
        for table in RUN_TABLES:  # readers may count on one file per table, even empty
            if not totals.files[table] and table != "ledger":
                key = f"{table}/part-empty.parquet"
                totals.files[table].append(write_parquet(
                    store, layout.run(run_id) + key, EMPTY_SCHEMAS[table].empty_table(),
                    EMPTY_SCHEMAS[table], table, path=key).as_dict())
        totals.files["ledger"] += plan["marks"]

        inputs = totals.figures["inputs"]
        rejected = totals.figures["recordings_rejected"]
        rejected_fraction = rejected / inputs if inputs else 0.0
        too_many = rejected_fraction > cfg.run.max_failed_fraction
        _remove_unlisted(store, layout, run_id, totals.files)
        lock.check()  # never publish after another run took the dataset over
        summary = build_summary(
            run_id=run_id, status="too_many_failed_inputs" if too_many else "succeeded",
            totals=totals, wall_s=time.monotonic() - t0, started_at=started_at,
            finished_at=now(), models=models, config_path=config_path,
            limits={"max_failed_fraction": cfg.run.max_failed_fraction})
        summary["sources"] = counts
        summary["resumed_recordings"] = resumed
        store.put(layout.summary(run_id), json.dumps(summary, indent=2, sort_keys=True).encode(),
                  "application/json")  # the commit point
        note_committed(f"run {run_id} had already committed ({layout.summary(run_id)}); "
                       f"nothing to resume (a ledger merge cut short finishes on the next run)")
        summary["_prefix"] = layout.run(run_id)
        merge_runs(store, cfg.storage, layout,
                   read_snapshot(store, layout, cfg.run.ledger_buckets), [summary])
        summary.pop("_prefix")
        clear(store, layout, run_id)
    if too_many:
        log.error("%.0f%% of inputs were rejected, over run.max_failed_fraction=%.0f%%",
                  100 * rejected_fraction, 100 * cfg.run.max_failed_fraction)
        return RunResult(EXIT_TOO_MANY_FAILED, summary, layout.run(run_id))
    logging.getLogger("audioverse").info("run committed: %s", layout.summary(run_id))
    return RunResult(EXIT_OK, summary, layout.run(run_id))


def _remove_unlisted(store: ObjectStore, layout: Layout, run_id: str,
                     files: dict[str, list[dict]]) -> None:
    """Under a committed run there is exactly what its summary lists: a file no partition of
    this plan wrote (left by something else under this run id) goes before the commit."""
    named = {layout.run(run_id) + f["path"] for entries in files.values() for f in entries}
    stale = [o.uri for page in store.list_pages(layout.run(run_id)) for o in page
             if o.uri not in named]
    for uri in stale:
        store.delete(uri)
    if stale:
        log.warning("removed %d file(s) under %s that this run did not write", len(stale),
                    layout.run(run_id))


class _Totals(RunTotals):
    """RunTotals that also remember how many recordings came from an earlier attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.resumed_recordings: dict[str, int] = {}


def _execute(cfg: PipelineConfig, store: ObjectStore, layout: Layout, run_id: str, plan: dict,
             done: set[str], middle) -> _Totals:
    """Run the partitions not done yet through one streaming execution; sum every partition's
    stats (from the stream, or from the markers of partitions done earlier)."""
    totals = _Totals()
    sizes = {p["partition"]: p["objects"] for p in plan["partitions"]}
    todo = [p for p in sizes if p not in done]
    total_recordings = sum(sizes[p] for p in todo)
    fingerprints = stage_fingerprints(cfg)
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir, resolve_storage(cfg.storage))
    ticker = _ProgressLog(store, layout, run_id, len(todo), total_recordings)
    with caption_service(cfg, registry) as caption, \
            Progress(run_id, cfg.run.progress_interval_s, ticker) as progress:

        def attempt() -> None:
            remaining = [p for p in todo if p not in totals.partitions
                         and p not in done_partitions(store, layout, run_id)]
            if not remaining:
                return
            ds = build_dataset(remaining, cfg, run_id=run_id, fingerprints=fingerprints,
                               caption=caption, middle=middle)
            for batch in stream(ds.iter_batches(batch_format="pyarrow", batch_size=None)):
                for text in batch.column("stats").to_pylist():
                    totals.add(json.loads(text))

        if todo:
            run_with_worker_retries(attempt, cfg.run.worker_failure_attempts,
                                    "the night's execution")
        progress.tick()
    # Partitions whose stats did not come through the stream (done by an earlier attempt, or
    # written just before a worker died): their markers hold the same stats.
    missing = [p for p in sizes if p not in totals.partitions]
    with ThreadPoolExecutor(max_workers=16) as pool:
        for stats in pool.map(lambda p: read_marker(store, layout, run_id, p), missing):
            totals.add(stats)
            if stats["partition"] in done:
                totals.resumed_recordings[stats["partition"]] = (
                    stats["recordings_annotated"] + stats["recordings_rejected"])
    if set(sizes) != totals.partitions:
        raise RuntimeError(f"partitions without stats after the execution: "
                           f"{sorted(set(sizes) - totals.partitions)[:5]}")
    if totals.figures["inputs"] != sum(sizes.values()):
        raise RuntimeError(f"run output breaks the row invariant: {totals.figures['inputs']} "
                           f"objects written, {sum(sizes.values())} planned")
    return totals


class _ProgressLog:
    """Turns the progress counter's counts into a log line (and progress.json for `status`)
    every run.progress_interval_s: per stage, with rates, and an ETA."""

    STAGES = (("decode", "recordings", "decoded"), ("vad", "segments", "segmented"),
              ("asr", "segments", "transcribed"), ("caption", "segments", "captioned"))

    def __init__(self, store: ObjectStore, layout: Layout, run_id: str, partitions: int,
                 recordings: int):
        self.store, self.layout, self.run_id = store, layout, run_id
        self.partitions, self.recordings = partitions, recordings
        self.last: tuple | None = None

    def __call__(self, counts: dict, elapsed_s: float) -> None:
        decoded = counts.get("decode", {}).get("recordings", 0)
        finished = counts.get("caption", {}).get("recordings", 0)
        written = counts.get("write", {}).get("batches", 0)
        parts = [f"{verb} {counts.get(stage, {}).get(unit, 0)} {unit}"
                 for stage, unit, verb in self.STAGES]
        rate = decoded / elapsed_s if elapsed_s else 0.0
        done_rate = finished / elapsed_s if elapsed_s else 0.0
        basis = done_rate if finished else rate
        left = self.recordings - (finished if finished else decoded)
        eta = f"ETA {_duration(left / basis)}" if basis > 0 and left > 0 else "ETA -"
        line = (f"{decoded}/{self.recordings} recordings decoded ({rate:.2f}/s); "
                + ", ".join(parts[1:]) + f"; written {written}/{self.partitions} partitions; "
                f"{elapsed_s:.0f}s elapsed, {eta}")
        key = (decoded, finished, written) + tuple(parts)
        if key != self.last:
            stage_logger("progress").info("%s", line)
            self.last = key
        write_progress(self.store, self.layout, self.run_id, {
            "counts": counts, "elapsed_s": round(elapsed_s, 1), "recordings": self.recordings,
            "partitions": self.partitions, "written_partitions": written, "line": line,
            "at": now()})


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
