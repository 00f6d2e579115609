"""ASR evaluation: WER of each system and of the selected transcript on English speech with
references, and whether the agreement score separates good transcripts from bad ones on a mixed
set (clean speech, the same speech under noise or music at low SNR, non-English speech, sounds).

    .venv/bin/python -m bench.asr_eval           # prints the tables (a few minutes on 2 cores)

Each clip is one segment: this measures ASR + agreement + hallucination rules, not VAD.

    .venv/bin/python -m bench.asr_eval --per-system \
        --systems whisper-base,whisper-tiny-en,pocketsphinx-en,moonshine=asr/moonshine-base-en

measures each system alone instead, on one core (cpu_threads 1), on the English clips clean,
under white noise and under music (`--noise-snr`, `--music-snr`): corpus WER, real-time factor
(wall and process CPU seconds per audio second) and how many texts the hallucination rules flag.
`name=registry-entry` runs a system the config does not list.
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from infra.demo_corpus import (LIBRIVOX, POCKETSPHINX, TUXPAINT, cards_references,
                               librivox_references, read_audio)

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000


@dataclass
class Clip:
    name: str
    condition: str           # clean | noise | music | non_english | non_speech
    audio: np.ndarray
    reference: str | None    # None: no words should be there (non-speech)
    language: str


def _mix(speech: np.ndarray, other: np.ndarray, snr_db: float) -> np.ndarray:
    other = np.resize(other, speech.size)  # loop or cut the noise/music to the speech length
    p_s = float(np.mean(speech ** 2)) + 1e-12
    p_o = float(np.mean(other ** 2)) + 1e-12
    mixed = speech + other * np.sqrt(p_s / (p_o * 10 ** (snr_db / 10)))
    return (mixed / max(1.0, float(np.abs(mixed).max()))).astype(np.float32)


def _description_text(ogg: Path, language: str) -> str | None:
    txt = ogg.with_name(ogg.name.split("_desc")[0] + ".txt")
    if not txt.exists():
        return None
    lines = txt.read_text(errors="replace").splitlines()
    if language == "en":
        return lines[0].strip() if lines else None
    for line in lines:
        if line.startswith(f"{language}.utf8="):
            return line.split("=", 1)[1].strip()
    return None


def english_clips() -> list[Clip]:
    """Real English speech with verbatim references: the LibriVox reader (5 sentences) and the
    CMU cards (5), and goforward.raw of pocketsphinx-testdata, whose reference is its grammar
    (goforward.gram: "go forward ten meters"). Not Tux Paint's English descriptions: their
    recordings say the stamp's name ("hen", "wild boar") while the text says "A brown hen.",
    "Two wild boars." (two recognisers of different families heard exactly the name), so the
    text is a caption, not a transcript, and would count as errors words nobody said."""
    clips = []
    refs = librivox_references()
    for wav in sorted(LIBRIVOX.glob("*.wav")):
        clips.append(Clip(wav.stem, "clean", read_audio(wav), refs[wav.stem], "en"))
    cards = cards_references()
    for wav in sorted((POCKETSPHINX / "cards").glob("*.wav")):
        clips.append(Clip(f"cards-{wav.stem}", "clean", read_audio(wav), cards[wav.stem], "en"))
    raw = POCKETSPHINX / "goforward.raw"     # 16 kHz mono s16le, no header
    if raw.exists():
        audio = np.fromfile(raw, "<i2").astype(np.float32) / 32768.0
        clips.append(Clip("goforward", "clean", audio, "go forward ten meters", "en"))
    return clips


def mixed_set(per_condition: int = 10, seed: int = 5) -> list[Clip]:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    english = english_clips()
    speech = [c for c in english if len(c.reference.split()) >= 4]
    music = [read_audio(TUXPAINT / p) for p in ("hobbies/music/string/violin.ogg",
                                                "hobbies/music/percussion/drumkit.ogg",
                                                "hobbies/music/string/cello.ogg")]
    clips = english[:per_condition]
    for c in pick.sample(speech, min(per_condition, len(speech))):
        noise = rng.standard_normal(c.audio.size).astype(np.float32)
        clips.append(Clip(f"{c.name}+noise", "noise", _mix(c.audio, noise, -8.0), c.reference, "en"))
    for i, c in enumerate(pick.sample(speech, min(per_condition, len(speech)))):
        clips.append(Clip(f"{c.name}+music", "music", _mix(c.audio, music[i % 3], -8.0),
                          c.reference, "en"))
    foreign = []  # (path, text, language); only the sampled ones are decoded (~1200 here)
    for lang in ("fr", "es"):
        for ogg in sorted(TUXPAINT.rglob(f"*_desc_{lang}.ogg")):
            text = _description_text(ogg, lang)
            if text and len(text.split()) >= 3:
                foreign.append((ogg, text, lang))
    clips += [Clip(ogg.stem, "non_english", read_audio(ogg), text, lang)
              for ogg, text, lang in pick.sample(foreign, min(per_condition, len(foreign)))]
    effects = [p for p in sorted(TUXPAINT.rglob("*.ogg"))
               if "_desc" not in p.name and "/symbols/" not in str(p)]
    for p in pick.sample(effects, min(per_condition, len(effects))):
        clips.append(Clip(p.stem, "non_speech", read_audio(p), None, ""))
    return clips


def as_segments(clips: list[Clip]) -> pa.Table:
    """Rows shaped like the VAD stage's output: one speech segment per clip."""
    from operators.audio import rms_dbfs, to_bytes
    from operators.base import rows_to_table
    from pipeline.dag import STAGES
    from schemas.tables import LISTING_SCHEMA

    schema = LISTING_SCHEMA
    for stage in STAGES[:2]:  # the columns decode and VAD would have added
        schema = stage.output_schema(schema)
    rows = [{
        "run_id": "eval", "recording_id": f"rec-{i:04d}", "source_uri": f"eval://{c.name}",
        "source_etag": "-", "source_bytes": 0, "segment_id": f"rec-{i:04d}-00000",
        "segment_index": 0, "content_type": "speech", "start_s": 0.0,
        "end_s": c.audio.size / RATE, "duration_s": c.audio.size / RATE, "start_sample": 0,
        "end_sample": c.audio.size, "speech_prob_mean": 0.9, "rms_dbfs": rms_dbfs(c.audio),
        "audio": to_bytes(c.audio),
    } for i, c in enumerate(clips)]
    return rows_to_table(rows, schema)


