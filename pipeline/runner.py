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

from model_serving.chat_client import EndpointError
from model_serving.registry import ModelError, ModelRegistry
from model_serving.s3client import StorageError, resolve_storage
from operators.storage import ObjectStore
from pipeline.caption_service import caption_service, check_configured_endpoint
from pipeline.config import model_roles
from pipeline.dag import build_dataset, init_ray
from pipeline.errors import EXIT_OK, EXIT_TOO_MANY_FAILED, find_cause
from pipeline.listing import list_inputs
from operators.logs import set_run_id, stage_logger
from pipeline.publish import (read_summary, run_prefix, split_results, write_summary,
                              write_table)
from pipeline.summary import build_summary
from schemas.config import PipelineConfig
from schemas.tables import ANNOTATIONS_SCHEMA, REJECTS_SCHEMA

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


def _collect(ds, total: int, interval_s: float) -> pa.Table:
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


def run_pipeline(cfg: PipelineConfig, run_id: str | None = None,
                 config_path: str = "") -> RunResult:
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

    listing = list_inputs(store, cfg.input, run_id)
    stage_logger("list").info("%d objects under %s", listing.num_rows, cfg.input.uri)
    if listing.num_rows == 0:
        log.warning("no input objects under %s: check input.uri", cfg.input.uri)
    stale = store.delete_prefix(prefix)
    if stale:
        log.warning("removed %d files left by an earlier, unfinished attempt of run %s",
                    stale, run_id)

    if listing.num_rows:
        registry = ModelRegistry(cfg.models, cfg.model_cache_dir, store.cfg)
        with caption_service(cfg, registry) as caption:
            started_ray = init_ray(cfg)
            try:
                # Workers get the config's storage section, not the resolved keys: they read
                # the AWS_* variables of their own environment (a mounted secret on a cluster),
                # so credentials never travel inside task arguments.
                results = _collect(build_dataset(listing, cfg, cfg.storage, caption),
                                   listing.num_rows, cfg.run.progress_interval_s)
            finally:
                if started_ray:
                    import ray
                    ray.shutdown()
    else:
        results = None
    if results is None:
        from pipeline.dag import STAGES  # the full result schema, for an empty run
        schema = listing.schema
        for stage_cls in STAGES:
            schema = stage_cls.output_schema(schema)
        results = schema.empty_table().drop_columns(["audio"])
    annotations, rejects = split_results(results)
    _check_invariant(listing, annotations, rejects)

    files = {
        "annotations": write_table(store, prefix, "annotations", annotations,
                                   ANNOTATIONS_SCHEMA, cfg.output.rows_per_file),
        "rejects": write_table(store, prefix, "rejects", rejects, REJECTS_SCHEMA,
                               cfg.output.rows_per_file),
    }
    rejected_fraction = rejects.num_rows / listing.num_rows if listing.num_rows else 0.0
    too_many = rejected_fraction > cfg.run.max_failed_fraction
    status = "too_many_failed_inputs" if too_many else "succeeded"
    summary = build_summary(
        run_id=run_id, status=status, inputs=listing.num_rows, annotations=annotations,
        rejects=rejects, wall_s=time.monotonic() - t0, started_at=started_at,
        finished_at=_now(), files=files, models=models, config_path=config_path,
        limits={"max_failed_fraction": cfg.run.max_failed_fraction},
    )
    write_summary(store, prefix, summary)
    if too_many:
        log.error("%.0f%% of inputs were rejected, over run.max_failed_fraction=%.0f%%",
                  100 * rejected_fraction, 100 * cfg.run.max_failed_fraction)
        return RunResult(EXIT_TOO_MANY_FAILED, summary, prefix)
    logging.getLogger("audioverse").info("run committed: %ssummary.json", prefix)
    return RunResult(EXIT_OK, summary, prefix)
