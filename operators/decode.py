"""Decode stage: one listed object -> its audio as 16 kHz mono float32, or a reject reason.

Reads the object pinned to its listed ETag and decodes with PyAV (wav, flac, mp3, ogg/opus, m4a;
no system ffmpeg needed). Everything that makes a recording unusable ends as a reject reason on
the row, never as an exception: empty, over the size or length limit, not audio, truncated,
digitally silent, or unreadable from storage.
"""
from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from operators.audio import peak_dbfs, to_bytes
from operators.bandwidth import NativeBandwidthTrack
from operators.base import Stage, rows_to_table, section
from operators.storage import ObjectStore, StorageError
from schemas import reasons
from schemas.config import DecodeConfig, InputConfig, StageResources, StorageConfig
from schemas.tables import (LISTING_SCHEMA, NATIVE_TRACK_FIELD, PIPELINE_RATE_HZ,
                            RECORDING_AUDIO_FIELD, RECORDING_FIELDS, REJECT_FIELDS)

log = logging.getLogger("audioverse.stage.decode")


class Rejected(Exception):
    """Raised inside decoding to leave with a reason; caught per row."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class DecodedAudio:
    audio: np.ndarray
    container: str
    codec: str
    sample_rate: int
    channels: int
    nonfinite_samples: int = 0
    bandwidth_track: bytes = b""     # operators/bandwidth.py, measured before resampling


def decode_audio_bytes(data: bytes, max_duration_s: float, min_decoded_fraction: float,
                       rate: int = PIPELINE_RATE_HZ,
                       bandwidth_floor_db: float = 60.0) -> DecodedAudio:
    """Decode and resample to mono float32 at `rate`. Raises Rejected with a reason.
    On the way, the native-rate mono audio feeds the bandwidth track (never kept whole)."""
    import av

    if not data:
        raise Rejected(reasons.EMPTY_OBJECT, "the object has 0 bytes")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.error.FFmpegError as exc:
        raise Rejected(reasons.UNDECODABLE, f"not a readable audio container: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise Rejected(reasons.NO_AUDIO_STREAM,
                           f"container '{container.format.name}' has no audio stream")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        declared_s = None
        if stream.duration and stream.time_base:
            declared_s = float(stream.duration * stream.time_base)
        elif container.duration:
            declared_s = container.duration / 1_000_000
        if declared_s and declared_s > max_duration_s:
            raise Rejected(reasons.TOO_LONG,
                           f"declared duration {declared_s:.0f}s is over the {max_duration_s:.0f}s limit")

        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        native_rate = int(ctx.sample_rate or 0)
        track = NativeBandwidthTrack(native_rate, bandwidth_floor_db) if native_rate else None
        to_native = (av.AudioResampler(format="flt", layout="mono", rate=native_rate)
                     if track else None)
        chunks: list[np.ndarray] = []
        decoded = 0
        limit = int(max_duration_s * rate)
        error: Exception | None = None
        try:
            for frame in container.decode(stream):
                if track is not None:
                    for out in to_native.resample(frame):
                        track.feed(out.to_ndarray())
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    decoded += chunk.size
                if decoded > limit:
                    raise Rejected(reasons.TOO_LONG,
                                   f"decoded audio passed the {max_duration_s:.0f}s limit")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except Rejected:
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            error = exc
        audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        got_s = audio.size / rate
        if error is not None:
            if audio.size == 0:
                raise Rejected(reasons.UNDECODABLE, f"decoder error before any audio: {error}")
            if declared_s and got_s < min_decoded_fraction * declared_s:
                raise Rejected(reasons.TRUNCATED,
                               f"decoded {got_s:.2f}s of a declared {declared_s:.2f}s, then: {error}")
        if audio.size == 0:
            raise Rejected(reasons.UNDECODABLE, "the audio stream holds no samples")
        if declared_s and got_s < min_decoded_fraction * declared_s:
            raise Rejected(reasons.TRUNCATED,
                           f"decoded {got_s:.2f}s of a declared {declared_s:.2f}s")
        nonfinite = int(audio.size - np.count_nonzero(np.isfinite(audio)))
        if nonfinite:  # float WAVs can carry NaN/inf; every model downstream needs numbers
            audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
        if track is not None:
            track.finish()
        return DecodedAudio(audio, container.format.name, ctx.name, native_rate,
                            int(ctx.channels or 0), nonfinite,
                            track.to_bytes() if track is not None else b"")


def read_segments(store: ObjectStore, rows: list[dict], indices: list[int],
                  decode_cfg: DecodeConfig, rate: int = PIPELINE_RATE_HZ
                  ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Read the audio of segments again from their sources, for a stage after the segment
    audio was dropped (captions that hear the clip, tokenization). Each source is read once,
    pinned to its ETag, and decoded straight at `rate`; segments are cut at their offsets
    (stored at PIPELINE_RATE_HZ, scaled). Returns (audio by row index, why a row has none)."""
    by_source: dict[tuple[str, str], list[int]] = {}
    for i in indices:
        by_source.setdefault((rows[i]["source_uri"], rows[i]["source_etag"]), []).append(i)
    audio_by_row, errors = {}, {}
    for (uri, etag), idx in by_source.items():
        try:
            audio = decode_audio_bytes(store.get(uri, etag=etag), decode_cfg.max_duration_s,
                                       decode_cfg.min_decoded_fraction, rate=rate).audio
        except (StorageError, Rejected) as exc:
            log.warning("cannot read %d segment(s) of %s again: %s", len(idx), uri, exc)
            errors.update({i: str(exc) for i in idx})
            continue
        for i in idx:
            start = round(rows[i]["start_sample"] * rate / PIPELINE_RATE_HZ)
            end = min(audio.size, round(rows[i]["end_sample"] * rate / PIPELINE_RATE_HZ))
            if end <= start:
                errors[i] = f"empty slice [{start}:{end}] of {audio.size} samples"
            else:
                audio_by_row[i] = audio[start:end]
    return audio_by_row, errors


