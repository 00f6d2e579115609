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


# Telephone-band speech has no fundamental: a 300 Hz high-pass removes the 85-255 Hz band where
# adult voices' f0 lies, and DIO then reads a harmonic (a man at 330 Hz, 4-21% voiced). Power at
# 70-250 Hz relative to 300-3000 Hz: -0.3 to -23 dB on the wideband LibriVox, CMU and codec2
# recordings, -44 to -67 dB on the same filtered to 300-3400 Hz. Below FUNDAMENTAL_BAND_MIN_DB
# the pitch is tracked on the signal's envelope instead (restore_fundamental).
FUNDAMENTAL_BAND_MIN_DB = -30.0
ENVELOPE_LOWPASS_HZ = 600.0   # above the 500 Hz f0 ceiling, below most of the band's harmonics


def fundamental_band_db(audio: np.ndarray, rate: int = RATE) -> float:
    """Power at 70-250 Hz (where adult voices' fundamental lies) relative to 300-3000 Hz, dB."""
    x = np.nan_to_num(np.asarray(audio, dtype=np.float64))
    if x.size < rate // 10:
        return 0.0
    power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    low = power[(freqs >= 70) & (freqs < 250)].sum()
    high = power[(freqs >= 300) & (freqs < 3000)].sum()
    return float(10 * np.log10((low + 1e-20) / (high + 1e-20)))


def restore_fundamental(audio: np.ndarray) -> np.ndarray:
    """The envelope of band-limited speech: full-wave rectified and low-passed. Harmonics k*f0
    that survive the band still beat at f0, and rectifying turns that beat into a component at
    f0 (the "missing fundamental" a listener hears). Full-wave, not half-wave: half-wave
    rectification keeps the signal itself, whose 300-600 Hz harmonics then pass the low-pass and
    read as f0 (women at 200-220 Hz read 290-360 Hz). bench.pitch_bench --telephone measures it."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(6, ENVELOPE_LOWPASS_HZ, btype="lowpass", fs=RATE, output="sos")
    envelope = sosfiltfilt(sos, np.abs(np.asarray(audio, dtype=np.float64)))
    return envelope - envelope.mean()


def speech_f0_track(audio: np.ndarray, fmin: float, fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """f0_track, on the envelope where the fundamental band is missing (telephone-band speech)."""
    if fundamental_band_db(audio) < FUNDAMENTAL_BAND_MIN_DB:
        return f0_track(restore_fundamental(audio), fmin, fmax)
    return f0_track(audio, fmin, fmax)


def pitch_stats(audio: np.ndarray, fmin: float, fmax: float) -> tuple[float | None, ...]:
    """(mean Hz, std Hz over voiced frames, voiced frames / all frames); mean and std are None
    where fewer than 3 frames are voiced, all three None for audio under 64 ms."""
    if audio.size < PITCH_MIN_SAMPLES:
        return None, None, None
    f0, _ = speech_f0_track(audio, fmin, fmax)
    values = f0[f0 > 0]
    fraction = float(values.size / f0.size) if f0.size else None
    if values.size < MIN_VOICED_FRAMES:
        return None, None, fraction
    return float(np.mean(values)), float(np.std(values)), fraction
