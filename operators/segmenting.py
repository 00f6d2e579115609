"""The segment policy: from frame-level speech probabilities and the audio to a list of segments.

Pure functions over numpy, no model, so the policy is unit-tested on its own:
1. speech regions: hysteresis on the VAD probabilities (enter at `threshold`, leave after
   `min_silence_s` below threshold - 0.15), padded by `speech_pad_s`;
2. split long: a region over `max_speech_s` is cut at its least speech-like frame, repeatedly;
3. merge short: neighbours closer than `merge_gap_s` merge while the result stays under
   `target_s` (or, for a piece shorter than `min_speech_s`, under `max_speech_s`);
4. sound regions: the gaps between speech whose short-time level stays above `sound_floor_dbfs`
   for at least `min_sound_s` become non-speech segments; near-silence is discarded.
All positions are sample offsets at 16 kHz, end exclusive.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.config import SegmentConfig

RATE = 16000
FRAME = 512               # VAD frame (32 ms)
LEVEL_FRAME = 1600        # 100 ms frames for the sound-level scan


@dataclass(frozen=True)
class PlannedSegment:
    start: int
    end: int
    content_type: str            # speech | sound
    too_short: bool = False

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / RATE


def speech_regions(probs: np.ndarray, n_samples: int, cfg: SegmentConfig) -> list[tuple[int, int]]:
    enter = cfg.threshold
    leave = max(cfg.threshold - 0.15, 0.01)
    min_silence_frames = max(1, int(round(cfg.min_silence_s * RATE / FRAME)))
    regions: list[tuple[int, int]] = []
    start = None
    quiet = 0
    for i, p in enumerate(probs):
        if start is None:
            if p >= enter:
                start, quiet = i, 0
            continue
        quiet = quiet + 1 if p < leave else 0
        if quiet >= min_silence_frames:
            regions.append((start, i - quiet + 1))
            start, quiet = None, 0
    if start is not None:
        regions.append((start, len(probs) - quiet))
    pad = int(cfg.speech_pad_s * RATE)
    padded: list[tuple[int, int]] = []
    for s, e in regions:
        s_, e_ = max(0, s * FRAME - pad), min(n_samples, e * FRAME + pad)
        if padded and s_ <= padded[-1][1]:
            padded[-1] = (padded[-1][0], max(padded[-1][1], e_))
        elif e_ > s_:
            padded.append((s_, e_))
    return padded


def split_long(regions: list[tuple[int, int]], probs: np.ndarray,
               max_s: float) -> list[tuple[int, int]]:
    """Cut regions longer than max_s at the least speech-like frame of their second half."""
    max_len = int(max_s * RATE)
    out: list[tuple[int, int]] = []
    for s, e in regions:
        while e - s > max_len:
            lo, hi = (s + max_len // 2) // FRAME, (s + max_len) // FRAME
            window = probs[lo:hi]
            cut = (lo + int(np.argmin(window))) * FRAME if window.size else s + max_len
            cut = min(max(cut, s + FRAME), s + max_len)
            out.append((s, cut))
            s = cut
        out.append((s, e))
    return out


def merge_short(regions: list[tuple[int, int]], cfg: SegmentConfig) -> list[tuple[int, int]]:
    gap = int(cfg.merge_gap_s * RATE)
    target = int(cfg.target_s * RATE)
    max_len = int(cfg.max_speech_s * RATE)
    min_len = int(cfg.min_speech_s * RATE)
    out: list[tuple[int, int]] = []
    for s, e in regions:
        if out:
            ps, pe = out[-1]
            merged = e - ps
            short = (pe - ps) < min_len or (e - s) < min_len
            if s - pe <= gap and (merged <= target or (short and merged <= max_len)):
                out[-1] = (ps, e)
                continue
        out.append((s, e))
    return out


def _frame_levels_db(audio: np.ndarray) -> np.ndarray:
    n = audio.size // LEVEL_FRAME
    if n == 0:
        return np.zeros(0)
    frames = audio[: n * LEVEL_FRAME].astype(np.float64).reshape(n, LEVEL_FRAME)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def sound_regions(audio: np.ndarray, speech: list[tuple[int, int]],
                  cfg: SegmentConfig) -> list[tuple[int, int]]:
    """Non-speech stretches with real sound (above the floor), split to at most max_sound_s."""
    levels = _frame_levels_db(audio)
    loud = levels >= cfg.sound_floor_dbfs
    for s, e in speech:  # speech is not sound
        loud[s // LEVEL_FRAME: -(-e // LEVEL_FRAME)] = False
    # Bridge dips shorter than 300 ms so one sound effect is one segment.
    bridge = 3
    idx = np.flatnonzero(loud)
    runs: list[list[int]] = []
    for i in idx:
        if runs and i - runs[-1][1] <= bridge + 1 and not _crosses(runs[-1][1], i, speech):
            runs[-1][1] = i
        else:
            runs.append([i, i])
    min_frames = int(np.ceil(cfg.min_sound_s * RATE / LEVEL_FRAME))
    max_len = int(cfg.max_sound_s * RATE)
    out: list[tuple[int, int]] = []
    for a, b in runs:
        if b - a + 1 < min_frames:
            continue
        s, e = a * LEVEL_FRAME, min(audio.size, (b + 1) * LEVEL_FRAME)
        pieces = max(1, -(-(e - s) // max_len))
        bounds = np.linspace(s, e, pieces + 1).astype(int)
        out.extend((int(x), int(y)) for x, y in zip(bounds[:-1], bounds[1:]))
    return out


def _crosses(a_frame: int, b_frame: int, speech: list[tuple[int, int]]) -> bool:
    a, b = a_frame * LEVEL_FRAME, b_frame * LEVEL_FRAME
    return any(s < b and e > a for s, e in speech)


def plan_segments(audio: np.ndarray, probs: np.ndarray, cfg: SegmentConfig) -> list[PlannedSegment]:
    speech = speech_regions(probs, audio.size, cfg)
    speech = merge_short(split_long(speech, probs, cfg.max_speech_s), cfg)
    min_len = int(cfg.min_speech_s * RATE)
    planned = [PlannedSegment(s, e, "speech", too_short=(e - s) < min_len) for s, e in speech]
    planned += [PlannedSegment(s, e, "sound") for s, e in sound_regions(audio, speech, cfg)]
    return sorted(planned, key=lambda p: (p.start, p.end))