class DecodeStage(Stage):
    """listing rows -> the same rows + recording facts + `recording_audio`, or a reject."""

    name = "decode"
    requires = tuple(LISTING_SCHEMA.names)
    adds = pa.schema(RECORDING_FIELDS + REJECT_FIELDS + [RECORDING_AUDIO_FIELD, NATIVE_TRACK_FIELD])
    # I/O and decoding, no model: parallel tasks, one recording per batch to bound memory.
    resources = StageResources(num_cpus=0.5, concurrency=2, batch_size=1)

    @classmethod
    def outcome_settings(cls, cfg):
        return {"extensions": sorted(e.lower() for e in cfg.input.extensions),
                "max_object_bytes": cfg.input.max_object_bytes, "decode": section(cfg.decode),
                "bandwidth_floor_db": cfg.measures.bandwidth_floor_db}

    def __init__(self, storage: StorageConfig, input_cfg: InputConfig, decode_cfg: DecodeConfig,
                 bandwidth_floor_db: float = 60.0):
        super().__init__()
        self.bandwidth_floor_db = bandwidth_floor_db
        # reached: the driver's preflight talked to the server, so a refused connection now is a
        # server restarting, worth waiting for (storage.retry_window_s).
        self.store = ObjectStore(storage, reached=True)
        self.input_cfg = input_cfg
        self.cfg = decode_cfg
        self.extensions = {e.lower() for e in input_cfg.extensions}

    def process(self, batch: pa.Table) -> pa.Table:
        rows = []
        for row in batch.to_pylist():
            rows.append({**row, **self._one(row)})
        return rows_to_table(rows, self.output_schema(batch.schema))

    def _one(self, row: dict) -> dict:
        try:
            return self._decode(row)
        except Rejected as rej:
            return {"reject_stage": self.name, "reject_reason": rej.reason,
                    "reject_detail": rej.detail}
        except Exception as exc:  # noqa: BLE001 - decoders raise odd errors on odd bytes
            log.warning("unexpected decoder failure on %s: %r", row["source_uri"], exc)
            return {"reject_stage": self.name, "reject_reason": reasons.UNDECODABLE,
                    "reject_detail": f"decoder failed: {type(exc).__name__}: {exc}"}

    def _decode(self, row: dict) -> dict:
        ext = posixpath.splitext(row["source_uri"])[1].lower()
        if ext not in self.extensions:
            raise Rejected(reasons.UNSUPPORTED_EXTENSION,
                           f"extension '{ext or '(none)'}' is not one of {sorted(self.extensions)}")
        if row["source_bytes"] == 0:
            raise Rejected(reasons.EMPTY_OBJECT, "the object has 0 bytes")
        if row["source_bytes"] > self.input_cfg.max_object_bytes:
            raise Rejected(reasons.OBJECT_TOO_LARGE,
                           f"{row['source_bytes']} bytes is over input.max_object_bytes="
                           f"{self.input_cfg.max_object_bytes}")
        try:
            data = self.store.get(row["source_uri"], etag=row["source_etag"])
        except StorageError as exc:
            # One unreadable object (e.g. replaced since listing) must not stop the run; a dead
            # store is caught before the run by the preflight check.
            raise Rejected(reasons.READ_ERROR, str(exc)) from exc
        decoded = decode_audio_bytes(data, self.cfg.max_duration_s, self.cfg.min_decoded_fraction,
                                     bandwidth_floor_db=self.bandwidth_floor_db)
        peak = peak_dbfs(decoded.audio)
        if peak < self.cfg.silence_peak_dbfs:
            raise Rejected(reasons.DIGITAL_SILENCE,
                           f"peak level {peak:.1f} dBFS is below {self.cfg.silence_peak_dbfs} dBFS")
        return {
            "source_container": decoded.container,
            "source_codec": decoded.codec,
            "source_sample_rate": decoded.sample_rate,
            "source_channels": decoded.channels,
            "recording_duration_s": decoded.audio.size / PIPELINE_RATE_HZ,
            "source_nonfinite_samples": decoded.nonfinite_samples,
            "recording_audio": to_bytes(decoded.audio),
            "native_bandwidth_track": decoded.bandwidth_track,
        }
