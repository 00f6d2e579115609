"""How long a piece should Moonshine decode? Time and WER of the Moonshine adapter with segments
cut into pieces of at most N seconds (model_serving/moonshine_asr.py MAX_PIECE_SECONDS).

    .venv/bin/python -m bench.moonshine_pieces [--pieces 15,10,8] [--minutes 12]

Sets: the English speech segments of a `make bench` corpus of `--minutes` (decode, VAD, measures
and events run as a night runs them; Whisper base picks the English ones, as the ASR stage does),
where Moonshine sometimes loops until its token cap; the clean English clips of bench/asr_eval.py,
the same under white noise at 5 dB, and the clean clips joined into ~30 s recordings (the pieces
are cut inside those). Prints seconds and WER per piece length. Timing is one pass on a shared
machine.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def bench_segments(minutes: float) -> list[np.ndarray]:
    """The speech segments a night would send to ASR from a `make bench` corpus."""
    from bench.inprocess import features_before
    from infra import demo_corpus
    from operators.audio import from_bytes

    table = features_before(demo_corpus.bench_files(minutes), f"pieces-{minutes:g}", "asr")
    return [from_bytes(r["audio"]) for r in table.to_pylist()
            if r["drop_reason"] is None and r["content_type"] == "speech"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moonshine_pieces", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pieces", default="15,10,8", help="piece lengths to compare, seconds")
    parser.add_argument("--minutes", type=float, default=12.0, help="bench corpus length")
    args = parser.parse_args(argv)

    from bench.asr_eval import _mix, english_clips, wer_of
    from operators.asr import AsrStage
    from pipeline.config import load_config

    cfg = load_config(ROOT / "configs" / "local.yaml", ["caption.enabled=false"])
    stage = AsrStage(cfg.asr, cfg.models, cfg.model_cache_dir)
    stage.setup()
    by_name = {t.system.name: t.system for t in stage.systems}
    moon, base = by_name["moonshine-base-en"], by_name["whisper-base"]

    segments = bench_segments(args.minutes)
    detected = base.transcribe(segments, [None] * len(segments))
    english = [a for a, h in zip(segments, detected) if h.language == "en"]
    clean = english_clips()
    rng = np.random.default_rng(5)
    pause = np.zeros(int(0.4 * 16000), np.float32)
    joined, audio, refs = [], [], []
    for c in clean:
        audio += [c.audio, pause]
        refs.append(c.reference)
        if sum(a.size for a in audio) > 30 * 16000:
            joined.append((np.concatenate(audio), " ".join(refs)))
            audio, refs = [], []
    sets = {
        "clean": [(c.audio, c.reference) for c in clean],
        "noise 5 dB": [(_mix(c.audio, rng.standard_normal(c.audio.size).astype(np.float32), 5.0),
                        c.reference) for c in clean],
        "joined": joined,
    }
    print(f"bench corpus: {len(english)} English speech segments, "
          f"{sum(a.size for a in english) / 16000:.0f} s; clean clips {len(clean)}, "
          f"joined {[round(a.size / 16000, 1) for a, _ in joined]} s")
    moon.transcribe([english[0]], ["en"])  # warm-up outside the timing
    header = f"{'piece':>6} {'bench s':>8} {'slowest s':>10}" + "".join(
        f"{name + ' WER':>16}" for name in sets)
    print(header + "\n" + "-" * len(header))
    for piece in (float(p) for p in args.pieces.split(",")):
        moon.max_piece_s = piece
        times = []
        for audio_ in english:
            t0 = time.perf_counter()
            moon.transcribe([audio_], ["en"])
            times.append(time.perf_counter() - t0)
        wers = []
        for items in sets.values():
            hyps = [moon.transcribe([a], ["en"])[0].text for a, _ in items]
            wers.append(wer_of([r for _, r in items], hyps, ["en"] * len(hyps)))
        print(f"{piece:6.0f} {sum(times):8.1f} {max(times, default=0):10.1f}"
              + "".join(f"{w:16.3f}" for w in wers), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
