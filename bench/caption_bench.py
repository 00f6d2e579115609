"""Caption benchmark: the embedded server and model, with and without constrained decoding.

Features come from real material: LibriVox and CMU transcripts (pocketsphinx-testdata) as speech
segments and tuxpaint sound effects named for what they are as sound segments. Each mode runs
the real caption stage (one request at a time, as the embedded server serves them) and reports
captions/s, generated tokens/s, and how the replies fared: valid without repair, repaired into a
valid caption, or dropped.

    .venv/bin/python -m bench.caption_bench [--segments 12]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import pyarrow as pa

from infra.demo_corpus import cards_references, librivox_references
from infra.sound_references import SOUND_LABELS
from model_serving.llm_server import LocalLlmServer
from model_serving.registry import ModelRegistry
from operators.caption import CaptionStage
from pipeline.config import load_config


def feature_rows(n: int) -> list[dict]:
    speech = [{"segment_id": f"speech-{i:05d}", "content_type": "speech", "language": "en",
               "speaker_count": 1, "duration_s": round(len(text.split()) / 2.5, 1),
               "transcript": text, "drop_reason": None,
               "event_labels": [{"name": "Speech", "score": 0.9}]}
              for i, text in enumerate(sorted(librivox_references().values())
                                       + sorted(cards_references().values()))]
    sound = [{"segment_id": f"sound-{i:05d}", "content_type": "sound", "duration_s": 3.0,
              "drop_reason": None,
              "event_labels": [{"name": name, "score": 0.6} for name in sorted(labels)[:3]]}
             for i, labels in enumerate(SOUND_LABELS.values())]
    rows = []
    for a, b in zip(speech, sound):
        rows += [a, b]
    return rows[:n]


def run_mode(url: str, cfg, rows: list[dict], constrained: bool) -> dict:
    stage = CaptionStage(replace(cfg.caption, constrained=constrained, concurrency=1),
                         endpoint_url=url, model_label="bench")
    t0 = time.monotonic()
    out = stage(pa.Table.from_pylist(rows)).to_pylist()
    wall = time.monotonic() - t0
    tokens = sum(r["caption_completion_tokens"] or 0 for r in out)
    answered = [r for r in out if r["caption_raw"] is not None]
    return {
        "mode": "constrained" if constrained else "unconstrained",
        "segments": len(out), "wall_s": wall, "captions_per_s": len(out) / wall,
        "tokens_per_s": tokens / wall, "tokens_per_caption": tokens / max(1, len(out)),
        "valid_as_is": sum(1 for r in answered
                           if not r["caption_repaired"] and r["drop_reason"] is None),
        "needed_repair": sum(1 for r in answered if r["caption_repaired"]),
        "repaired_valid": sum(1 for r in answered
                              if r["caption_repaired"] and r["drop_reason"] is None),
        "dropped": sum(1 for r in out if r["drop_reason"] is not None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--config", default="configs/local.yaml")
    args = parser.parse_args()
    cfg = load_config(args.config)
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir)
    resolved = registry.resolve(cfg.caption.local_server.model)
    rows = feature_rows(args.segments)
    with LocalLlmServer(str(resolved.only_file(".gguf", "GGUF model")),
                        alias=cfg.caption.endpoint.model,
                        threads=cfg.caption.local_server.threads) as server:
        results = [run_mode(server.url, cfg, rows, c) for c in (True, False)]
    print(f"\ncaption benchmark: {resolved.label}, llama.cpp server, "
          f"{cfg.caption.local_server.threads} threads, greedy, max_tokens "
          f"{cfg.caption.max_tokens}, {len(rows)} segments (speech and sound, real texts)")
    head = (f"{'mode':<14} {'captions/s':>10} {'tokens/s':>9} {'tok/caption':>11} "
            f"{'valid as is':>11} {'needed repair':>13} {'repaired->valid':>15} {'dropped':>8}")
    print(head)
    print("-" * len(head))
    for r in results:
        n = r["segments"]
        print(f"{r['mode']:<14} {r['captions_per_s']:>10.3f} {r['tokens_per_s']:>9.1f} "
              f"{r['tokens_per_caption']:>11.0f} {r['valid_as_is'] / n:>11.0%} "
              f"{r['needed_repair'] / n:>13.0%} {r['repaired_valid'] / n:>15.0%} "
              f"{r['dropped'] / n:>8.0%}")


if __name__ == "__main__":
    main()
