"""Pitch trackers on real speech: librosa pYIN (the old measures pitch) vs WORLD DIO + StoneMask
(operators/pitch.py). Per clip: mean f0, std, voiced fraction of each; the gross-error rate
(frames both call voiced whose f0 differs by more than 20%); voicing agreement; then speed on one
core (x real time after warm-up) and the first-call cost (import + JIT) of each. Prints a table.

    .venv/bin/python -m bench.pitch_bench [--frame-period-ms 32] [--write-reference PATH]
    .venv/bin/python -m bench.pitch_bench --telephone

`--telephone` instead compares, on the same speech and the codec2 voices filtered to a telephone
line's 300-3400 Hz: the wideband median f0 (WORLD) against WORLD on the filtered signal and on
its envelope (operators/pitch.py restore_fundamental), which the pipeline uses when the
fundamental band is missing.

Speech: the LibriVox clips, CMU cards and raw recordings of pocketsphinx-testdata, and spoken
descriptions of tuxpaint-stamps-default joined per language (~12 s each; es, el, ro, be are voices
around 200-250 Hz, most likely women). `voice` is `low` or `high` by pYIN's median f0 (165 Hz);
the groups below the table use it. `--write-reference` stores pYIN's values for the LibriVox clips
(tests/data/pitch_pyin_reference.json is made this way). Timing is one pass on a shared machine:
expect +-20% between runs.
"""
from __future__ import annotations

import os

# one core, one thread: set before numpy/numba/librosa load
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from infra.demo_corpus import LIBRIVOX, POCKETSPHINX, TUXPAINT, read_audio  # noqa: E402

RATE = 16000
FMIN, FMAX = 60.0, 500.0                      # MeasuresConfig defaults
PYIN_FRAME, PYIN_HOP = 1024, 512              # the old operators/measures.py settings
GROSS = 0.2
TUX_LANGS = ("es", "el", "ro", "be", "fr", "ru")
HIGH_HZ = 165.0
TUX_SECONDS = 12.0