def run_chain(cfg, segments: pa.Table) -> list[dict]:
    from operators.agreement import AgreementStage
    from operators.asr import AsrStage
    from operators.hallucination import HallucinationStage

    out = AsrStage(cfg.asr, cfg.models, cfg.model_cache_dir)(segments)
    out = AgreementStage(cfg.agreement)(out)
    return HallucinationStage(cfg.hallucination)(out).drop_columns(["audio"]).to_pylist()


def wer_of(references: list[str | None], hypotheses: list[str], languages: list[str]) -> float:
    """Corpus WER; for clips with no reference (non-speech) every hypothesised word is an
    insertion, counted against one reference word so silence-transcribed-as-speech costs."""
    import jiwer

    from operators.transcripts import normalise

    errors = words = 0
    for ref, hyp, lang in zip(references, hypotheses, languages):
        hyp_n = normalise(hyp, lang or "en")
        if ref is None:
            errors += len(hyp_n.split())
            words += 1
            continue
        ref_n = normalise(ref, lang or "en")
        out = jiwer.process_words(ref_n, hyp_n) if hyp_n else None
        errors += (out.substitutions + out.deletions + out.insertions) if out else len(ref_n.split())
        words += len(ref_n.split())
    return errors / max(1, words)


def report(cfg, english: list[Clip], mixed: list[Clip]) -> dict:
    systems = [s.name for s in cfg.asr.systems]
    # One pass over both sets: the models load once, and a clip in both (the clean English
    # ones, when `english` is taken from `mixed`) is transcribed once. Rows do not depend on
    # what else is in the batch (tests/test_asr.py checks batched == one by one).
    in_mixed = {id(c) for c in mixed}
    union = mixed + [c for c in english if id(c) not in in_mixed]
    by_clip = {id(c): r for c, r in zip(union, run_chain(cfg, as_segments(union)))}
    rows = [by_clip[id(c)] for c in english]
    table = {}
    refs = [c.reference for c in english]
    langs = ["en"] * len(english)
    for system in systems:
        hyps = [next((h["text"] for h in (r["asr_hypotheses"] or []) if h["system"] == system), "")
                for r in rows]
        table[system] = wer_of(refs, hyps, langs)
    table["selected"] = wer_of(refs, [r["transcript"] or "" for r in rows], langs)

    mixed_rows = [by_clip[id(c)] for c in mixed]
    kept = [(c, r) for c, r in zip(mixed, mixed_rows) if r["drop_reason"] is None]
    dropped = [(c, r) for c, r in zip(mixed, mixed_rows) if r["drop_reason"] is not None]

    def wer_pairs(pairs):
        return wer_of([c.reference for c, _ in pairs], [r["transcript"] or "" for _, r in pairs],
                      [c.language for c, _ in pairs]) if pairs else float("nan")

    by_condition = {}
    for cond in ("clean", "noise", "music", "non_english", "non_speech"):
        pairs = [(c, r) for c, r in zip(mixed, mixed_rows) if c.condition == cond]
        by_condition[cond] = {
            "n": len(pairs), "kept": sum(1 for _, r in pairs if r["drop_reason"] is None),
            "wer": wer_pairs(pairs),
            "mean_agreement": float(np.mean([r["asr_agreement"] for _, r in pairs
                                             if r["asr_agreement"] is not None] or [np.nan])),
            "drop_reasons": sorted({r["drop_reason"] for _, r in pairs if r["drop_reason"]}),
        }
    return {"english_wer": table, "english_clips": len(english),
            "kept": {"n": len(kept), "wer": wer_pairs(kept)},
            "dropped": {"n": len(dropped), "wer": wer_pairs(dropped)},
            "by_condition": by_condition}


