"""One label-quality table (`make bench-labels`): how good are the transcripts a night keeps?

    .venv/bin/python -m bench.labels_bench [--rows FILE] [--thresholds 0.6,0.7,0.8]
                                           [--snr-gates none,10,12,15,18,20]

Sets, from real recordings with references (bench/asr_eval.py): clean English sentences
(LibriVox, the CMU cards, pocketsphinx's goforward; 11 clips; see english_clips for why not Tux
Paint's English descriptions), Tux Paint's spoken stamp names (62 clips of one word,
0.5-1.5 s: under segment.min_speech_s, so a night would keep them as too_short; here they stand
for short prompts), the sentences under white noise (5 dB; and 10, 15, 20 dB for the SNR gate's
curve) and under music (0 dB), non-English speech (French/Spanish descriptions) and non-speech
(sound effects). Each clip is one speech segment (this measures the SNR gate, ASR, agreement
and the hallucination rules, not VAD). No set holds 40 clean English sentences: no more real
English speech with verbatim references ships in the packages this machine can reach.

Every ASR system transcribes every clip once (as the ASR stage runs them: Whisper base detects
the language, English-only systems vote only on English); then each *selection rule* is applied
to the same hypotheses: the rule before schema 7 (1 - mean pairwise error, threshold 0.6) and
the support rule (two model families within WER 0.4) with several sets of systems, and the
default (the support rule after the measures stage's SNR gate, measures.min_speech_snr_db, on
the snr_db the measures stage computes). Printed:
- per system and set: corpus WER and the real-time factor of the system (wall s / audio s);
- per rule and set: kept share, WER of the kept transcripts, WER of all selected transcripts,
  and how many kept segments carry a dissenting system;
- agreement.threshold (`--thresholds`) and measures.min_speech_snr_db (`--snr-gates`) at other
  values, chosen on the even clips of each set and reported on the odd ones;
- the measures stage's time on the clean set, with WORLD pitch and with the librosa pYIN it
  replaced.
agreement.threshold (0.6) predates this bench. The phrase-loop hallucination rule was written
while looking at Moonshine's loops on these clips. The SNR gate (15 dB) is the lowest of the
`--snr-gates` values that, on the even clips, keeps nothing of the 5 and 10 dB sets (whose
transcripts are kept at WER ~0.10 without it) and all of the clean set. `--rows` keeps each
set's transcriptions; a set not in the file is transcribed and added.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa

from bench.asr_eval import (RATE, ROOT, Clip, _description_text, _mix, as_segments, english_clips,
                            mixed_set, wer_of)
from infra.demo_corpus import TUXPAINT, read_audio

ALL_SYSTEMS = [
    {"name": "whisper-base", "model": "asr/whisper-base", "cpu_threads": 2},
    {"name": "whisper-tiny-en", "model": "asr/whisper-tiny-en", "cpu_threads": 2},
    {"name": "pocketsphinx-en", "model": "asr/pocketsphinx-en-us"},
    {"name": "moonshine-base-en", "model": "asr/moonshine-base-en"},
]
DEFAULT_SYSTEMS = ["whisper-base", "whisper-tiny-en", "moonshine-base-en"]  # configs/local.yaml
# (label, rule, systems whose hypotheses it sees, measures.min_speech_snr_db applied first)
RULES = [
    ("before: mean pairwise, base+tiny+sphinx", "mean",
     ["whisper-base", "whisper-tiny-en", "pocketsphinx-en"], False),
    ("support, base+tiny+sphinx", "support",
     ["whisper-base", "whisper-tiny-en", "pocketsphinx-en"], False),
    ("support, base+tiny+moonshine", "support", DEFAULT_SYSTEMS, False),
    ("support, base+moonshine", "support", ["whisper-base", "moonshine-base-en"], False),
    ("support, all four", "support",
     ["whisper-base", "whisper-tiny-en", "pocketsphinx-en", "moonshine-base-en"], False),
    ("default: base+tiny+moonshine + SNR gate", "support", DEFAULT_SYSTEMS, True),
]
SETS = ("clean", "names", "noise 5 dB", "music 0 dB", "non_english", "non_speech",
        "noise 10 dB", "noise 15 dB", "noise 20 dB")
ENGLISH = ("clean", "names", "noise 5 dB", "noise 10 dB", "noise 15 dB", "noise 20 dB",
           "music 0 dB")
SNR_SETS = ("clean", "noise 5 dB", "noise 10 dB", "noise 15 dB", "noise 20 dB", "music 0 dB")


def stamp_names(limit: int) -> list[Clip]:
    """Tux Paint's English spoken stamp names ("Frog.", 0.5-1.5 s). The text files say "A frog."
    but the recordings name the stamp without the article (every system hears it so), so a
    leading "A"/"An" is not part of the reference."""
    clips = []
    for ogg in sorted(TUXPAINT.rglob("*_desc.ogg"))[:limit]:
        text = _description_text(ogg, "en")
        if text and len(text.split()) == 2:
            words = text.split()
            if words[0].lower() in ("a", "an"):
                clips.append(Clip(ogg.stem, "names", read_audio(ogg), words[1], "en"))
    return clips


def label_sets(names: int, per_condition: int, seed: int = 5) -> dict[str, list[Clip]]:
    clean = english_clips()          # sentences: LibriVox, CMU cards, goforward
    rng = np.random.default_rng(seed)
    music = [read_audio(TUXPAINT / p) for p in ("hobbies/music/string/violin.ogg",
                                                "hobbies/music/percussion/drumkit.ogg",
                                                "hobbies/music/string/cello.ogg")]
    mixed = mixed_set(per_condition, seed)
    sets = {
        "clean": clean,
        "names": stamp_names(names),
        "noise 5 dB": [Clip(f"{c.name}+noise", "noise",
                            _mix(c.audio, rng.standard_normal(c.audio.size).astype(np.float32),
                                 5.0), c.reference, "en") for c in clean],
        "music 0 dB": [Clip(f"{c.name}+music", "music", _mix(c.audio, music[i % 3], 0.0),
                            c.reference, "en") for i, c in enumerate(clean)],
        "non_english": [c for c in mixed if c.condition == "non_english"],
        "non_speech": [c for c in mixed if c.condition == "non_speech"],
    }
    for snr in (10, 15, 20):      # the SNR gate's curve; its own noise, the sets above unchanged
        noise = np.random.default_rng(seed + snr)
        sets[f"noise {snr} dB"] = [
            Clip(f"{c.name}+noise{snr}", "noise",
                 _mix(c.audio, noise.standard_normal(c.audio.size).astype(np.float32), snr),
                 c.reference, "en") for c in clean]
    return sets


def transcribe_all(cfg, clips: list[Clip]) -> tuple[list[dict], dict[str, float]]:
    """The ASR stage with every system over all clips; wall seconds spent in each system."""
    from operators.asr import AsrStage

    stage = AsrStage(cfg.asr, cfg.models, cfg.model_cache_dir)
    stage.setup()
    stage._ready = True
    spent: dict[str, float] = {}
    for timed in stage.systems:
        inner = timed.system.transcribe

        def timer(audios, languages, _inner=inner, _name=timed.system.name):
            t0 = time.perf_counter()
            try:
                return _inner(audios, languages)
            finally:
                spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t0
        timed.system.transcribe = timer
    rows = stage(as_segments(clips)).drop_columns(["audio"]).to_pylist()
    return rows, spent


def mean_pairwise(row: dict, threshold: float) -> tuple[int, str | None]:
    """The rule before schema 7: the hypothesis closest to all others, dropped when 1 - the mean
    pairwise WER is under the threshold. (selected index, drop reason)."""
    from operators.transcripts import normalise, symmetric_error

    hyps = row["asr_hypotheses"]
    if len(hyps) < 2:
        return 0, "unverified"
    norm = [normalise(h["text"], row["language"] or "en") for h in hyps]
    n = len(hyps)
    d = [[symmetric_error(norm[i], norm[j], False) for j in range(n)] for i in range(n)]
    selected = min(range(n), key=lambda i: (sum(d[i]), i))
    mean = sum(d[i][j] for i in range(n) for j in range(i + 1, n)) / (n * (n - 1) / 2)
    return selected, ("asr_disagreement" if 1.0 - mean < threshold else None)


def apply_rule(cfg, rows: list[dict], rule: str, systems: list[str],
               snr_gate: bool = False) -> list[dict]:
    """Each row with `transcript` and `drop_reason` as the rule (and the hallucination rules
    after it) decide from the hypotheses of `systems` alone; with `snr_gate`, speech under
    measures.min_speech_snr_db is dropped first, as the measures stage does."""
    from operators.agreement import AgreementStage
    from operators.hallucination import HallucinationStage, check
    from operators.measures import MeasuresStage, low_snr_speech
    from schemas import reasons
    from operators.transcripts import normalise

    subset = []
    for row in rows:
        hyps = [h for h in (row["asr_hypotheses"] or []) if h["system"] in systems]
        noisy = low_snr_speech(row, cfg.measures.min_speech_snr_db) if snr_gate else None
        subset.append({**row, "asr_hypotheses": hyps or None, "asr_voters": None,
                       "drop_reason": reasons.LOW_SNR_SPEECH if noisy else None,
                       "drop_stage": MeasuresStage.name if noisy else None,
                       "drop_detail": noisy})
    if rule == "support":
        agreed = AgreementStage(**AgreementStage.config_kwargs(cfg, None))(
            pa.Table.from_pylist(subset))
        return HallucinationStage(cfg.hallucination)(agreed).to_pylist()
    out = []
    for row in subset:
        if not row["asr_hypotheses"]:
            out.append({**row, "transcript": None, "drop_reason": "no_transcript"})
            continue
        if row["drop_reason"]:
            out.append({**row, "transcript": None})
            continue
        selected, reason = mean_pairwise(row, cfg.agreement.threshold)
        text = row["asr_hypotheses"][selected]["text"]
        flags = check(normalise(text), row["duration_s"], row["speech_prob_mean"], "words",
                      cfg.hallucination)
        out.append({**row, "transcript": text,
                    "drop_reason": reason or (flags[0][0] if flags else None)})
    return out


def summarise(clips: list[Clip], rows: list[dict]) -> dict:
    kept = [(c, r) for c, r in zip(clips, rows) if r["drop_reason"] is None and r["transcript"]]

    def wer(pairs):
        if not pairs:
            return float("nan")
        return wer_of([c.reference for c, _ in pairs], [r["transcript"] or "" for _, r in pairs],
                      [c.language or "en" for c, _ in pairs])
    return {"n": len(clips), "kept": len(kept), "kept_share": len(kept) / max(1, len(clips)),
            "kept_wer": wer(kept), "selected_wer": wer(list(zip(clips, rows))),
            "with_dissent": sum(1 for _, r in kept if r.get("asr_dissent"))}


def split_sweep(title: str, column: str, variants: list[tuple[object, object]], sets, by_set,
                set_names: tuple[str, ...], snr_gate: bool) -> dict:
    """The support rule with the default systems under each (value, config) of `variants`, on
    the even clips of each set (to choose on) and the odd ones (to report): a value is never
    judged on the clips it was chosen on. Prints a table; returns {value: {set: [even, odd]}}."""
    print(f"\n{title}, support rule with {'+'.join(DEFAULT_SYSTEMS)}: kept share / WER of kept, "
          f"on the even clips (choose) | the odd clips (report)")
    print(f"{column:<10}" + "".join(f"{name:>26}" for name in set_names))
    result = {}
    for value, tuned in variants:
        cells, out = [], {}
        for name in set_names:
            halves = [summarise(sets[name][parity::2],
                                apply_rule(tuned, by_set[name][parity::2], "support",
                                           DEFAULT_SYSTEMS, snr_gate))
                      for parity in (0, 1)]
            out[name] = halves
            cells.append(" | ".join(f"{h['kept_share']:4.0%} {h['kept_wer']:5.3f}"
                                    for h in halves))
        result[str(value)] = out
        print(f"{str(value):<10}" + "".join(f"{c:>26}" for c in cells))
    return result


def measures_time(clips: list[Clip]) -> dict[str, float]:
    """Seconds of the measures stage over the clips, with WORLD pitch and with librosa pYIN."""
    import operators.measures as measures
    from operators.measures import MeasuresStage
    from schemas.config import MeasuresConfig

    def pyin_stats(audio, fmin, fmax):
        import librosa

        if audio.size < 1024:
            return None, None, None
        f0, voiced, _ = librosa.pyin(audio, fmin=fmin, fmax=fmax, sr=RATE, frame_length=1024,
                                     hop_length=512)
        values = f0[voiced & np.isfinite(f0)]
        if values.size < 3:
            return None, None, float(np.mean(voiced))
        return float(np.mean(values)), float(np.std(values)), float(np.mean(voiced))

    table = as_segments(clips)
    out = {}
    world = measures.pitch_stats
    for name, fn in (("WORLD", world), ("pYIN", pyin_stats)):
        measures.pitch_stats = fn
        try:
            stage = MeasuresStage(MeasuresConfig())
            stage(table.slice(0, 1))                  # warm-up: imports, numba JIT for pYIN
            t0 = time.perf_counter()
            stage(table)
            out[name] = time.perf_counter() - t0
        finally:
            measures.pitch_stats = world
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.labels_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", type=int, default=100,
                        help="at most this many spoken stamp names (the names set)")
    parser.add_argument("--per-condition", type=int, default=20,
                        help="clips in each of the noise, music, non-English, non-speech sets")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--rows", help="keep the transcriptions in this file and reuse them")
    parser.add_argument("--thresholds", default="0.6,0.7,0.8",
                        help="agreement.threshold values to compare, on two halves of each set")
    parser.add_argument("--snr-gates", default="none,10,12,15,18,20",
                        help="measures.min_speech_snr_db values to compare (none: no gate)")
    args = parser.parse_args(argv)
    from pipeline.config import load_config

    cfg = load_config(ROOT / "configs" / "local.yaml",
                      ["asr.systems=" + json.dumps(ALL_SYSTEMS)])
    sets = label_sets(args.names, args.per_condition)
    clips = [c for name in SETS for c in sets[name]]
    audio_s = {name: sum(c.audio.size for c in sets[name]) / RATE for name in SETS}
    print("sets: " + ", ".join(f"{name} {len(sets[name])} clips ({audio_s[name]:.0f} s)"
                                 for name in SETS), flush=True)
    by_set, spent_by_set = {}, {}   # set -> rows; set -> {system: wall s spent on it}
    if args.rows and os.path.exists(args.rows):
        with open(args.rows, "rb") as f:                 # the same sets, transcribed before
            by_set, spent_by_set = pickle.load(f)
    # a set whose clips changed since the file was written is transcribed again
    missing = [name for name in SETS if [r["source_uri"] for r in by_set.get(name, [])]
               != [f"eval://{c.name}" for c in sets[name]]]
    for name in missing:                                 # one set at a time: its own timings
        by_set[name], spent_by_set[name] = transcribe_all(cfg, sets[name])
    if missing and args.rows:
        with open(args.rows, "wb") as f:
            pickle.dump((by_set, spent_by_set), f)
    spent: dict[str, float] = {}
    for name in SETS:
        for system, seconds in spent_by_set.get(name, {}).items():
            spent[system] = spent.get(system, 0.0) + seconds
    from operators.measures import snr_db
    for name in SETS:                     # what the measures stage would have measured
        for clip, row in zip(sets[name], by_set[name]):
            row["snr_db"] = snr_db(clip.audio)
    rows = [r for name in SETS for r in by_set[name]]

    result = {"systems": {}, "rules": {}, "measures_s": None}
    print(f"\n{'system':<20}" + "".join(f"{name:>14}" for name in ENGLISH)
          + f"{'RTF (wall)':>12}")
    for system in [s["name"] for s in ALL_SYSTEMS]:
        wers = {}
        for name in ENGLISH:
            hyps = [next((h["text"] for h in (r["asr_hypotheses"] or [])
                          if h["system"] == system), "") for r in by_set[name]]
            wers[name] = wer_of([c.reference for c in sets[name]], hyps, ["en"] * len(hyps))
        voiced_s = sum(c.audio.size / RATE for c, r in zip(clips, rows)
                       if system in (r["asr_voters"] or []))
        rtf = spent.get(system, 0.0) / max(voiced_s, 1e-9)
        result["systems"][system] = {"wer": wers, "rtf": rtf}
        print(f"{system:<20}" + "".join(f"{wers[n]:>14.3f}" for n in ENGLISH) + f"{rtf:>12.3f}")

    print("\nkept share / WER of kept / WER of all selected / kept with a dissenting system")
    print(f"{'rule':<42}" + "".join(f"{name:>22}" for name in SETS))
    for label, rule, systems, gate in RULES:
        decided = {}
        for name in SETS:
            decided[name] = summarise(sets[name],
                                      apply_rule(cfg, by_set[name], rule, systems, gate))
        result["rules"][label] = decided
        cells = []
        for name in SETS:
            d = decided[name]
            cells.append(f"{d['kept_share']:4.0%} {d['kept_wer']:5.3f} {d['selected_wer']:5.3f}"
                         f" {d['with_dissent']:>2}")
        print(f"{label:<42}" + "".join(f"{c:>22}" for c in cells))

    if args.thresholds:
        thresholds = [float(t) for t in args.thresholds.split(",")]
        result["sweep"] = split_sweep(
            "agreement.threshold", "threshold",
            [(t, replace(cfg, agreement=replace(cfg.agreement, threshold=t)))
             for t in thresholds], sets, by_set, ENGLISH, snr_gate=False)
    if args.snr_gates:
        gates = [None if g == "none" else float(g) for g in args.snr_gates.split(",")]
        result["snr_sweep"] = split_sweep(
            "measures.min_speech_snr_db", "gate dB",
            [(g, replace(cfg, measures=replace(cfg.measures, min_speech_snr_db=g)))
             for g in gates], sets, by_set, SNR_SETS, snr_gate=True)
    result["measures_s"] = measures_time(sets["clean"])
    m = result["measures_s"]
    print(f"\nmeasures stage on the clean set ({audio_s['clean']:.0f} s of speech): WORLD pitch "
          f"{m['WORLD']:.2f} s, librosa pYIN {m['pYIN']:.2f} s ({m['pYIN'] / m['WORLD']:.1f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
