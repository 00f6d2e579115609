"""Benchmark: the whole pipeline vs. each stage alone, on >= 20 minutes of real audio.

    make bench                          # or: .venv/bin/python -m bench.run_bench [--minutes 24]

1. Starts the local S3 server (.local/s3) and stages the benchmark corpus (real recordings from
   Debian packages joined into ~60 s FLAC files) into s3://audioverse-bench/raw/.
2. Runs the pipeline end to end on local Ray (the same code path as `audioverse run`).
3. Runs each stage of the DAG alone, in this process, over the whole corpus (the output of the
   stage before it), batched as configured; then a plain per-file loop: every object through
   every stage in turn, with the same models.
4. Prints one table. Ratios are taken within this one run, since machines here are noisy:
   pipeline wall / slowest stage alone, / the sum of the stages alone (they share the same
   cores), and / the per-file loop.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "audioverse-bench"


def _stage_alone(stage, batches: list[pa.Table]) -> tuple[list[pa.Table], float]:
    if not stage._ready:  # load the model outside the timing
        stage.setup()
        stage._ready = True
    t0 = time.perf_counter()
    out = [stage(b) for b in batches]
    return out, time.perf_counter() - t0


def _chunks(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def _by_recording(table: pa.Table) -> list[pa.Table]:
    import pyarrow.compute as pc

    ids = table.column("recording_id")
    return [table.filter(pc.equal(ids, rid)) for rid in pc.unique(ids).to_pylist()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=24.0, help="corpus length (>= 20)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override for every part of the bench")
    args = parser.parse_args(argv)

    from infra import demo_corpus, local_s3
    from operators.storage import ObjectStore
    from pipeline.config import load_config
    from pipeline.dag import stage_resources
    from pipeline.listing import list_inputs
    from operators.logs import setup_logging
    from pipeline.ray_session import new_run_id
    from pipeline.runner import run_pipeline
    from schemas.config import StorageConfig

    setup_logging("INFO")
    server = local_s3.start(ROOT / ".local" / "s3", bucket=BUCKET)
    os.environ.update(server.env())
    t0 = time.perf_counter()
    staged = demo_corpus.stage(demo_corpus.bench_files(args.minutes), f"s3://{BUCKET}/raw/")
    print(f"benchmark corpus: {staged['objects']} objects at s3://{BUCKET}/raw/ "
          f"({staged['uploaded']} uploaded) in {time.perf_counter() - t0:.1f}s", flush=True)

    # Captions are measured on their own (bench/caption_bench.py): the embedded 135M text model
    # at ~0.25 captions/s would dominate this table, while in production captioning is a
    # separate GPU service. `--set caption.enabled=true` puts them back in.
    cfg = load_config(ROOT / "configs" / "local.yaml", [
        f"input.uri=s3://{BUCKET}/raw/", f"output.uri=s3://{BUCKET}/", "caption.enabled=false",
        *args.overrides])

    # --- the pipeline, end to end --------------------------------------------------------------
    # --full: a benchmark measures every object, whatever earlier bench runs already did.
    result = run_pipeline(cfg, run_id="bench-" + new_run_id(), config_path="configs/local.yaml",
                          full=True)
    s = result.summary
    pipeline_wall = s["wall_s"]
    audio_s = s["audio_hours"] * 3600

    # --- each stage alone over the whole corpus, then a plain per-file loop -------------------
    # The same stage classes and models as the DAG, in this one process: each stage's wall time
    # over all its input (batched as configured), then every file through every stage in turn.
    from operators.caption import CaptionStage
    from pipeline.dag import stage_plan

    plan = [(cls, kw) for cls, kw in stage_plan(cfg, StorageConfig())
            if not (cls is CaptionStage and not cfg.caption.enabled)]
    stages = [cls(**kw) for cls, kw in plan]
    listing = list_inputs(ObjectStore(StorageConfig()), cfg.input, "bench-stages")
    table, alone = listing, {}
    for stage, (cls, _) in zip(stages, plan):
        batches = (_by_recording(table) if cls.per_recording
                   else _chunks(table, stage_resources(cfg, cls).batch_size))
        out, alone[cls.name] = _stage_alone(stage, batches)
        table = pa.concat_tables(out)
        print(f"  {cls.name:<16} alone: {alone[cls.name]:7.1f} s", flush=True)
    t0 = time.perf_counter()
    for i in range(listing.num_rows):  # the plain loop: one file through every model
        rows = listing.slice(i, 1)
        for stage in stages:
            rows = stage(rows)
    per_file = time.perf_counter() - t0

    kept = table.select(["content_type", "duration_s", "drop_reason"]).to_pylist()
    speech_s = sum(r["duration_s"] or 0 for r in kept if r["content_type"] == "speech")
    stages_sum = sum(alone.values())
    slowest_name = max(alone, key=alone.get)
    slowest = alone[slowest_name]

    rows = [
        ("audio", f"{audio_s / 3600:.3f} h ({audio_s / 60:.1f} min, {s['inputs']} objects)"),
        ("segments", f"{s['segments']} ({', '.join(f'{k} {v}' for k, v in s['segments_by_content_type'].items())})"),
        ("pipeline wall (incl. Ray start)", f"{pipeline_wall:.1f} s"),
        ("pipeline real-time factor", f"{pipeline_wall / audio_s:.4f} ({audio_s / pipeline_wall:.1f}x real time)"),
    ]
    for name, t in alone.items():
        over = speech_s if name in ("asr", "speaker_embed") else audio_s
        what = "speech" if name in ("asr", "speaker_embed") else "audio"
        rows.append((f"{name} alone", f"{t:7.1f} s  ({over / t:7.1f}x real time over the {what})"))
    rows += [
        ("sum of stages alone", f"{stages_sum:.1f} s"),
        ("plain per-file loop (same models)", f"{per_file:.1f} s"),
        ("pipeline / slowest stage alone", f"{pipeline_wall / slowest:.2f} ({slowest_name})"),
        ("pipeline / sum of stages alone", f"{pipeline_wall / stages_sum:.2f}"),
        ("pipeline / per-file loop", f"{pipeline_wall / per_file:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nAudioVerse benchmark (configs/local.yaml, this machine: "
          f"{os.cpu_count()} CPUs)")
    print("-" * (width + 60))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("-" * (width + 60))
    out = ROOT / ".local" / "bench" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "audio_s": audio_s, "pipeline_wall_s": pipeline_wall, "stages_alone_s": alone,
        "per_file_loop_s": per_file, "speech_s": speech_s, "summary": s,
    }, indent=2))
    print(f"(raw numbers in {out.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
