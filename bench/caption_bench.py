"""Caption benchmark: the embedded server and model, with and without constrained decoding, on
an idle machine and beside a competing CPU load.

Features come from real material: LibriVox and CMU transcripts (pocketsphinx-testdata) as speech
segments and tuxpaint sound effects named for what they are as sound segments. Each mode runs
the real caption stage (one request at a time, as the embedded server serves them) and reports
captions/s, generated tokens/s, and how the replies fared: valid without repair, repaired into a
valid caption, or dropped.

The load modes start one busy process per core (as the Ray workers of a run are) and caption
again: once with the server as the pipeline starts it (OMP_WAIT_POLICY=PASSIVE) and once with
llama.cpp's default spin-waiting OpenMP threads (ACTIVE), on fewer segments since it is slow.

    .venv/bin/python -m bench.caption_bench [--segments 16] [--active-segments 4]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
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


def run_mode(url: str, cfg, rows: list[dict], constrained: bool, label: str) -> dict:
    stage = CaptionStage(replace(cfg.caption, constrained=constrained, concurrency=1),
                         endpoint_url=url, model_label="bench")
    t0 = time.monotonic()
    out = stage(pa.Table.from_pylist(rows)).to_pylist()
    wall = time.monotonic() - t0
    tokens = sum(r["caption_completion_tokens"] or 0 for r in out)
    answered = [r for r in out if r["caption_raw"] is not None]
    return {
        "mode": label,
        "segments": len(out), "wall_s": wall, "captions_per_s": len(out) / wall,
        "tokens_per_s": tokens / wall, "tokens_per_caption": tokens / max(1, len(out)),
        "valid_as_is": sum(1 for r in answered
                           if not r["caption_repaired"] and r["drop_reason"] is None),
        "needed_repair": sum(1 for r in answered if r["caption_repaired"]),
        "repaired_valid": sum(1 for r in answered
                              if r["caption_repaired"] and r["drop_reason"] is None),
        "dropped": sum(1 for r in out if r["drop_reason"] is not None),
    }


def _spin() -> None:
    while True:
        pass


class CpuLoad:
    """One busy process per core while inside the block."""

    def __init__(self, workers: int):
        self.workers = workers
        self.procs: list[multiprocessing.Process] = []

    def __enter__(self) -> "CpuLoad":
        self.procs = [multiprocessing.Process(target=_spin, daemon=True)
                      for _ in range(self.workers)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
            p.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--active-segments", type=int, default=4,
                        help="segments for the spin-waiting (ACTIVE) baseline under load")
    parser.add_argument("--load-workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--config", default="configs/local.yaml")
    args = parser.parse_args()
    cfg = load_config(args.config)
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir)
    resolved = registry.resolve(cfg.caption.local_server.model)
    gguf = str(resolved.only_file(".gguf", "GGUF model"))
    rows = feature_rows(args.segments)
    server_args = dict(alias=cfg.caption.endpoint.model, threads=cfg.caption.local_server.threads)
    with LocalLlmServer(gguf, **server_args) as server:
        results = [run_mode(server.url, cfg, rows, True, "constrained, idle"),
                   run_mode(server.url, cfg, rows, False, "unconstrained, idle")]
        with CpuLoad(args.load_workers):
            results.append(run_mode(server.url, cfg, rows, True, "constrained, load, PASSIVE"))
    with LocalLlmServer(gguf, env={"OMP_WAIT_POLICY": "ACTIVE"}, **server_args) as server:
        with CpuLoad(args.load_workers):
            results.append(run_mode(server.url, cfg, rows[:args.active_segments], True,
                                    "constrained, load, ACTIVE"))
    print(f"\ncaption benchmark: {resolved.label}, llama.cpp server, "
          f"{cfg.caption.local_server.threads} threads, greedy, max_tokens "
          f"{cfg.caption.max_tokens}, {len(rows)} segments (speech and sound, real texts); "
          f"load = {args.load_workers} busy processes on {os.cpu_count()} cores")
    head = (f"{'mode':<28} {'segs':>4} {'captions/s':>10} {'tokens/s':>9} {'tok/caption':>11} "
            f"{'valid as is':>11} {'needed repair':>13} {'repaired->valid':>15} {'dropped':>8}")
    print(head)
    print("-" * len(head))
    for r in results:
        n = r["segments"]
        print(f"{r['mode']:<28} {n:>4} {r['captions_per_s']:>10.3f} {r['tokens_per_s']:>9.1f} "
              f"{r['tokens_per_caption']:>11.0f} {r['valid_as_is'] / n:>11.0%} "
              f"{r['needed_repair'] / n:>13.0%} {r['repaired_valid'] / n:>15.0%} "
              f"{r['dropped'] / n:>8.0%}")
    idle, passive, active = results[0], results[2], results[3]
    print(f"\ntokens/s under load: PASSIVE {passive['tokens_per_s']:.1f} "
          f"({passive['tokens_per_s'] / idle['tokens_per_s']:.0%} of idle), ACTIVE (spin-wait) "
          f"{active['tokens_per_s']:.1f} ({active['tokens_per_s'] / idle['tokens_per_s']:.0%})")


if __name__ == "__main__":
    main()
