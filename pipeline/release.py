"""`audioverse release`: dataset view -> selection -> tokenization (cached) -> shards ->
manifest, under `<output.uri>/releases/<release_id>/`.

Releases are immutable: an id whose manifest.json exists is never written again (asking for it
again prints it and does nothing). Files appear in the order that keeps readers safe: the code
cache, then the shards and the selection table under deterministic names, then manifest.json,
which is what makes a release exist. A release that died before its manifest is unfinished and is
simply written again by a retry with the same id.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from model_serving.registry import ModelRegistry
from model_serving.s3client import resolve_storage
from operators.parquet_io import parquet_bytes
from operators.selection import select
from operators.storage import ObjectStore
from operators.tokenize import TokenizeStage
from pipeline import __version__
from pipeline.dataset_view import build_view
from pipeline.ray_session import new_run_id, now, ray_session, run_with_worker_retries, stream
from pipeline.shards import read_code_cache, write_code_cache, write_split_shards
from schemas.config import PipelineConfig
from schemas.release import (MANIFEST, RELEASE_FORMAT, SELECTION_SCHEMA, SHARD_SCHEMA, SPLITS)
from schemas.layout import Layout
from schemas.tables import PIPELINE_RATE_HZ

log = logging.getLogger("audioverse.release")

UNTRAINED_WARNING = ("UNTRAINED CODEC: {model} has seeded random weights (no trained codec ships "
                     "in a package). Its codes are deterministic but carry no meaning: use this "
                     "release to test the plumbing, never to train. Point release.tokenizer.model "
                     "at a trained codec (configs/cluster.yaml) for real releases.")


@dataclass
class ReleaseResult:
    exit_code: int
    manifest: dict
    prefix: str
    already_released: bool = False


def release_prefix(output_uri: str, release_id: str) -> str:
    return Layout(output_uri).release(release_id)


def read_manifest(store: ObjectStore, prefix: str) -> dict | None:
    uri = prefix + MANIFEST
    return json.loads(store.get(uri)) if store.exists(uri) else None


def run_release(cfg: PipelineConfig, release_id: str | None = None,
                config_path: str = "") -> ReleaseResult:
    t0 = time.monotonic()
    started_at = now()
    store = ObjectStore(resolve_storage(cfg.storage))
    release_id = release_id or "r" + new_run_id()
    prefix = release_prefix(cfg.output.uri, release_id)
    store.check_bucket(cfg.input.uri)
    store.check_bucket(cfg.output.uri)
    existing = read_manifest(store, prefix)
    if existing is not None:
        log.info("release %s exists (%smanifest.json); releases are immutable: nothing to do",
                 release_id, prefix)
        return ReleaseResult(0, existing, prefix, already_released=True)

    rcfg = cfg.release
    entry = cfg.models[rcfg.tokenizer.model]
    codec_model = ModelRegistry(cfg.models, cfg.model_cache_dir, store.cfg).resolve(
        rcfg.tokenizer.model)  # a missing or corrupt codec fails here, before any work
    codec_version = codec_model.label
    untrained = entry.source == "seeded"
    if untrained:
        log.warning(UNTRAINED_WARNING.format(model=codec_version))

    view = build_view(store, cfg)
    frame, selection = select(view.frame(), rcfg)
    chosen = frame.index[frame["selected"]].to_numpy()
    selected = view.table.take(pa.array(chosen, pa.int64()))
    split_col = pa.array(frame.loc[chosen, "split"].tolist(), pa.string())
    score_col = pa.array(frame.loc[chosen, "quality_score"].tolist(), pa.float32())
    log.info("selected %d of %d eligible segments (top %g of %s per %s, %.2f h)",
             selection["selected"], selection["eligible"], rcfg.fraction, rcfg.unit,
             "/".join(selection["stratify_by"]), selection["selected_hours"])

    # --- codes: from the cache, the rest from the codec ----------------------------------------
    wanted = set(selected.column("segment_id").to_pylist())
    cached = read_code_cache(store, cfg.output.uri, codec_version, wanted)
    have = set(cached.column("segment_id").to_pylist())
    todo = selected.filter(pc.invert(pc.is_in(selected.column("segment_id"),
                                              value_set=pa.array(sorted(have), pa.string()))))
    log.info("codes: %d segments cached for %s, %d to tokenize", len(have), codec_version,
             todo.num_rows)
    fresh, failed = _tokenize(todo, cfg) if todo.num_rows else (None, {})
    cache_file = None
    if fresh is not None and fresh.num_rows:
        cache_file = write_code_cache(store, cfg.output.uri, codec_version, release_id, fresh)
        cached = pa.concat_tables([cached, fresh.select(cached.column_names).cast(cached.schema)])

    # --- shards per split ----------------------------------------------------------------------
    rows = _shard_rows(selected, split_col, score_col, cached, codec_model, codec_version)
    splits = {}
    for split in SPLITS:
        part = rows.filter(pc.equal(rows.column("split"), split))
        shards = write_split_shards(store, prefix, split, part, rcfg.shards.target_mb,
                                    rcfg.shards.row_group_rows)
        splits[split] = {"rows": part.num_rows, "shards": shards,
                         "hours": round(sum(s["hours"] for s in shards), 6)}

    # --- the selection table: every segment of the view and why it was (not) selected ---------
    if failed:
        frame.loc[frame["segment_id"].isin(failed), "selected"] = False
    sel_path = "selection/part-00000.parquet"
    store.put(prefix + sel_path, _selection_parquet(frame))

    manifest = {
        "format": RELEASE_FORMAT,
        "release_id": release_id,
        "created_at": now(),
        "started_at": started_at,
        "wall_s": round(time.monotonic() - t0, 2),
        "code_version": f"audioverse {__version__}",
        "config": config_path,
        "release_config": asdict(rcfg),
        "runs": view.runs,
        "dataset_view": {"recordings": view.recordings, "segments": view.table.num_rows,
                         "committed_runs": view.committed_runs,
                         "gone_recordings": view.gone_recordings,
                         "takedown_recordings": view.takedown_recordings,
                         "superseded_recordings": view.superseded_recordings},
        "models": view.run_models,            # per contributing run: role -> name@version
        "codec": {**_codec_info(codec_model), "untrained": untrained,
                  "warning": UNTRAINED_WARNING.format(model=codec_version) if untrained else None},
        "selection": selection,
        "selection_files": [sel_path],
        "tokenized": {"from_cache": len(have), "new": 0 if fresh is None else fresh.num_rows,
                      "cache_file": cache_file},
        "excluded": [{"segment_id": k, "reason": v} for k, v in sorted(failed.items())],
        "splits": splits,
        "rows": rows.num_rows,
        "hours": round(sum(s["hours"] for s in splits.values()), 6),
    }
    store.put(prefix + MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(),
              "application/json")
    log.info("release committed: %s%s", prefix, MANIFEST)
    return ReleaseResult(0, manifest, prefix)


def _tokenize(todo: pa.Table, cfg: PipelineConfig) -> tuple[pa.Table, dict[str, str]]:
    """Run the tokenize stage over `todo` with Ray Data; returns (codes rows, failures)."""
    from pipeline.dag import apply_stage, stage_resources

    import ray

    cols = ["segment_id", "source_uri", "source_etag", "start_sample", "end_sample"]
    # Ordered by source: a batch then holds whole recordings, decoded once each.
    todo = todo.select(cols).sort_by([("source_uri", "ascending"), ("segment_id", "ascending")])
    res = stage_resources(cfg, TokenizeStage)
    per_block = max(1, res.batch_size)
    blocks = [todo.slice(i, per_block) for i in range(0, todo.num_rows, per_block)]
    kwargs = {"cfg": cfg.release.tokenizer, "models": dict(cfg.models),
              "model_cache_dir": cfg.model_cache_dir, "storage": cfg.storage,
              "decode_cfg": cfg.decode}

    def execute() -> list[pa.Table]:
        ds = apply_stage(ray.data.from_arrow(blocks), TokenizeStage, kwargs, res,
                         whole_blocks=False)
        out, done, t0 = [], 0, time.monotonic()
        last = t0
        for batch in stream(ds.iter_batches(batch_format="pyarrow", batch_size=None)):
            out.append(batch)
            done += batch.num_rows
            tick = time.monotonic()
            if tick - last >= cfg.run.progress_interval_s or done == todo.num_rows:
                log.info("tokenized %d/%d segments, %.0fs", done, todo.num_rows, tick - t0)
                last = tick
        return out

    with ray_session(cfg):
        out = run_with_worker_retries(execute, cfg.run.worker_failure_attempts, "tokenization")
    table = pa.concat_tables(out)
    errors = table.column("tokenize_error")
    failed = {sid: err for sid, err in zip(table.column("segment_id").to_pylist(),
                                          errors.to_pylist()) if err}
    if failed:
        log.warning("%d selected segment(s) could not be tokenized and are left out (see "
                    "manifest.json `excluded`)", len(failed))
    return table.filter(pc.is_null(errors)), failed


def _shard_rows(selected: pa.Table, split_col: pa.Array, score_col: pa.Array, codes: pa.Table,
                codec_model, codec_version: str) -> pa.Table:
    """Selected annotation rows + their codes, as SHARD_SCHEMA (segments without codes are
    left out: they failed to tokenize)."""
    base = selected.append_column("split", split_col).append_column("quality_score", score_col)
    # By hand: Arrow's join does not carry nested columns (event labels, codes).
    where = {sid: i for i, sid in enumerate(codes.column("segment_id").to_pylist())}
    ids = base.column("segment_id").to_pylist()
    keep = [i for i, sid in enumerate(ids) if sid in where]
    joined = base.take(pa.array(keep, pa.int64()))
    picked = codes.take(pa.array([where[ids[i]] for i in keep], pa.int64()))
    for name in ("codes", "num_codebooks", "num_frames"):
        joined = joined.append_column(name, picked.column(name))
    labels = joined.column("event_labels").to_pylist()
    n = joined.num_rows
    cols = {
        "event_tags": pa.array([[lab["name"] for lab in (ls or [])] for ls in labels],
                               pa.list_(pa.string())),
        "codec_name": pa.array([codec_model.name] * n, pa.string()),
        "codec_version": pa.array([codec_version] * n, pa.string()),
        "sample_rate": pa.array([PIPELINE_RATE_HZ] * n, pa.int32()),
    }
    arrays = [cols[f.name] if f.name in cols else joined.column(f.name).cast(f.type)
              for f in SHARD_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SHARD_SCHEMA)


def _selection_parquet(frame: pd.DataFrame) -> bytes:
    data = {}
    for f in SELECTION_SCHEMA:
        values = frame[f.name].tolist() if f.name in frame else [None] * len(frame)
        data[f.name] = pa.array([None if (isinstance(v, float) and v != v) or v is pd.NA
                                 else v for v in values], f.type)
    return parquet_bytes(pa.table(data, schema=SELECTION_SCHEMA), SELECTION_SCHEMA, "selection")


def _codec_info(resolved) -> dict:
    """The codec's rate, frame rate and codebooks from its config (no weights loaded)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(resolved.directory), local_files_only=True)
    return {"name": resolved.name, "version": resolved.label, "model_type": c.model_type,
            "sample_rate": getattr(c, "sampling_rate", None) or getattr(c, "sample_rate", None),
            "frame_rate": float(c.frame_rate), "num_codebooks": int(c.num_quantizers),
            "codebook_size": int(c.codebook_size)}
