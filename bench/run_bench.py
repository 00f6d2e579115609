"""Benchmark: the whole pipeline vs. each stage alone, on >= 20 minutes of real audio.

    make bench                          # or: .venv/bin/python -m bench.run_bench [--minutes 24]

1. Starts the local S3 server (.local/s3) and stages the benchmark corpus (real recordings from
   Debian packages joined into ~60 s FLAC files) into s3://audioverse-bench/raw/.
2. Runs the pipeline end to end on local Ray (the same code path as `audioverse run`).
3. Runs each stage alone, in this process, as a plain sequential loop over the same inputs
   (decode every object; VAD every decoded recording; ASR every speech segment).
4. Prints one table. Ratios are taken within this one run, since machines here are noisy:
   pipeline wall / slowest stage alone, and pipeline wall / the sequential loop (sum of stages).
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
    stage(batches[0].slice(0, 0)) if batches else None  # load the model outside the timing
    t0 = time.perf_counter()
    out = [stage(b) for b in batches]
    return out, time.perf_counter() - t0


def _chunks(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=24.0, help="corpus length (>= 20)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override for every part of the bench")
    args = parser.parse_args(argv)

    from infra import demo_corpus, local_s3
    from operators.asr import AsrStage
    from operators.decode import DecodeStage
    from operators.storage import ObjectStore
    from operators.vad import VadSegmentStage
    from pipeline.config import load_config
    from pipeline.dag import stage_resources
    from pipeline.listing import list_inputs
    from operators.logs import setup_logging
    from pipeline.runner import new_run_id, run_pipeline
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
    result = run_pipeline(cfg, run_id="bench-" + new_run_id(), config_path="configs/local.yaml")
    s = result.summary
    pipeline_wall = s["wall_s"]
    audio_s = s["audio_hours"] * 3600

    # --- each stage alone, as a plain sequential loop -------------------------------------------
    listing = list_inputs(ObjectStore(StorageConfig()), cfg.input, "bench-stages")
    decode = DecodeStage(StorageConfig(), cfg.input, cfg.decode)
    decoded, t_decode = _stage_alone(decode, _chunks(listing, 1))
    vad = VadSegmentStage(cfg.segment, cfg.models, cfg.model_cache_dir)
    segmented, t_vad = _stage_alone(vad, decoded)
    segments = pa.concat_tables(segmented)
    asr = AsrStage(cfg.asr, cfg.models, cfg.model_cache_dir)
    _, t_asr = _stage_alone(asr, _chunks(segments, stage_resources(cfg, AsrStage).batch_size))

    speech = [r for r in segments.select(["content_type", "duration_s", "drop_reason"]).to_pylist()
              if r["content_type"] == "speech" and r["drop_reason"] is None]
    speech_s = sum(r["duration_s"] for r in speech)
    sequential = t_decode + t_vad + t_asr
    slowest = max(t_decode, t_vad, t_asr)

    rows = [
        ("audio", f"{audio_s / 3600:.3f} h ({audio_s / 60:.1f} min, {s['inputs']} objects)"),
        ("segments", f"{s['segments']} ({', '.join(f'{k} {v}' for k, v in s['segments_by_content_type'].items())})"),
        ("pipeline wall (incl. Ray start)", f"{pipeline_wall:.1f} s"),
        ("pipeline real-time factor", f"{pipeline_wall / audio_s:.4f} ({audio_s / pipeline_wall:.1f}x real time)"),
        ("decode alone", f"{t_decode:.1f} s  ({audio_s / t_decode:.0f}x real time)"),
        ("VAD + segmenting alone", f"{t_vad:.1f} s  ({audio_s / t_vad:.0f}x real time)"),
        ("ASR alone (speech only)", f"{t_asr:.1f} s  ({speech_s / t_asr:.1f}x real time over "
                                    f"{speech_s / 60:.1f} min of speech, {len(speech)} segments)"),
        ("sequential loop (sum of stages)", f"{sequential:.1f} s"),
        ("pipeline / slowest stage alone", f"{pipeline_wall / slowest:.2f}"),
        ("pipeline / sequential loop", f"{pipeline_wall / sequential:.2f}"),
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
        "audio_s": audio_s, "pipeline_wall_s": pipeline_wall, "decode_s": t_decode,
        "vad_s": t_vad, "asr_s": t_asr, "speech_s": speech_s, "summary": s,
    }, indent=2))
    print(f"(raw numbers in {out.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
