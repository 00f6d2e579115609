"""Throughput of each annotation model alone on this machine, one thread each, on the same real
audio (LibriVox speech and tuxpaint sound effects, ~60 s in all). Prints a table.

    .venv/bin/python -m bench.models_bench [--seconds 60]

PANNs Cnn14 runs with a seeded random checkpoint (no trained one ships in a package): its speed
is the real model's, its labels are not.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from infra.demo_corpus import LIBRIVOX, TUXPAINT, read_audio
from infra.sound_references import SOUND_LABELS


def corpus(seconds: float) -> list[np.ndarray]:
    clips = [read_audio(p) for p in sorted(LIBRIVOX.glob("*.wav"))]
    clips += [read_audio(TUXPAINT / p) for p in sorted(SOUND_LABELS)]
    out, total = [], 0
    for clip in itertools.cycle(clips):
        if total >= seconds * 16000:
            return out
        out.append(clip)
        total += clip.size


def timed(fn, clips) -> float:
    fn(clips[0])  # warm-up: lazy init, imports, JIT compilation
    t0 = time.perf_counter()
    for clip in clips:
        fn(clip)
    return time.perf_counter() - t0


def seeded_panns(work: Path):
    import torch

    from model_serving.panns import CNN14_ARGS, PannsTagger, import_models
    from model_serving.registry import ResolvedModel

    models = import_models(work)
    torch.manual_seed(0)
    net = models.Cnn14(classes_num=527, **CNN14_ARGS)
    model_dir = work / "panns"
    model_dir.mkdir()
    torch.save({"model": net.state_dict()}, model_dir / "Cnn14_seeded.pth")
    labels = ["index,mid,display_name"] + [f"{i},/t/{i},c{i}" for i in range(527)]
    (model_dir / "class_labels_indices.csv").write_text("\n".join(labels) + "\n")
    files = ("Cnn14_seeded.pth", "class_labels_indices.csv")
    return PannsTagger(ResolvedModel("events/panns-seeded", "0", "panns-cnn14", model_dir, files),
                       work_dir=work)


def main(argv: list[str] | None = None) -> int:
    import torch

    from model_serving.event_tagger import load_event_tagger
    from model_serving.registry import ModelRegistry
    from model_serving.silero_vad import SileroVad
    from model_serving.speaker_encoder import load_speaker_encoder
    from operators.measures import loudness_lufs, pitch_stats, snr_db
    from pipeline.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--config", default="configs/local.yaml")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir)
    clips = corpus(args.seconds)
    audio_s = sum(c.size for c in clips) / 16000
    work = Path(tempfile.mkdtemp(prefix="models-bench-"))

    yamnet = load_event_tagger(registry.resolve(cfg.events.model), work_dir=work)
    encoder = load_speaker_encoder(registry.resolve(cfg.speakers.model))
    vad = SileroVad(registry.resolve(cfg.segment.vad_model))
    panns = seeded_panns(work)
    rows = [
        ("VAD (Silero v6 ONNX)", lambda a: vad.speech_probs(a)),
        (f"events: {yamnet.model_label}", lambda a: yamnet.frame_scores(a)),
        ("events: PANNs Cnn14 (seeded weights)", lambda a: panns.frame_scores(a)),
        (f"speakers: {encoder.model_label}", lambda a: encoder.embed_windows(a, cfg.speakers.hop_s)),
        ("measures: SNR + loudness (pyloudnorm)", lambda a: (snr_db(a), loudness_lufs(a))),
        ("measures: pitch (WORLD DIO)", lambda a: pitch_stats(a, 60, 500)),
    ]
    print(f"{len(clips)} clips, {audio_s:.1f} s of audio, 1 thread per model\n")
    print(f"{'model':52s} {'seconds':>8s} {'x real time':>12s}")
    for name, fn in rows:
        elapsed = timed(fn, clips)
        print(f"{name:52s} {elapsed:8.2f} {audio_s / elapsed:12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
