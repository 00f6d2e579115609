"""ASR throughput: real-time factor of each system and of the whole ASR stage, batched vs.
unbatched, on real English speech (LibriVox and CMU clips, each read twice).

    .venv/bin/python -m bench.asr_bench

Real-time factor = processing seconds / audio seconds (lower is faster). Models are loaded
before timing; every figure comes from this one run on this machine.
"""
from __future__ import annotations

import time
from pathlib import Path

from bench.asr_eval import as_segments, english_clips

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from model_serving.asr_protocol import load_asr_system
    from model_serving.registry import ModelRegistry
    from operators.asr import AsrStage
    from pipeline.config import load_config

    cfg = load_config(ROOT / "configs" / "local.yaml")
    clips = english_clips() * 2
    audios = [c.audio for c in clips]
    audio_s = sum(a.size for a in audios) / 16000
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir)
    batch = cfg.asr.batch_size
    rows = []
    for spec in cfg.asr.systems:
        system = load_asr_system(spec.name, registry.resolve(spec.model), device=spec.device,
                                 compute_type=spec.compute_type, cpu_threads=spec.cpu_threads)
        langs = [None if system.detects_language else "en"] * len(audios)
        system.transcribe(audios[:1], langs[:1])  # warm up
        timings = {}
        for size in (1, batch):
            t0 = time.perf_counter()
            for i in range(0, len(audios), size):
                system.transcribe(audios[i:i + size], langs[i:i + size])
            timings[size] = time.perf_counter() - t0
        rows.append((spec.name, timings[1] / audio_s, timings[batch] / audio_s))

    segments = as_segments(clips)
    stage_rtf = {}
    for size in (1, batch):
        overrides = {**cfg.asr.__dict__, "batch_size": size}
        stage = AsrStage(type(cfg.asr)(**overrides), cfg.models, cfg.model_cache_dir)
        stage(segments.slice(0, 1))  # load the models outside the timing
        t0 = time.perf_counter()
        stage(segments)
        stage_rtf[size] = (time.perf_counter() - t0) / audio_s
    rows.append(("ASR stage (all systems)", stage_rtf[1], stage_rtf[batch]))

    print(f"\nASR real-time factor on {audio_s:.0f} s of English speech ({len(clips)} segments, "
          f"{cfg.asr.systems[0].cpu_threads} threads for Whisper)")
    print(f"  {'system':<26} {'unbatched':>10} {f'batch {batch}':>10} {'speed-up':>9}")
    for name, unbatched, batched in rows:
        print(f"  {name:<26} {unbatched:>10.3f} {batched:>10.3f} {unbatched / batched:>8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
