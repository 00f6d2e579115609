"""Top-1 / top-5 accuracy of the event tagger on recorded sound effects, against the classes
each file is named for (infra/sound_references.py). Prints a table, one row per file.

    .venv/bin/python -m bench.events_eval [--config configs/local.yaml] [--model events/yamnet]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from infra.demo_corpus import TUXPAINT, read_audio
from infra.sound_references import ROOTS, SOUND_LABELS


@dataclass
class Outcome:
    path: str
    top5: list[str]
    top1_ok: bool
    top5_ok: bool
    specific_ok: bool    # the first label that is not a broad root (ROOTS) is accepted


def clip_scores(tagger, audio: np.ndarray) -> np.ndarray:
    return tagger.frame_scores(audio).mean(axis=0)


def evaluate(tagger, class_names: list[str] | None = None) -> list[Outcome]:
    """`class_names` replaces the tagger's names (e.g. a deliberately broken label map)."""
    names = class_names or [c.name for c in tagger.classes]
    out = []
    for path, accepted in sorted(SOUND_LABELS.items()):
        mean = clip_scores(tagger, read_audio(TUXPAINT / path))
        ranked = [names[i] for i in np.argsort(-mean, kind="stable")]
        top = ranked[:5]
        specific = next(n for n in ranked if n not in ROOTS)
        out.append(Outcome(path, top, top[0] in accepted, bool(accepted & set(top)),
                           specific in accepted))
    return out


def accuracy(outcomes: list[Outcome]) -> tuple[float, float, float]:
    """(top-1, top-5, top-1 specific) over the files."""
    n = len(outcomes)
    return (sum(o.top1_ok for o in outcomes) / n, sum(o.top5_ok for o in outcomes) / n,
            sum(o.specific_ok for o in outcomes) / n)


def load_tagger(config: str, model: str | None):
    from model_serving.event_tagger import load_event_tagger
    from model_serving.registry import ModelRegistry
    from pipeline.config import load_config

    cfg = load_config(config)
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir)
    return load_event_tagger(registry.resolve(model or cfg.events.model),
                             work_dir=registry.cache_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--model", default=None, help="registry entry (default: events.model)")
    args = parser.parse_args(argv)
    tagger = load_tagger(args.config, args.model)
    t0 = time.perf_counter()
    outcomes = evaluate(tagger)
    elapsed = time.perf_counter() - t0
    mark = lambda ok: "ok" if ok else "-"  # noqa: E731
    print(f"{'file':48s} {'top1':>4s} {'spec':>4s} {'top5':>4s}  top-5 labels")
    for o in outcomes:
        print(f"{o.path:48s} {mark(o.top1_ok):>4s} {mark(o.specific_ok):>4s} "
              f"{mark(o.top5_ok):>4s}  {' | '.join(o.top5)}")
    top1, top5, specific = accuracy(outcomes)
    print(f"\n{tagger.model_label}: {len(outcomes)} files, top-1 {top1:.1%}, top-5 {top5:.1%}, "
          f"top-1 below the broad roots {specific:.1%} ({elapsed:.1f} s incl. decoding)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
