"""Small audio helpers shared by stages: the float32 wire format and levels in dBFS."""
from __future__ import annotations

import numpy as np

EPS = 1e-10


def to_bytes(audio: np.ndarray) -> bytes:
    return np.ascontiguousarray(audio, dtype="<f4").tobytes()


def from_bytes(buf: bytes | memoryview | None) -> np.ndarray:
    if buf is None:
        return np.zeros(0, dtype=np.float32)
    return np.frombuffer(buf, dtype="<f4")


def rms_dbfs(audio: np.ndarray) -> float:
    if audio.size == 0:
        return -200.0
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, EPS))


def peak_dbfs(audio: np.ndarray) -> float:
    if audio.size == 0:
        return -200.0
    return 20.0 * np.log10(max(float(np.max(np.abs(audio))), EPS))
