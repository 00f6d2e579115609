"""Effective bandwidth, measured on the audio at its native sample rate.

Decoding resamples everything to 16 kHz, which would make every source look 8 kHz wide. So while
decoding, `NativeBandwidthTrack` sees the native-rate samples and keeps, per 0.5 s window, the
window's level and its *edge*: the top of the highest 125 Hz band whose power is within
`floor_db` of the window's loudest band. A phone call upsampled to 44.1 kHz has nothing above
4 kHz but numerical noise 100+ dB down, so its edge reads ~4 kHz; a 128 kbit/s MP3 reads its
encoder's low-pass (~16 kHz). The track is a few bytes per second; a segment's bandwidth is the
median edge over its loud windows (`segment_bandwidth`).
"""
from __future__ import annotations

import numpy as np

WINDOW_S = 0.5
BAND_HZ = 125.0
MAX_HZ = 24000.0          # nothing above this matters to a model that works at 16 to 48 kHz
LOUD_WINDOW_DB = 20.0     # windows this far below the segment's loudest do not vote


class NativeBandwidthTrack:
    """Feed native-rate mono float32 chunks in order; `to_bytes()` gives the (edge_hz, level_db)
    float32 pairs, one per window."""

    def __init__(self, rate: int, floor_db: float = 60.0):
        self.rate = int(rate)
        self.floor_db = floor_db
        self.window = max(64, int(round(rate * WINDOW_S)))
        freqs = np.fft.rfftfreq(self.window, 1.0 / rate)
        top = min(rate / 2.0, MAX_HZ)
        self._band = np.minimum((freqs // BAND_HZ).astype(np.int64), int(np.ceil(top / BAND_HZ)))
        self._keep = freqs <= top
        self._n_bands = int(self._band[self._keep].max()) + 1
        self._counts = np.maximum(np.bincount(self._band[self._keep], minlength=self._n_bands), 1)
        self._hann = np.hanning(self.window).astype(np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._rows: list[tuple[float, float]] = []

    def feed(self, chunk: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, np.asarray(chunk, np.float32).reshape(-1)])
        while self._pending.size >= self.window:
            self._rows.append(self._measure(self._pending[:self.window]))
            self._pending = self._pending[self.window:]

    def finish(self) -> None:
        if self._pending.size >= self.window // 4:  # a short tail still counts, zero-padded
            self._rows.append(self._measure(np.pad(self._pending,
                                                   (0, self.window - self._pending.size))))
        self._pending = np.zeros(0, dtype=np.float32)

    def _measure(self, x: np.ndarray) -> tuple[float, float]:
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        x = x - float(np.mean(x))
        power = np.abs(np.fft.rfft(x * self._hann)) ** 2
        bands = np.bincount(self._band[self._keep], weights=power[self._keep],
                            minlength=self._n_bands) / self._counts
        loudest = float(bands.max())
        level_db = 10.0 * np.log10(max(float(np.mean(x * x)), 1e-20))
        above = np.nonzero(bands >= loudest * 10.0 ** (-self.floor_db / 10.0))[0]
        if not np.isfinite(loudest) or loudest <= 1e-20 or above.size == 0:
            return 0.0, level_db
        edge = min((int(above[-1]) + 1) * BAND_HZ, self.rate / 2.0, MAX_HZ)
        return float(edge), level_db

    def to_bytes(self) -> bytes:
        return np.asarray(self._rows, dtype="<f4").reshape(-1, 2).tobytes()


def segment_bandwidth(track: bytes | None, start_s: float, end_s: float) -> float | None:
    """Median edge over the loud windows that overlap [start_s, end_s); None without a track."""
    if not track:
        return None
    rows = np.frombuffer(track, dtype="<f4").reshape(-1, 2)
    first = int(start_s // WINDOW_S)
    last = max(first + 1, int(np.ceil(end_s / WINDOW_S)))
    window = rows[first:last]
    if window.size == 0:
        return None
    loud = window[window[:, 1] >= window[:, 1].max() - LOUD_WINDOW_DB]
    return float(np.median(loud[:, 0]))