def pyin_track(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The old pitch: (f0 Hz, 0 where unvoiced; frame times s)."""
    import librosa

    f0, voiced, _ = librosa.pyin(audio, fmin=FMIN, fmax=FMAX, sr=RATE,
                                 frame_length=PYIN_FRAME, hop_length=PYIN_HOP)
    f0 = np.where(voiced & np.isfinite(f0), f0, 0.0)
    return f0, np.arange(f0.size) * PYIN_HOP / RATE


def world_track(audio: np.ndarray, period_ms: float) -> tuple[np.ndarray, np.ndarray]:
    from operators.pitch import f0_track

    return f0_track(audio, FMIN, FMAX, period_ms)


def stats(f0: np.ndarray) -> tuple[float, float, float]:
    v = f0[f0 > 0]
    if v.size < 3:
        return float("nan"), float("nan"), float(v.size / max(f0.size, 1))
    return float(np.mean(v)), float(np.std(v)), float(v.size / f0.size)


def compare(ref: tuple, new: tuple) -> tuple[float, float, int]:
    """(gross-error rate, voicing agreement, frames both voiced) on the reference's frames; each
    reference frame takes the nearest new frame."""
    (f_ref, t_ref), (f_new, t_new) = ref, new
    idx = np.clip(np.searchsorted(t_new, t_ref), 1, t_new.size - 1)
    idx -= (t_ref - t_new[idx - 1]) < (t_new[idx] - t_ref)
    g = f_new[idx]
    both = (f_ref > 0) & (g > 0)
    gross = np.abs(g[both] / f_ref[both] - 1.0) > GROSS
    agree = float(np.mean((f_ref > 0) == (g > 0)))
    return float(np.mean(gross)) if both.any() else float("nan"), agree, int(both.sum())


def raw16(path: Path) -> np.ndarray:
    return np.fromfile(path, "<i2").astype(np.float32) / 32768.0


def corpus() -> list[tuple[str, np.ndarray]]:
    """(name, 16 kHz float32 audio)."""
    clips = [(f"librivox-{p.stem[-4:]}", read_audio(p)) for p in sorted(LIBRIVOX.glob("*.wav"))]
    clips += [(f"cmu-cards-{p.stem}", read_audio(p))
              for p in sorted((POCKETSPHINX / "cards").glob("*.wav"))]
    raws = sorted(POCKETSPHINX.glob("*.raw")) + [POCKETSPHINX / "tidigits" / "dhd.2934z.raw"]
    clips += [(f"ps-{p.stem}", raw16(p)) for p in raws]
    gap = np.zeros(RATE // 5, np.float32)
    for lang in TUX_LANGS:
        parts, total = [], 0
        for p in sorted(TUXPAINT.rglob(f"*_desc_{lang}.ogg")):
            if total >= TUX_SECONDS * RATE:
                break
            a = read_audio(p)
            parts += [a, gap]
            total += a.size + gap.size
        clips.append((f"tuxpaint-{lang}", np.concatenate(parts)))
    return clips


def first_call_cost(fn) -> tuple[float, float]:
    """(seconds of the first call incl. import and JIT, seconds of the next) on 1 s of audio."""
    t = np.arange(RATE) / RATE
    x = (0.3 * np.sin(2 * np.pi * 120 * t) + 0.1 * np.sin(2 * np.pi * 240 * t)).astype(np.float32)
    t0 = time.perf_counter()
    fn(x)
    t1 = time.perf_counter()
    fn(x)
    return t1 - t0, time.perf_counter() - t1


def telephone() -> int:
    """Median f0 of wideband speech vs the same through a telephone band, raw and restored."""
    from infra.demo_corpus import CODEC2, CODEC2_VOICES, telephone_band
    from operators.pitch import f0_track, fundamental_band_db, restore_fundamental

    def median(f0: np.ndarray) -> tuple[float, float]:
        v = f0[f0 > 0]
        return (float(np.median(v)) if v.size else float("nan")), v.size / max(f0.size, 1)

    clips = [(f"codec2-{n}", read_audio(CODEC2 / f"{n}.wav")) for n in CODEC2_VOICES
             if (CODEC2 / f"{n}.wav").exists()] + corpus()
    print(f"{'clip':<22}{'wideband':>10}{'vf':>6} |{'band dB':>8}{'filtered':>10}{'vf':>6} | "
          f"{'envelope':>9}{'vf':>6}{'|diff| %':>9}")
    diffs, raw_diffs = [], []
    for name, audio in clips:
        phone = telephone_band(audio)
        wide = median(f0_track(audio, FMIN, FMAX)[0])
        raw = median(f0_track(phone, FMIN, FMAX)[0])
        env = median(f0_track(restore_fundamental(phone), FMIN, FMAX)[0])
        diffs.append(abs(env[0] / wide[0] - 1))
        raw_diffs.append(abs(raw[0] / wide[0] - 1))
        print(f"{name:<22}{wide[0]:>10.0f}{wide[1]:>6.2f} |{fundamental_band_db(phone):>8.0f}"
              f"{raw[0]:>10.0f}{raw[1]:>6.2f} | {env[0]:>9.0f}{env[1]:>6.2f}"
              f"{100 * diffs[-1]:>9.1f}")
    diffs, raw_diffs = np.array(diffs), np.array(raw_diffs)
    print(f"{len(clips)} clips: median f0 within 10% of the wideband one: envelope "
          f"{int(np.sum(diffs <= 0.1))}, filtered signal {int(np.sum(raw_diffs <= 0.1))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame-period-ms", type=float, default=None,
                        help="WORLD frame period (default: operators.pitch's)")
    parser.add_argument("--write-reference", type=Path, default=None,
                        help="write pYIN's LibriVox values as JSON here")
    parser.add_argument("--telephone", action="store_true",
                        help="median f0 through a telephone band: filtered vs envelope")
    args = parser.parse_args(argv)
    if args.telephone:
        return telephone()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    # first calls before anything else loads librosa/numba/pyworld
    from operators.pitch import PITCH_FRAME_PERIOD_MS
    period = args.frame_period_ms or PITCH_FRAME_PERIOD_MS
    warm_world = first_call_cost(lambda a: world_track(a, period))
    warm_pyin = first_call_cost(pyin_track)

    clips = corpus()
    head = (f"{'clip':<22}{'voice':<6}{'sec':>5} | {'pYIN mean':>9}{'std':>6}{'vf':>6} | "
            f"{'WORLD mean':>10}{'std':>6}{'vf':>6} | {'gross%':>6}{'agree':>6}")
    print(f"WORLD DIO+StoneMask at {period:g} ms frames vs librosa pYIN (frame {PYIN_FRAME}, hop "
          f"{PYIN_HOP}), f0 {FMIN:g}-{FMAX:g} Hz, 16 kHz, one core")
    print(head)
    print("-" * len(head))
    spent = {"pyin": 0.0, "world": 0.0}
    rows, reference = [], {}
    for name, audio in clips:
        t0 = time.perf_counter()
        old = pyin_track(audio)
        t1 = time.perf_counter()
        new = world_track(audio, period)
        t2 = time.perf_counter()
        spent["pyin"] += t1 - t0
        spent["world"] += t2 - t1
        so, sn = stats(old[0]), stats(new[0])
        voiced = old[0][old[0] > 0]
        voice = "-" if voiced.size == 0 else "high" if np.median(voiced) >= HIGH_HZ else "low"
        gross, agree, both = compare(old, new)
        rows.append((voice, so, sn, gross, agree, both))
        print(f"{name:<22}{voice:<6}{audio.size / RATE:>5.1f} | {so[0]:>9.1f}{so[1]:>6.1f}"
              f"{so[2]:>6.2f} | {sn[0]:>10.1f}{sn[1]:>6.1f}{sn[2]:>6.2f} | {100 * gross:>6.1f}"
              f"{agree:>6.2f}")
        if name.startswith("librivox-"):
            wav = next(LIBRIVOX.glob(f"*-{name.removeprefix('librivox-')}.wav")).name
            reference[wav] = {"mean_hz": round(so[0], 2), "std_hz": round(so[1], 2),
                              "voiced_fraction": round(so[2], 4)}
    print("-" * len(head))
    for group in ("low", "high", "all"):
        sel = [r for r in rows if group in ("all", r[0])]
        both = sum(r[5] for r in sel)
        gross = sum(r[3] * r[5] for r in sel if r[5]) / both
        dmean = np.nanmedian([abs(r[2][0] / r[1][0] - 1) for r in sel])
        dvf = np.mean([r[2][2] - r[1][2] for r in sel])
        print(f"{group:<6} clips {len(sel):>2}: gross error {100 * gross:.1f}% of {both} frames "
              f"both voiced, mean f0 |diff| median {100 * dmean:.1f}%, voiced fraction "
              f"WORLD-pYIN {dvf:+.3f}, "
              f"voicing agreement {np.mean([r[4] for r in sel]):.2f}")
    seconds = sum(a.size for _, a in clips) / RATE
    xrt = {k: seconds / v for k, v in spent.items()}
    print(f"speed on {seconds:.0f} s of speech, one core: pYIN {xrt['pyin']:.0f}x real time, "
          f"WORLD {xrt['world']:.0f}x real time ({xrt['world'] / xrt['pyin']:.0f}x faster)")
    print(f"first call on 1 s (import + JIT) vs next: pYIN {warm_pyin[0]:.2f} s vs "
          f"{warm_pyin[1]:.3f} s, WORLD {warm_world[0]:.2f} s vs {warm_world[1]:.4f} s")
    if args.write_reference:
        import librosa

        reference = {"made_by": "python -m bench.pitch_bench --write-reference PATH",
                     "what": "pYIN (the old pitch) on the LibriVox clips of pocketsphinx-testdata",
                     "tracker": f"librosa {librosa.__version__} pyin, frame {PYIN_FRAME}, hop "
                                f"{PYIN_HOP}, fmin {FMIN:g}, fmax {FMAX:g}, 16 kHz",
                     "clips": reference}
        args.write_reference.write_text(json.dumps(reference, indent=1) + "\n")
        print(f"wrote {args.write_reference}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
