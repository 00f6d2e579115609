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

from model_serving.registry import ModelRegistry
from model_serving.s3client import resolve_storage
from operators.storage import ObjectStore
from operators.tokenize import TokenizeStage
from pipeline import __version__
from pipeline.errors import ConfigError
from pipeline.ledger import read_snapshot
from pipeline.ray_session import new_run_id, now, ray_session, run_with_worker_retries, stream
from pipeline.release_select import select_release
from pipeline.runs import read_summary
from pipeline.shards import attach_cached_codes, cache_prefix, write_codes_and_shards
from pipeline.signals import note_committed
from schemas.config import PipelineConfig
from schemas.release import MANIFEST, RELEASE_FORMAT, SPLITS
from schemas.layout import Layout

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


def run_release(cfg: PipelineConfig, release_id: str | None = None, config_path: str = "",
                tokenizer=None) -> ReleaseResult:
    """`tokenizer`: the stage class that makes codes (default: TokenizeStage with the
    configured codec; the scale benchmark passes a cheap one)."""
    t0 = time.monotonic()
    started_at = now()
    store = ObjectStore(resolve_storage(cfg.storage))
    release_id = release_id or "r" + new_run_id()
    layout = Layout(cfg.output.uri)
    prefix = layout.release(release_id)
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
    snapshot = read_snapshot(store, layout, cfg.run.ledger_buckets)
    if snapshot.version == 0:
        raise ConfigError(f"no committed run under {layout.runs} (a run is committed once its "
                          f"summary.json exists and merged into the ledger): run `audioverse "
                          f"run` with this config first, or check output.uri")

    # An unfinished release of this id (it died before its manifest): its parts and shards are
    # named by the blocks of that attempt, so clear them rather than leave stale files next to
    # the new ones. (The code cache is outside the release and stays: codes are deterministic.)
    leftovers = store.delete_prefix(prefix)
    if leftovers:
        log.warning("release %s was started before and did not finish: removed its %d "
                    "leftover file(s) under %s; writing it again", release_id, leftovers, prefix)
    with ray_session(cfg):
        import ray

        # The codec's facts come from its config through transformers (~20 CPU-seconds and
        # ~300 MB to import): once per dataset and codec version, in a worker, kept next to
        # the code cache; later releases read that file.
        info_uri = cache_prefix(layout.root, codec_version) + "codec.json"
        codec_info = json.loads(store.get(info_uri)) if store.exists(info_uri) else \
            ray.remote(num_cpus=1)(_codec_info).remote(codec_model)
        chosen = select_release(cfg, store, layout, release_id, snapshot)
        log.info("selected %d of %d eligible segments (top %g of %s per %s, %.2f h)",
                 chosen.summary["selected"], chosen.summary["eligible"], rcfg.fraction,
                 rcfg.unit, "/".join(chosen.summary["stratify_by"]),
                 chosen.summary["selected_hours"])
        tokens = tokenize_and_shard(cfg, layout, release_id, chosen.selected, codec_model,
                                    tokenizer)
        selection_files = chosen.write(tokens["failed"])
        if not isinstance(codec_info, dict):
            codec_info = ray.get(codec_info)
            store.put(info_uri, json.dumps(codec_info, sort_keys=True).encode(),
                      "application/json")
        # Each run's models, read by a task (a run's summary.json lists every file it wrote).
        runs = sorted(chosen.view["runs"])
        models = dict(zip(runs, ray.get([ray.remote(num_cpus=0)(_run_models).remote(
            cfg.storage, layout.root, r) for r in runs])))
    splits = {}
    for split in SPLITS:
        shards = sorted(tokens["shards"].get(split, []), key=lambda e: e["path"])
        splits[split] = {"rows": sum(e["rows"] for e in shards), "shards": shards,
                         "hours": round(sum(e["hours"] for e in shards), 6)}
    manifest = {
        "format": RELEASE_FORMAT,
        "release_id": release_id,
        "created_at": now(),
        "started_at": started_at,
        "wall_s": round(time.monotonic() - t0, 2),
        "code_version": f"audioverse {__version__}",
        "config": config_path,
        "release_config": asdict(rcfg),
        "runs": runs,
        "dataset_view": {"recordings": chosen.view["recordings"],
                         "segments": chosen.summary["segments_in_view"],
                         "committed_runs": len(snapshot.merged_runs),
                         "takedown_recordings": chosen.view["takedown_recordings"],
                         "ledger_version": snapshot.version},
        "models": models,
        "codec": {**codec_info, "untrained": untrained,
                  "warning": UNTRAINED_WARNING.format(model=codec_version) if untrained else None},
        "selection": chosen.summary,
        "selection_files": selection_files,
        "tokenized": {"from_cache": tokens["from_cache"], "new": tokens["new"],
                      "cache_files": tokens["cache_files"]},
        "excluded": [{"segment_id": k, "reason": v} for k, v in sorted(tokens["failed"].items())],
        "splits": splits,
        "rows": sum(s["rows"] for s in splits.values()),
        "hours": round(sum(s["hours"] for s in splits.values()), 6),
    }
    store.put(prefix + MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(),
              "application/json")
    note_committed(f"release {release_id} had already committed ({prefix}{MANIFEST})")
    log.info("release committed: %s%s", prefix, MANIFEST)
    return ReleaseResult(0, manifest, prefix)


