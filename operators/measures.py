"""Signal measures stage: per segment SNR, loudness, peak, clipping, DC offset, bandwidth (from
the native-rate track kept by decoding) and, on speech, pitch (operators/pitch.py). Peak,
clipping and loudness come from the segment's piece of the source channels' level track
(operators/levels.py) when decoding made one; the rest from the 16 kHz mono mix. Runs on speech
and non-speech segments alike, before the models, so that what no model should spend time on
is dropped first: clipped audio, and speech under too much noise for any transcript of it to be
trusted (`measures.min_speech_snr_db`).

Every measure is a value or null, never an exception: empty or very short audio, near-silence,
DC offset, NaN/inf samples and clipping all give numbers (or null where a measure is undefined,
e.g. loudness under 0.4 s). The audio passed on has NaN/inf zeroed and its DC offset removed.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from operators.audio import EPS, from_bytes, peak_dbfs, to_bytes
from operators.bandwidth import segment_bandwidth
from operators.base import Stage, section
from operators.levels import segment_levels
from operators.pitch import pitch_stats  # WORLD DIO + StoneMask; re-exported here
from schemas import reasons
from schemas.config import MeasuresConfig, StageResources
from schemas.tables import (LEVEL_TRACK_FIELD, MEASURE_FIELDS, NATIVE_TRACK_FIELD,
                            PIPELINE_RATE_HZ)

RATE = PIPELINE_RATE_HZ
SNR_FRAME = 320               # 20 ms
NOISE_QUANTILE = 0.1          # the quietest 10% of frames are taken as the noise floor
SNR_RANGE_DB = (-10.0, 100.0)
LOUDNESS_MIN_S = 0.4          # one BS.1770 gating block


def finite(audio: np.ndarray) -> np.ndarray:
    """float32 audio with NaN/inf zeroed (decoding already does this; direct callers may not)."""
    return np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def snr_db(audio: np.ndarray) -> float | None:
    """Loud frames vs. the noise floor: 10*log10((P_loud - P_noise) / P_noise), where P_noise is
    the mean power of the quietest 10% of 20 ms frames and P_loud that of the frames above the
    median. Segments are VAD-cut with pauses, so the quiet frames are the background."""
    n = audio.size // SNR_FRAME
    if n < 5:
        return None
    power = np.sort(np.mean(np.square(audio[:n * SNR_FRAME].reshape(n, SNR_FRAME),
                                      dtype=np.float64), axis=1))
    noise = max(float(np.mean(power[:max(1, int(n * NOISE_QUANTILE))])), EPS ** 2)
    loud = float(np.mean(power[n // 2:]))
    snr = 10.0 * np.log10(max(loud - noise, EPS ** 2) / noise)
    return float(np.clip(snr, *SNR_RANGE_DB))


def low_snr_speech(row: dict, min_snr_db: float | None) -> str | None:
    """The drop detail when `row` is speech measured under `min_snr_db`, else None. Under that
    much noise the recognisers make the same mistakes (bench-labels: the errors kept at 5 dB
    were written by two families alike), so no agreement rule can vouch for a transcript; the
    gate comes before any model runs, so ASR is not spent on it."""
    snr = row.get("snr_db")
    if min_snr_db is None or snr is None or row.get("content_type") != "speech" \
            or snr >= min_snr_db:
        return None
    return (f"speech at {snr:.1f} dB SNR, under measures.min_speech_snr_db {min_snr_db:g}: "
            f"recognisers share their errors under this much noise, so no transcript is trusted")


def loudness_lufs(audio: np.ndarray, meter=None) -> float | None:
    """Integrated loudness (ITU-R BS.1770-4, pyloudnorm); None under one 0.4 s block or when
    every block is below the absolute gate (-70 LUFS)."""
    if audio.size < LOUDNESS_MIN_S * RATE:
        return None
    import pyloudnorm

    value = (meter or pyloudnorm.Meter(RATE)).integrated_loudness(audio.astype(np.float64))
    return float(value) if np.isfinite(value) else None


def clipped_ratio(audio: np.ndarray, level: float) -> float:
    if audio.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(audio) >= level) / audio.size)


class MeasuresStage(Stage):
    """segment rows -> the same rows + MEASURE_FIELDS; clipped segments get drop_reason
    `clipping`. Consumes the native bandwidth track and the level track."""

    name = "measures"
    requires = ("audio", "content_type", "start_s", "end_s", "drop_reason", "reject_reason")
    adds = pa.schema(MEASURE_FIELDS)
    consumes = (NATIVE_TRACK_FIELD.name, LEVEL_TRACK_FIELD.name)
    resources = StageResources(num_cpus=0.5, concurrency=1, batch_size=8)

    @classmethod
    def config_kwargs(cls, cfg, storage, caption=None):
        return {"cfg": cfg.measures}

    @classmethod
    def outcome_settings(cls, cfg):
        return section(cfg.measures)

    def __init__(self, cfg: MeasuresConfig):
        super().__init__()
        self.cfg = cfg
        self._meter = None

    def setup(self) -> None:
        import pyloudnorm

        self._meter = pyloudnorm.Meter(RATE)

    def process_row(self, row: dict) -> None:
        track = row.pop(NATIVE_TRACK_FIELD.name, None)
        levels = segment_levels(row.pop(LEVEL_TRACK_FIELD.name, None))
        if row["reject_reason"] is not None:
            return
        audio = finite(from_bytes(row["audio"]))
        row.update(self.measure(row, audio, track))
        if levels is not None:
            # peak, clipping and loudness of the source channels as recorded, not of the mono
            # mix the models hear (operators/levels.py)
            row.update(levels)
        # the models downstream see the audio without its DC offset
        row["audio"] = to_bytes(audio - np.float32(row["dc_offset"]))
        if row["clipped_ratio"] > self.cfg.max_clipped_ratio:
            self.drop(row, reasons.CLIPPING,
                      f"{row['clipped_ratio']:.1%} of samples at or above {self.cfg.clip_level} "
                      f"of full scale (limit {self.cfg.max_clipped_ratio:.1%})")
        noisy = low_snr_speech(row, self.cfg.min_speech_snr_db)
        if noisy:
            self.drop(row, reasons.LOW_SNR_SPEECH, noisy)

    def measure(self, row: dict, audio: np.ndarray, track: bytes | None) -> dict:
        """Peak and clipping on the audio as recorded; level measures without its DC offset."""
        cfg = self.cfg
        dc = float(np.mean(audio, dtype=np.float64)) if audio.size else 0.0
        centred = audio - np.float32(dc)
        out = {
            "snr_db": snr_db(centred),
            "loudness_lufs": loudness_lufs(centred, self._meter),
            "peak_dbfs": peak_dbfs(audio) if audio.size else None,
            "clipped_ratio": clipped_ratio(audio, cfg.clip_level),
            "dc_offset": dc,
            "bandwidth_hz": segment_bandwidth(track, row["start_s"], row["end_s"]),
            "pitch_mean_hz": None, "pitch_std_hz": None, "voiced_fraction": None,
        }
        if cfg.pitch and row["content_type"] == "speech":
            mean, std, voiced = pitch_stats(centred, cfg.pitch_fmin_hz, cfg.pitch_fmax_hz)
            out.update(pitch_mean_hz=mean, pitch_std_hz=std, voiced_fraction=voiced)
        return out
