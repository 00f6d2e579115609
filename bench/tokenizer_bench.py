"""Tokenizer throughput on this machine: seconds of audio per second, one clip per codec call vs
batches of similar length (as the release's tokenize stage forms them), on real audio
(LibriVox speech, tuxpaint sounds) resampled to the codec's rate. Prints a table.

    .venv/bin/python -m bench.tokenizer_bench [--seconds 120] [--threads 1]

The local codec is the seeded, untrained Mimi of the registry: its speed is the architecture's at
this size, its codes mean nothing. The production codec (Higgs Audio v2) runs on GPU workers;
tests/test_tokenizer_gpu.py measures it there.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.models_bench import corpus
from model_serving.codec import AudioCodec
from model_serving.registry import ModelRegistry
from operators.tokenize import codec_batches
from pipeline.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--seconds", type=float, default=120.0, help="audio to tokenize")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    import librosa

    cfg = load_config(args.config)
    tok = cfg.release.tokenizer
    resolved = ModelRegistry(cfg.models, cfg.model_cache_dir).resolve(tok.model)
    codec = AudioCodec(resolved, "cpu", args.threads)
    rate = codec.info.sample_rate
    clips = [librosa.resample(c, orig_sr=16000, target_sr=rate).astype(np.float32)
             for c in corpus(args.seconds)]
    audio_s = sum(c.size for c in clips) / rate
    codec.encode(clips[:2])  # warm-up
    rows = []

    def measure(label: str, batches: list[list[int]]):
        t0 = time.perf_counter()
        frames = 0
        for batch in batches:
            frames += sum(c.shape[1] for c in codec.encode([clips[i] for i in batch]))
        wall = time.perf_counter() - t0
        rows.append((label, len(batches), audio_s, wall, audio_s / wall, frames))

    measure("one clip per call", [[i] for i in range(len(clips))])
    lengths = [c.size for c in clips]
    for max_segments in (4, 16):
        measure(f"batched by length, <= {max_segments} clips",
                codec_batches(lengths, rate, tok.batch_seconds, max_segments))
    print(f"\ntokenizer {codec.info.version} ({codec.info.frame_rate:g} frames/s, "
          f"{codec.info.num_codebooks} codebooks), {len(clips)} clips, {args.threads} thread(s)")
    print(f"{'mode':<32} {'calls':>6} {'audio s':>8} {'wall s':>7} {'audio s/s':>10} "
          f"{'frames':>7}")
    for label, calls, a, w, rtf, frames in rows:
        print(f"{label:<32} {calls:>6} {a:>8.1f} {w:>7.2f} {rtf:>10.1f} {frames:>7}")
    base = rows[0][4]
    print("speed-up vs one clip per call: "
          + ", ".join(f"{r[0].split(', ')[-1]} {r[4] / base:.2f}x" for r in rows[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
