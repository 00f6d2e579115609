"""One run, start to finish: preflight, list, stream the DAG, publish, summarise.

Preflight happens before Ray starts, so a wrong endpoint, bad keys, a missing bucket or a missing
model fail in seconds with one line. A run id whose summary.json exists is already committed and
is not run again; leftovers of a dead attempt with the same id are removed before writing.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from model_serving.chat_client import EndpointError
from model_serving.registry import ModelError, ModelRegistry
from model_serving.s3client import StorageError, resolve_storage
from operators.storage import ObjectStore
from pipeline.caption_service import caption_service, check_configured_endpoint
from pipeline.config import model_roles
from pipeline.dag import build_dataset, init_ray, run_with_worker_retries
from pipeline.dataset_view import committed_runs
from pipeline.errors import EXIT_OK, EXIT_TOO_MANY_FAILED, find_cause
from pipeline.fingerprint import stage_fingerprints
from pipeline.ledger import (LEDGER_FILE, latest_states, ledger_rows, plan_run, read_ledger,
                             read_takedowns)
from pipeline.listing import list_inputs
from pipeline.lock import RunLock
from operators.logs import set_run_id, stage_logger
from pipeline.publish import (read_summary, run_prefix, split_results, write_summary,
                              write_table, write_parquet)
from pipeline.staging import Staging, clean_dead_runs
from pipeline.summary import build_summary, planned_text
from schemas.config import PipelineConfig
from schemas.tables import ANNOTATIONS_SCHEMA, LEDGER_SCHEMA, REJECTS_SCHEMA

log = stage_logger("driver")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _unwrapped(batches):
    """Re-raise a worker's user-facing error (a dead caption endpoint, say) as itself: Ray
    delivers it wrapped, with only its traceback text, and the caller must report it, not a
    Ray traceback."""
    try:
        yield from batches
    except Exception as exc:
        cause = find_cause(exc, (EndpointError, StorageError, ModelError))
        if cause is None or cause is exc:
            raise
        raise cause from exc


def _collect(ds, total: int, interval_s: float) -> pa.Table | None:
    """Stream result rows to the driver, logging progress every `interval_s`."""
    progress = stage_logger("progress")
    batches: list[pa.Table] = []
    seen: set[str] = set()
    segments = 0
    t0 = last = time.monotonic()
    logged = None
    for batch in _unwrapped(ds.iter_batches(batch_format="pyarrow", batch_size=None)):
        batches.append(batch)
        seen.update(batch.column("recording_id").to_pylist())
        segments += int(batch.column("segment_id").is_valid().to_numpy(zero_copy_only=False).sum())
        now = time.monotonic()
        if now - last >= interval_s:
            progress.info("%d/%d recordings done, %d segments, %.0fs elapsed",
                          len(seen), total, segments, now - t0)
            last, logged = now, (len(seen), segments)
    if logged != (len(seen), segments):
        progress.info("%d/%d recordings done, %d segments, %.0fs elapsed",
                      len(seen), total, segments, time.monotonic() - t0)
    if not batches:
        return None
    return pa.concat_tables(batches, promote_options="default")


def _check_invariant(listing: pa.Table, ann: pa.Table, rej: pa.Table) -> None:
    """Every listed object is in exactly one of annotations/rejects; no segment twice."""
    listed = set(listing.column("recording_id").to_pylist())
    annotated = set(ann.column("recording_id").to_pylist())
    rejected = rej.column("recording_id").to_pylist()
    problems = []
    if len(rejected) != len(set(rejected)):
        problems.append("a recording is rejected twice")
    if annotated & set(rejected):
        problems.append(f"{len(annotated & set(rejected))} recordings are in both tables")
    if listed - annotated - set(rejected):
        problems.append(f"{len(listed - annotated - set(rejected))} recordings are in neither")
    seg_ids = ann.column("segment_id").to_pylist()
    if len(seg_ids) != len(set(seg_ids)):
        problems.append("duplicate segment ids")
    if problems:
        raise RuntimeError("run output breaks the row invariant: " + "; ".join(problems))


def _result_schema(listing_schema: pa.Schema) -> pa.Schema:
    from pipeline.dag import STAGES

    schema = listing_schema
    for stage_cls in STAGES:
        schema = stage_cls.output_schema(schema)
    return schema


def plan_inputs(cfg: PipelineConfig, store: ObjectStore, run_id: str, full: bool,
                reprocess: frozenset[str] = frozenset()):
    """List the input prefix and compare it with the ledger: (RunPlan, committed summaries)."""
    summaries = committed_runs(store, cfg.output.uri)
    states = latest_states(read_ledger(store, summaries))
    takedowns = read_takedowns(store, cfg.input)
    listing = list_inputs(store, cfg.input, run_id, apply_limit=False)
    plan = plan_run(listing, states, takedowns, cfg.input.uri, full=full, limit=cfg.input.limit,
                    fingerprints=stage_fingerprints(cfg), reprocess=reprocess)
    return plan, summaries


def _log_plan(counts: dict, uri: str) -> None:
    stage_logger("list").info(
        "%d objects under %s: %d to process (%s), %d unchanged and skipped, %d deleted, "
        "%d taken down%s", counts["listed"], uri, counts["to_process"], planned_text(counts),
        counts["unchanged"], counts["deleted"], counts["takedown"],
        f", {counts['deferred_by_limit']} left for later by input.limit"
        if counts.get("deferred_by_limit") else "")


def run_pipeline(cfg: PipelineConfig, run_id: str | None = None, config_path: str = "",
                 full: bool = False, reprocess: frozenset[str] = frozenset()) -> RunResult:
    run_id = run_id or new_run_id()
    set_run_id(run_id)
    started_at, t0 = _now(), time.monotonic()
    storage = resolve_storage(cfg.storage)
    store = ObjectStore(storage)
    prefix = run_prefix(cfg.output.uri, run_id)

    models = preflight(cfg, store)
    committed = read_summary(store, prefix)
    if committed is not None:
        log.info("run %s is already committed at %s; nothing to do", run_id, prefix)
        return RunResult(EXIT_OK, committed, prefix, already_committed=True)

    with RunLock(store, cfg.output.uri, run_id, cfg.run.lock_ttl_s) as lock:
        clean_dead_runs(store, cfg.output.uri, keep_run_id=run_id)
        staging = Staging(store, cfg.output.uri, run_id)
        saved = staging.load_plan()
        if saved is None:
            plan, _ = plan_inputs(cfg, store, run_id, full, reprocess)
            todo, marks, counts = plan.todo, plan.marks, plan.counts
            staging.save_plan(todo, {"counts": counts, "marks": marks, "started_at": started_at})
            done, resumed = None, 0
        else:
            # Same run id after a crash: the same objects as the first attempt, minus finished ones.
            todo, frozen = saved
            marks, counts, started_at = frozen["marks"], frozen["counts"], frozen["started_at"]
            done = staging.load_parts()
            resumed = 0 if done is None else len(pc.unique(done.column("recording_id")))
            log.warning("resuming run %s: %d of %d recordings were finished by an earlier "
                        "attempt", run_id, resumed, todo.num_rows)
        _log_plan(counts, cfg.input.uri)
        stale = store.delete_prefix(prefix)
        if stale:
            log.warning("removed %d files left by an earlier, unfinished attempt of run %s",
                        stale, run_id)

        remaining = todo
        if done is not None:
            remaining = todo.filter(pc.invert(pc.is_in(
                todo.column("recording_id"), value_set=done.column("recording_id").unique())))
        results = _run_waves(cfg, remaining, staging) if remaining.num_rows else None
        parts = [t for t in (done, results) if t is not None]
        if parts:
            results = pa.concat_tables(parts, promote_options="default")
        else:
            results = _result_schema(todo.schema).empty_table().drop_columns(["audio"])
        annotations, rejects = split_results(results)
        _check_invariant(todo, annotations, rejects)

        lock.check()  # never publish after another run took the dataset over
        files = {
            "annotations": write_table(store, prefix, "annotations", annotations,
                                       ANNOTATIONS_SCHEMA, cfg.output.rows_per_file),
            "rejects": write_table(store, prefix, "rejects", rejects, REJECTS_SCHEMA,
                                   cfg.output.rows_per_file),
        }
        ledger = ledger_rows(run_id, annotations, rejects, marks, stage_fingerprints(cfg))
        write_parquet(store, prefix + LEDGER_FILE, ledger, LEDGER_SCHEMA, "ledger")
        files["ledger"] = [{"path": LEDGER_FILE, "rows": ledger.num_rows}]
        rejected_fraction = rejects.num_rows / todo.num_rows if todo.num_rows else 0.0
        too_many = rejected_fraction > cfg.run.max_failed_fraction
        status = "too_many_failed_inputs" if too_many else "succeeded"
        summary = build_summary(
            run_id=run_id, status=status, inputs=todo.num_rows, annotations=annotations,
            rejects=rejects, wall_s=time.monotonic() - t0, started_at=started_at,
            finished_at=_now(), files=files, models=models, config_path=config_path,
            limits={"max_failed_fraction": cfg.run.max_failed_fraction},
        )
        summary["sources"] = counts
        summary["resumed_recordings"] = resumed
        write_summary(store, prefix, summary)  # the commit point
        staging.clear()
    if too_many:
        log.error("%.0f%% of inputs were rejected, over run.max_failed_fraction=%.0f%%",
                  100 * rejected_fraction, 100 * cfg.run.max_failed_fraction)
        return RunResult(EXIT_TOO_MANY_FAILED, summary, prefix)
    logging.getLogger("audioverse").info("run committed: %ssummary.json", prefix)
    return RunResult(EXIT_OK, summary, prefix)


def _run_waves(cfg: PipelineConfig, listing: pa.Table, staging: Staging) -> pa.Table | None:
    """Run the DAG over `listing` in waves of run.wave_objects objects; each finished wave is
    saved to the staging area, so a killed run loses at most the wave it was in. (Within a
    wave nothing can be saved early: speaker clustering groups rows by recording, and Ray
    Data's groupby waits for every row of the wave.)"""
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir, resolve_storage(cfg.storage))
    size = cfg.run.wave_objects
    waves = [listing.slice(i, size) for i in range(0, listing.num_rows, size)]
    tables = []
    with caption_service(cfg, registry) as caption:
        started_ray = init_ray(cfg)
        try:
            for number, wave in enumerate(waves, 1):
                if len(waves) > 1:
                    stage_logger("progress").info("wave %d/%d: %d objects", number, len(waves),
                                                  wave.num_rows)
                # Workers get the config's storage section, not the resolved keys: they read
                # the AWS_* variables of their own environment (a mounted secret on a
                # cluster), so credentials never travel inside task arguments.
                table = run_with_worker_retries(
                    lambda: _collect(build_dataset(wave, cfg, cfg.storage, caption),
                                     wave.num_rows, cfg.run.progress_interval_s),
                    cfg.run.worker_failure_attempts, f"wave {number}")
                if table is not None:
                    staging.write_part(table)
                    tables.append(table)
        finally:
            if started_ray:
                import ray
                ray.shutdown()
    return pa.concat_tables(tables, promote_options="default") if tables else None
