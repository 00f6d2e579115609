"""Levels measured on the source channels as recorded: peak, clipping and BS.1770 loudness.

The models hear a mono mix (the mean of the channels, at 16 kHz), but a level must be the level
of what was recorded: a stereo file whose channels each peak at -3 dBFS peaks at -3 dBFS, not at
the +0 dBFS a summing downmix would make of it, and a clipped channel is clipped even when the
other is quiet. So while decoding, `LevelTrack` sees every channel at its native rate and keeps,
per 100 ms block: the highest |sample| of any channel, the clipped samples of all channels, the
samples counted, and the ITU-R BS.1770-4 weighted power (K-weighted mean square per channel,
summed with the channel weights: 1.0 front and centre, 1.41 surround, LFE left out). That is
16 bytes per 100 ms. The segmenter cuts each segment's piece of it (`slice_track`), and
`segment_levels` turns a piece into the segment's peak, clipped share and integrated loudness
(400 ms blocks of four 100 ms blocks, absolute gate -70 LUFS, relative gate -10 LU, as BS.1770).
Segment edges are rounded out to whole 100 ms blocks.
"""
from __future__ import annotations

import numpy as np

BLOCK_S = 0.1
FIELDS = 4                       # peak, clipped samples, samples, weighted power
ABS_GATE_LUFS = -70.0
REL_GATE_LU = -10.0
SURROUND = {"BL", "BR", "SL", "SR", "BC", "LS", "RS", "SW", "BLC", "BRC"}
LFE = {"LFE", "LFE2", "LFE1"}


def channel_weights(names: list[str]) -> np.ndarray:
    """BS.1770 channel weights, by channel name; unnamed channels in the WAVE order (FL FR FC
    LFE BL BR SL SR) when there are 6 or more, else all 1.0."""
    n = len(names)
    weights = np.ones(n)
    if names and all(name and name.upper() != "NONE" for name in names):
        for i, name in enumerate(names):
            upper = name.upper()
            weights[i] = 0.0 if upper in LFE else 1.41 if upper in SURROUND else 1.0
    elif n >= 6:
        weights[3] = 0.0
        weights[4:] = 1.41
    return weights


def _k_weighting(rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two BS.1770 biquads (high shelf, then high pass) at `rate`, as pyloudnorm derives
    them for any sample rate."""
    import pyloudnorm

    filters = pyloudnorm.Meter(rate)._filters
    return [(np.asarray(filters[k].b, np.float64), np.asarray(filters[k].a, np.float64))
            for k in ("high_shelf", "high_pass")]


class LevelTrack:
    """Feed (channels, samples) float32 chunks in order; `to_bytes()` gives one row per block."""

    def __init__(self, rate: int, weights: np.ndarray, clip_level: float):
        from scipy.signal import lfilter_zi

        self.rate = int(rate)
        self.block = max(1, int(round(rate * BLOCK_S)))
        self.weights = np.asarray(weights, np.float64)
        self.clip_level = float(clip_level)
        self._filters = _k_weighting(self.rate)
        # per filter: per channel state, started at rest (zero input so far)
        self._zi = [np.zeros((self.weights.size, lfilter_zi(b, a).size)) for b, a in self._filters]
        self._pending = np.zeros((self.weights.size, 0), np.float32)
        self._rows: list[tuple[float, float, float, float]] = []

    def feed(self, chunk: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, np.asarray(chunk, np.float32)], axis=1)
        whole = self._pending.shape[1] // self.block * self.block
        if whole:
            self._measure(self._pending[:, :whole])
            self._pending = self._pending[:, whole:]

    def finish(self) -> None:
        if self._pending.shape[1]:
            self._measure(self._pending)
        self._pending = self._pending[:, :0]

    def _measure(self, x: np.ndarray) -> None:
        from scipy.signal import lfilter

        y = x.astype(np.float64)
        for k, (b, a) in enumerate(self._filters):
            y, self._zi[k] = lfilter(b, a, y, axis=1, zi=self._zi[k])
        for start in range(0, x.shape[1], self.block):
            xs, ys = x[:, start:start + self.block], y[:, start:start + self.block]
            power = float(np.dot(self.weights, np.mean(np.square(ys), axis=1)))
            self._rows.append((float(np.max(np.abs(xs))),
                               float(np.count_nonzero(np.abs(xs) >= self.clip_level)),
                               float(xs.size), power))

    def to_bytes(self) -> bytes:
        return np.asarray(self._rows, dtype="<f4").reshape(-1, FIELDS).tobytes()


def slice_track(track: bytes | None, start_s: float, end_s: float) -> bytes | None:
    """The blocks of a recording's level track that overlap [start_s, end_s)."""
    if not track:
        return track
    rows = np.frombuffer(track, dtype="<f4").reshape(-1, FIELDS)
    first = int(start_s // BLOCK_S)
    last = max(first + 1, int(np.ceil(end_s / BLOCK_S - 1e-9)))
    return rows[first:last].tobytes()


def segment_levels(piece: bytes | None) -> dict | None:
    """{peak_dbfs, clipped_ratio, loudness_lufs} of a segment's piece of the track; None without
    one. Loudness is None under one 400 ms block or when every block is under -70 LUFS."""
    if not piece:
        return None
    rows = np.frombuffer(piece, dtype="<f4").reshape(-1, FIELDS).astype(np.float64)
    samples = rows[:, 2].sum()
    peak = float(rows[:, 0].max()) if rows.size else 0.0
    loudness = None
    if rows.shape[0] >= 4:
        # a gating block: four 100 ms blocks (75% overlap), its power the samples' mean
        z = np.convolve(rows[:, 3] * rows[:, 2], np.ones(4), "valid") / \
            np.convolve(rows[:, 2], np.ones(4), "valid")
        with np.errstate(divide="ignore"):
            lk = -0.691 + 10.0 * np.log10(z)
        gated = z[lk > ABS_GATE_LUFS]
        if gated.size:
            relative = -0.691 + 10.0 * np.log10(gated.mean()) + REL_GATE_LU
            kept = z[(lk > ABS_GATE_LUFS) & (lk > relative)]
            loudness = float(-0.691 + 10.0 * np.log10(kept.mean()))
    return {"peak_dbfs": float(20.0 * np.log10(max(peak, 1e-10))),
            "clipped_ratio": float(rows[:, 1].sum() / samples) if samples else 0.0,
            "loudness_lufs": loudness}