def conditions(noise_snr: list[float], music_snr: list[float], seed: int = 5
                ) -> dict[str, list[Clip]]:
    """The English clips clean, and every one of them again under white noise / music at each
    SNR (the same noise for a clip at every SNR, so conditions differ only in level)."""
    english = english_clips()
    music = [read_audio(TUXPAINT / p) for p in ("hobbies/music/string/violin.ogg",
                                                "hobbies/music/percussion/drumkit.ogg",
                                                "hobbies/music/string/cello.ogg")]
    noises = [np.random.default_rng(seed + i).standard_normal(c.audio.size).astype(np.float32)
              for i, c in enumerate(english)]
    sets = {"clean": english}
    for snr in noise_snr:
        sets[f"noise {snr:g} dB"] = [Clip(f"{c.name}+noise", "noise", _mix(c.audio, n, snr),
                                          c.reference, "en") for c, n in zip(english, noises)]
    for snr in music_snr:
        sets[f"music {snr:g} dB"] = [Clip(f"{c.name}+music", "music",
                                          _mix(c.audio, music[i % 3], snr), c.reference, "en")
                                     for i, c in enumerate(english)]
    return sets


def per_system(cfg, systems: list[str], sets: dict[str, list[Clip]]) -> list[dict]:
    """Each system alone on one core: WER, real-time factor and hallucination flags per set."""
    import resource
    import time

    from model_serving.asr_protocol import load_asr_system
    from model_serving.registry import ModelRegistry
    from operators.hallucination import check
    from operators.transcripts import normalise

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    registry = ModelRegistry(cfg.models, cfg.model_cache_dir)
    configured = {s.name: s for s in cfg.asr.systems}
    out = []
    for item in systems:
        name, _, entry = item.partition("=")
        spec = configured.get(name)
        if not entry and spec is None:
            raise SystemExit(f"error: system '{name}' is not in asr.systems; "
                             f"write it as {name}=<registry entry>")
        system = load_asr_system(name, registry.resolve(entry or spec.model),
                                 device="cpu", compute_type=spec.compute_type if spec else "int8",
                                 cpu_threads=1)
        system.transcribe([sets["clean"][0].audio], ["en"])  # warm up outside the timing
        for set_name, clips in sets.items():
            audios = [c.audio for c in clips]
            wall, cpu = time.perf_counter(), cpu_s()
            hyps = []
            for i in range(0, len(audios), cfg.asr.batch_size):
                batch = audios[i:i + cfg.asr.batch_size]
                hyps += [h.text for h in system.transcribe(batch, ["en"] * len(batch))]
            wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
            audio_s = sum(a.size for a in audios) / RATE
            flagged = sum(1 for c, h in zip(clips, hyps)
                          if any(r != "empty_transcript" for r, _ in
                                 check(normalise(h), c.audio.size / RATE, 0.9, "words",
                                       cfg.hallucination)))
            out.append({"system": name, "set": set_name, "clips": len(clips),
                        "audio_s": audio_s, "wer": wer_of([c.reference for c in clips], hyps,
                                                          ["en"] * len(clips)),
                        "rtf_wall": wall / audio_s, "rtf_cpu": cpu / audio_s,
                        "flagged": flagged, "texts": hyps})
            print(f"  {name:<18} {set_name:<13} WER {out[-1]['wer']:6.3f}  RTF wall "
                  f"{out[-1]['rtf_wall']:.3f} cpu {out[-1]['rtf_cpu']:.3f}  "
                  f"hallucination flags {flagged}/{len(clips)}", flush=True)
        del system
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asr_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-condition", type=int, default=10)
    parser.add_argument("--per-system", action="store_true",
                        help="each system alone, on one core, clean / noise / music")
    parser.add_argument("--systems", default=None,
                        help="comma-separated names from asr.systems, or name=registry-entry "
                             "(default: the config's systems)")
    parser.add_argument("--noise-snr", default="5,0", help="SNRs (dB) of the white-noise sets")
    parser.add_argument("--music-snr", default="-8", help="SNRs (dB) of the music-under sets")
    args = parser.parse_args(argv)
    from pipeline.config import load_config

    cfg = load_config(ROOT / "configs" / "local.yaml")
    if args.per_system:
        systems = (args.systems.split(",") if args.systems
                   else [s.name for s in cfg.asr.systems])
        snrs = [[float(x) for x in v.split(",") if x.strip()]
                for v in (args.noise_snr, args.music_snr)]
        sets = conditions(*snrs)
        print(f"\nEach system alone, on one core ({len(sets['clean'])} English clips per set, "
              f"{sum(c.audio.size for c in sets['clean']) / RATE:.0f} s)")
        per_system(cfg, systems, sets)
        return 0
    result = report(cfg, english_clips(), mixed_set(args.per_condition))
    print(f"\nEnglish speech with references ({result['english_clips']} clips: LibriVox, CMU "
          f"cards, spoken descriptions): corpus WER")
    for name, wer in result["english_wer"].items():
        print(f"  {name:<18} {wer:6.3f}")
    print("\nMixed set: does the agreement gate keep the good transcripts?")
    print(f"  {'condition':<12} {'n':>3} {'kept':>5} {'WER':>7} {'agreement':>10}  drop reasons")
    for cond, r in result["by_condition"].items():
        print(f"  {cond:<12} {r['n']:>3} {r['kept']:>5} {r['wer']:>7.3f} "
              f"{r['mean_agreement']:>10.3f}  {', '.join(r['drop_reasons'])}")
    print(f"  kept segments:    n={result['kept']['n']:<3} WER {result['kept']['wer']:.3f}")
    print(f"  dropped segments: n={result['dropped']['n']:<3} WER {result['dropped']['wer']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
