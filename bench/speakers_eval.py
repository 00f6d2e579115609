"""Speaker count on recordings joined from 1, 2 and 3 real speakers (infra/speaker_corpus.py),
with the configured encoder and clustering. Prints one row per recording and the accuracy.

    .venv/bin/python -m bench.speakers_eval [--config configs/local.yaml] [--threshold 0.38]
"""
from __future__ import annotations

import argparse
import time

from infra.speaker_corpus import evaluation_set


def main(argv: list[str] | None = None) -> int:
    from model_serving.registry import ModelRegistry
    from model_serving.speaker_encoder import load_speaker_encoder
    from operators.speakers import cluster_windows
    from pipeline.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--threshold", type=float, nargs="*",
                        help="distance thresholds to compare (default: the config's)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    sp = cfg.speakers
    encoder = load_speaker_encoder(ModelRegistry(cfg.models, cfg.model_cache_dir).resolve(sp.model))
    recordings = evaluation_set()
    t0 = time.perf_counter()
    windows = [encoder.embed_windows(r.audio, sp.hop_s) for r in recordings]
    seconds = sum(r.audio.size for r in recordings) / 16000
    elapsed = time.perf_counter() - t0
    thresholds = args.threshold or [sp.distance_threshold]
    print(f"{'recording':40s} {'true':>4s} " + " ".join(f"{t:>6.2f}" for t in thresholds))
    right = {t: 0 for t in thresholds}
    for rec, emb in zip(recordings, windows):
        got = [int(cluster_windows(emb, t, sp.min_speaker_windows, sp.min_speaker_share).max()) + 1
               for t in thresholds]
        for t, g in zip(thresholds, got):
            right[t] += g == len(rec.speakers)
        print(f"{rec.name:40s} {len(rec.speakers):>4d} " + " ".join(f"{g:>6d}" for g in got))
    print()
    for t in thresholds:
        print(f"threshold {t:.2f}: {right[t]}/{len(recordings)} recordings with the right count "
              f"({right[t] / len(recordings):.0%})")
    print(f"{encoder.model_label}: embedded {seconds:.0f} s of audio in {elapsed:.1f} s "
          f"({seconds / elapsed:.0f}x real time, hop {sp.hop_s} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
