"""Pitch of a speech segment by WORLD (pyworld): DIO finds f0 candidates and the voiced frames,
StoneMask refines f0 on them. It replaced librosa's pYIN with the same contract: on real speech
(bench/pitch_bench.py) 6-7x faster on one core (125-156x vs 17-26x real time), no JIT warm-up
(0.2 s first call vs ~3-6 s), 2.5% gross errors against pYIN on frames both call voiced, and
about the same voiced fraction. DIO also calls some noisy or breathy frames voiced at a low f0
(often near f0_floor or half the true f0) that pYIN leaves unvoiced; these pull the mean down on
some voices.
"""
from __future__ import annotations

import warnings

import numpy as np

from schemas.tables import PIPELINE_RATE_HZ

RATE = PIPELINE_RATE_HZ
# 5 ms frames (WORLD's default). DIO cleans its voicing in units of frames (it drops voiced runs
# under ~2 periods of f0_floor, rounded up to frames), so longer frames lose voicing: on real speech
# (bench/pitch_bench.py) 5 ms kept the voiced fraction within 0.02 of pYIN's, 10 ms gave 0.06 and
# 32 ms (pYIN's hop) 0.14 less (0.24 less on the LibriVox reader). StoneMask costs little per frame.
PITCH_FRAME_PERIOD_MS = 5.0
PITCH_MIN_SAMPLES = 1024      # 64 ms, pYIN's old frame: shorter audio has no pitch measure
MIN_VOICED_FRAMES = 3


def _pyworld():
    # pyworld imports pkg_resources, which warns (DeprecationWarning/UserWarning) on import
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyworld
    return pyworld


def f0_track(audio: np.ndarray, fmin: float, fmax: float,
             frame_period_ms: float = PITCH_FRAME_PERIOD_MS) -> tuple[np.ndarray, np.ndarray]:
    """(f0 Hz per frame, 0 where unvoiced; frame times s) for 16 kHz mono audio."""
    world = _pyworld()
    x = np.ascontiguousarray(audio, dtype=np.float64)
    # DIO may decimate before its search: at 8 kHz it runs twice as fast with the same f0 on real
    # speech and on harmonic tones up to 495 Hz, but at 4 kHz a 480 Hz tone came out as 160 Hz.
    # So decimate by 2 only while the decimated rate stays >= 16x f0_ceil (500 Hz at 16 kHz).
    speed = 2 if 16 * fmax <= RATE / 2 else 1
    f0, times = world.dio(x, RATE, f0_floor=float(fmin), f0_ceil=float(fmax),
                          frame_period=frame_period_ms, speed=speed)
    f0 = world.stonemask(x, f0, times, RATE)
    return np.where(np.isfinite(f0) & (f0 > 0), f0, 0.0), times


def pitch_stats(audio: np.ndarray, fmin: float, fmax: float) -> tuple[float | None, ...]:
    """(mean Hz, std Hz over voiced frames, voiced frames / all frames); mean and std are None
    where fewer than 3 frames are voiced, all three None for audio under 64 ms."""
    if audio.size < PITCH_MIN_SAMPLES:
        return None, None, None
    f0, _ = f0_track(audio, fmin, fmax)
    values = f0[f0 > 0]
    fraction = float(values.size / f0.size) if f0.size else None
    if values.size < MIN_VOICED_FRAMES:
        return None, None, fraction
    return float(np.mean(values)), float(np.std(values)), fraction