def tokenize_and_shard(cfg: PipelineConfig, layout: Layout, release_id: str, selected: list,
                       codec_model, tokenizer=None) -> dict:
    """The selected rows (`selected[b]`: refs of blocks of the rows of code bucket b) -> codes
    from the cache (one task per bucket reads only that bucket's cache files), the rest from
    the codec (actors, on GPUs where configured), then new cache files and shards, all written
    by workers. Returns the summed stats."""
    import ray

    from pipeline.dag import apply_stage, stage_resources
    from pipeline.ray_session import TASK_CPUS

    stage = tokenizer or TokenizeStage
    kwargs = {"cfg": cfg.release.tokenizer, "models": dict(cfg.models),
              "model_cache_dir": cfg.model_cache_dir, "storage": cfg.storage,
              "decode_cfg": cfg.decode}
    totals = {"from_cache": 0, "new": 0, "cache_files": [], "shards": {}, "failed": {}}
    attach = ray.remote(num_cpus=TASK_CPUS, max_retries=3)(_attach_bucket)

    def execute() -> None:
        refs = [attach.remote(cfg.storage, layout.root, codec_model.label, *blocks)
                for blocks in selected if blocks]
        if not refs:
            return
        ds = ray.data.from_arrow_refs(refs)
        ds = apply_stage(ds, stage, kwargs, stage_resources(cfg, stage),
                         whole_blocks=False)
        ds = ds.map_batches(write_codes_and_shards, fn_kwargs={
            "storage": cfg.storage, "output_uri": layout.root,
            "release_prefix": layout.release(release_id), "release_id": release_id,
            "codec_name": codec_model.name, "codec_version": codec_model.label,
            "target_mb": cfg.release.shards.target_mb,
            "row_group_rows": cfg.release.shards.row_group_rows},
            batch_format="pyarrow", batch_size=None)
        done, t0, last = 0, time.monotonic(), time.monotonic()
        for batch in stream(ds.iter_batches(batch_format="pyarrow", batch_size=None)):
            for text in batch.column("stats").to_pylist():
                stats = json.loads(text)
                totals["from_cache"] += stats["from_cache"]
                totals["new"] += stats["new"]
                totals["cache_files"] += stats["cache_files"]
                totals["failed"].update(stats["failed"])
                for split, entries in stats["shards"].items():
                    totals["shards"].setdefault(split, []).extend(entries)
                done += stats["from_cache"] + stats["new"] + len(stats["failed"])
            tick = time.monotonic()
            if tick - last >= cfg.run.progress_interval_s:
                log.info("codes: %d segments done, %.0fs", done, tick - t0)
                last = tick

    run_with_worker_retries(execute, cfg.run.worker_failure_attempts, "tokenization")
    log.info("codes: %d segments from the cache of %s, %d tokenized now", totals["from_cache"],
             codec_model.label, totals["new"])
    if totals["failed"]:
        log.warning("%d selected segment(s) could not be tokenized and are left out (see "
                    "manifest.json `excluded`)", len(totals["failed"]))
    return totals


def _run_models(storage, output_uri: str, run_id: str) -> dict:
    """A Ray task: the models a committed run used, from its summary."""
    summary = read_summary(ObjectStore(storage, reached=True), Layout(output_uri), run_id)
    return (summary or {}).get("models", {})


def _attach_bucket(storage, output_uri: str, codec_version: str, *blocks):
    """A Ray task: the selected rows of one code bucket with their cached codes (null where
    none)."""
    import pyarrow as pa

    return attach_cached_codes(pa.concat_tables(blocks), storage, output_uri, codec_version)


def _codec_info(resolved) -> dict:
    """The codec's rate, frame rate and codebooks from its config (no weights loaded)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(resolved.directory), local_files_only=True)
    return {"name": resolved.name, "version": resolved.label, "model_type": c.model_type,
            "sample_rate": getattr(c, "sampling_rate", None) or getattr(c, "sample_rate", None),
            "frame_rate": float(c.frame_rate), "num_codebooks": int(c.num_quantizers),
            "codebook_size": int(c.codebook_size)}
