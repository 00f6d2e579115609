"""Speaker gender from the pitch measured over a speaker's own windows.

A rule, not a model: the median fundamental frequency (WORLD, operators/pitch.py) of the voiced
frames of every window the speaker clustering gave one speaker across the recording. Adult male
voices sit around 85-155 Hz, adult female voices around 165-255 Hz; between them, and for
children (whose pitch reads "female"; no model here tells a child), the rule cannot tell.

Measured on the real male and female recordings of codec2-examples (tests/test_voice.py):
males 83-112 Hz, females 164-181 Hz; recordings with under VOICED_FRACTION_MIN voiced frames
(HF radio, heavy noise) are left unknown. The confidence is the distance of the median from the
boundary, scaled so 1.0 is a clear voice; below MIN_CONFIDENCE the gender is "unknown".
Telephone-band speech (no fundamental below 300 Hz) is tracked on its envelope, which beats at
f0 (operators/pitch.py speech_f0_track).
"""
from __future__ import annotations

import numpy as np

MALE_BELOW_HZ = 145.0         # a median under this is a male voice ...
FEMALE_ABOVE_HZ = 155.0       # ... over this a female one; in between: unknown
CONFIDENCE_SPAN_HZ = 40.0     # confidence 1.0 this far from the middle of the gap
MIN_CONFIDENCE = 0.2          # below it: unknown
MIN_VOICED_S = 0.5            # a speaker with less voiced speech than this: unknown
VOICED_FRACTION_MIN = 0.15    # ...or whose windows are mostly unvoiced (noise, radio): unknown
FRAME_S = 0.005               # WORLD frame period (operators/pitch.py PITCH_FRAME_PERIOD_MS)
F0_MIN_HZ, F0_MAX_HZ = 60.0, 500.0   # the search range of the measures stage's defaults


def segment_window_pitch(audio: np.ndarray, windows: int, hop_s: float, length_s: float
                         ) -> tuple[list[float | None], list[int], list[int]]:
    """window_pitch over a 16 kHz segment whose speaker windows start every `hop_s`; telephone-
    band speech is tracked on its envelope (operators/pitch.py restore_fundamental)."""
    from operators.pitch import speech_f0_track

    f0, times = speech_f0_track(audio, F0_MIN_HZ, F0_MAX_HZ)
    return window_pitch(f0, times, np.arange(windows) * hop_s, length_s, hop_s)


def window_pitch(f0: np.ndarray, times: np.ndarray, starts: np.ndarray, length_s: float,
                 hop_s: float) -> tuple[list[float | None], list[int], list[int]]:
    """Per window [start, start + length_s): the median voiced f0 (None when nothing is voiced);
    and the voiced and all frames of its own hop [start, start + hop_s) (the last window: to its
    end), so that summing the counts of overlapping windows counts every frame once. `f0` is 0
    where unvoiced."""
    medians, voiced, frames = [], [], []
    for k, start in enumerate(starts):
        inside = (times >= start) & (times < start + length_s)
        values = f0[inside & (f0 > 0)]
        medians.append(float(np.median(values)) if values.size else None)
        own_end = start + (length_s if k == len(starts) - 1 else hop_s)
        own = (times >= start) & (times < own_end)
        voiced.append(int((own & (f0 > 0)).sum()))
        frames.append(int(own.sum()))
    return medians, voiced, frames


def pooled_median(medians: list[float | None], voiced: list[int]) -> float | None:
    """The median of window medians weighted by their voiced frames (windows overlap, so this
    stands for the median over the speaker's voiced frames)."""
    pairs = sorted((m, v) for m, v in zip(medians, voiced) if m is not None and v > 0)
    if not pairs:
        return None
    total = sum(v for _, v in pairs)
    running = 0
    for m, v in pairs:
        running += v
        if running * 2 >= total:
            return m
    return pairs[-1][0]


def gender_of(median_hz: float | None, voiced_frames: int, frames: int
              ) -> tuple[str, float]:
    """("male" | "female" | "unknown", confidence 0..1) for a speaker."""
    if median_hz is None or voiced_frames * FRAME_S < MIN_VOICED_S or frames == 0 \
            or voiced_frames / frames < VOICED_FRACTION_MIN:
        return "unknown", 0.0
    middle = (MALE_BELOW_HZ + FEMALE_ABOVE_HZ) / 2
    confidence = float(min(1.0, abs(median_hz - middle) / CONFIDENCE_SPAN_HZ))
    if median_hz < MALE_BELOW_HZ and confidence >= MIN_CONFIDENCE:
        return "male", round(confidence, 2)
    if median_hz > FEMALE_ABOVE_HZ and confidence >= MIN_CONFIDENCE:
        return "female", round(confidence, 2)
    return "unknown", round(confidence, 2)
