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
from operators.base import Stage, section
from operators.levels import LevelTrack, channel_weights
from operators.storage import ObjectStore, StorageError
from schemas import reasons
from schemas.config import DecodeConfig, InputConfig, StageResources, StorageConfig
from schemas.tables import (LEVEL_TRACK_FIELD, LISTING_SCHEMA, NATIVE_TRACK_FIELD,
                            PIPELINE_RATE_HZ, RECORDING_AUDIO_FIELD, RECORDING_FIELDS,
                            REJECT_FIELDS)

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
    out_of_range_samples: int = 0    # finite float samples beyond full scale, clipped to it
    bandwidth_track: bytes = b""     # operators/bandwidth.py, measured before resampling
    level_track: bytes = b""         # operators/levels.py, on the source channels


# WAV format tags whose data chunk holds whole frames of `block_align` bytes (PCM, float,
# A-law, mu-law, extensible): only for those does the data size give the duration exactly.
_FRAME_FORMATS = {1, 3, 6, 7, 0xFFFE}


def wav_data_extent(data: bytes) -> tuple[int, int, int] | None:
    """(declared data bytes, data bytes the object holds, bytes per second) from a RIFF/RF64
    WAVE header; None for anything else, or a header that declares no usable size (streamed
    WAVs write 0 or 0xFFFFFFFF). FFmpeg clamps the declared size to the file's, so a WAV cut
    short would otherwise decode as an ordinary, shorter recording."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return None
    pos, fmt, ds64 = 12, None, None
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt " and body + 16 <= len(data):
            tag = int.from_bytes(data[body:body + 2], "little")
            rate = int.from_bytes(data[body + 4:body + 8], "little")
            align = int.from_bytes(data[body + 12:body + 14], "little")
            fmt = (tag, rate, align)
        elif chunk == b"ds64" and body + 24 <= len(data):
            ds64 = int.from_bytes(data[body + 8:body + 16], "little")
        elif chunk == b"data":
            declared = ds64 if (data[:4] == b"RF64" and size == 0xFFFFFFFF) else size
            if fmt is None or fmt[0] not in _FRAME_FORMATS or not fmt[1] or not fmt[2] \
                    or declared in (0, 0xFFFFFFFF) or declared is None:
                return None
            return declared, max(0, len(data) - body), fmt[1] * fmt[2]
        pos = body + size + (size & 1)
    return None


def av_error_text(exc: Exception) -> str:
    """FFmpeg's message without its errno ("[Errno 1094995529] Invalid data found ..." ->
    "Invalid data found when processing input")."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split("] ", 1)[1] if text.startswith("[Errno") and "] " in text else text


def _scrub(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """NaN/inf -> 0 and finite samples beyond full scale -> +-1 (float sources can hold any
    float, up to 3.4e38); returns the audio and how many of each there were."""
    finite = np.isfinite(x)
    nonfinite = int(x.size - np.count_nonzero(finite))
    if nonfinite:
        x = np.where(finite, x, np.float32(0.0))
    over = int(np.count_nonzero(np.abs(x) > 1.0))
    if over:
        x = np.clip(x, -1.0, 1.0)
    return x, nonfinite, over


def decode_audio_bytes(data: bytes, max_duration_s: float, min_decoded_fraction: float,
                       rate: int = PIPELINE_RATE_HZ, bandwidth_floor_db: float = 60.0,
                       clip_level: float = 0.99, tracks: bool = True) -> DecodedAudio:
    """Decode and resample to mono float32 at `rate` (the mean of the channels: no gain, so a
    level is the level of the source). Raises Rejected with a reason. On the way, every channel
    at its native rate feeds the level track and their mean the bandwidth track (neither keeps
    the audio whole); `tracks=False` skips both (re-reads for later stages)."""
    import av

    if not data:
        raise Rejected(reasons.EMPTY_OBJECT, "the object has 0 bytes")
    extent = wav_data_extent(data)
    if extent and extent[1] < min_decoded_fraction * extent[0]:
        declared, held, per_s = extent
        raise Rejected(reasons.TRUNCATED,
                       f"the WAV header declares {declared} bytes of audio "
                       f"({declared / per_s:.2f}s) but the object holds {held} "
                       f"({held / per_s:.2f}s)")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.error.FFmpegError as exc:
        raise Rejected(reasons.UNDECODABLE,
                       f"not a readable audio container: {av_error_text(exc)}") from exc
    with container:
        if not container.streams.audio:
            raise Rejected(reasons.NO_AUDIO_STREAM,
                           f"container '{container.format.name}' has no audio stream")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        declared_s = None
        if extent:
            declared_s = extent[0] / extent[2]
        elif stream.duration and stream.time_base:
            declared_s = float(stream.duration * stream.time_base)
        elif container.duration:
            declared_s = container.duration / 1_000_000
        if declared_s and declared_s > max_duration_s:
            raise Rejected(reasons.TOO_LONG,
                           f"declared duration {declared_s:.0f}s is over the {max_duration_s:.0f}s limit")

        native_rate = int(ctx.sample_rate or 0)
        to_float = to_mono = None
        bandwidth = levels = None
        chunks: list[np.ndarray] = []
        decoded = nonfinite = over = 0
        limit = int(max_duration_s * rate)
        error: Exception | None = None
        try:
            for frame in container.decode(stream):
                if to_float is None:
                    # the first frame tells the real rate and layout (headers can be wrong)
                    native_rate = int(frame.sample_rate or native_rate)
                    # packed float (interleaved): PyAV's planar to_ndarray crashes on 8 channels
                    to_float = av.AudioResampler(format="flt", layout=frame.layout,
                                                  rate=native_rate)
                    n_channels = len(frame.layout.channels)
                    to_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
                    if tracks:
                        bandwidth = NativeBandwidthTrack(native_rate, bandwidth_floor_db)
                        levels = LevelTrack(native_rate, channel_weights(
                            [c.name for c in frame.layout.channels]), clip_level)
                for packed in to_float.resample(frame):
                    x, bad, high = _scrub(packed.to_ndarray().reshape(-1, n_channels).T)
                    nonfinite, over = nonfinite + bad, over + high
                    mono = x.mean(axis=0, dtype=np.float32)
                    if tracks:
                        levels.feed(x)
                        bandwidth.feed(mono)
                    chunk = _resample(to_mono, mono, native_rate)
                    chunks.extend(chunk)
                    decoded += sum(c.size for c in chunk)
                if decoded > limit:
                    raise Rejected(reasons.TOO_LONG,
                                   f"decoded audio passed the {max_duration_s:.0f}s limit")
            if to_mono is not None:
                chunks.extend(_resample(to_mono, None, native_rate))
        except Rejected:
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            error = exc
        audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        got_s = audio.size / rate
        if error is not None:
            if audio.size == 0:
                raise Rejected(reasons.UNDECODABLE,
                               f"decoder error before any audio: {av_error_text(error)}")
            if declared_s and got_s < min_decoded_fraction * declared_s:
                raise Rejected(reasons.TRUNCATED,
                               f"decoded {got_s:.2f}s of a declared {declared_s:.2f}s, then: "
                               f"{av_error_text(error)}")
        if audio.size == 0:
            raise Rejected(reasons.UNDECODABLE, "the audio stream holds no samples")
        if declared_s and got_s < min_decoded_fraction * declared_s:
            raise Rejected(reasons.TRUNCATED,
                           f"decoded {got_s:.2f}s of a declared {declared_s:.2f}s")
        if tracks:
            bandwidth.finish()
            levels.finish()
        return DecodedAudio(audio, container.format.name, ctx.name, native_rate,
                            int(ctx.channels or 0), nonfinite, over,
                            bandwidth.to_bytes() if tracks else b"",
                            levels.to_bytes() if tracks else b"")


def _resample(resampler, mono: np.ndarray | None, native_rate: int) -> list[np.ndarray]:
    """Native-rate mono float32 -> chunks at the resampler's rate (None flushes it)."""
    import av

    frame = None
    if mono is not None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono[None, :]), format="fltp",
                                           layout="mono")
        frame.sample_rate = native_rate
    return [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]


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
                                       decode_cfg.min_decoded_fraction, rate=rate,
                                       tracks=False).audio
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
    adds = pa.schema(RECORDING_FIELDS + REJECT_FIELDS + [RECORDING_AUDIO_FIELD, NATIVE_TRACK_FIELD,
                                                         LEVEL_TRACK_FIELD])
    # I/O and decoding, no model: parallel tasks, one recording per batch to bound memory.
    resources = StageResources(num_cpus=0.5, concurrency=2, batch_size=1)

    @classmethod
    def config_kwargs(cls, cfg, storage, caption=None):
        return {"storage": storage, "input_cfg": cfg.input, "decode_cfg": cfg.decode,
                "bandwidth_floor_db": cfg.measures.bandwidth_floor_db,
                "clip_level": cfg.measures.clip_level}

    @classmethod
    def outcome_settings(cls, cfg):
        return {"extensions": sorted(e.lower() for e in cfg.input.extensions),
                "skip_extensions": sorted(e.lower() for e in cfg.input.skip_extensions),
                "probe_bytes": cfg.input.probe_bytes, "clip_level": cfg.measures.clip_level,
                "max_object_bytes": cfg.input.max_object_bytes, "decode": section(cfg.decode),
                "bandwidth_floor_db": cfg.measures.bandwidth_floor_db}

    def __init__(self, storage: StorageConfig, input_cfg: InputConfig, decode_cfg: DecodeConfig,
                 bandwidth_floor_db: float = 60.0, clip_level: float = 0.99):
        super().__init__()
        self.bandwidth_floor_db = bandwidth_floor_db
        # reached: the driver's preflight talked to the server, so a refused connection now is a
        # server restarting, worth waiting for (storage.retry_window_s).
        self.store = ObjectStore(storage, reached=True)
        self.input_cfg = input_cfg
        self.cfg = decode_cfg
        self.extensions = {e.lower() for e in input_cfg.extensions}
        self.skip = {e.lower() for e in input_cfg.skip_extensions}
        self.clip_level = clip_level

    def process_row(self, row: dict) -> None:
        row.update(self._one(row))

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
        if ext in self.skip:
            raise Rejected(reasons.UNSUPPORTED_EXTENSION,
                           f"'{ext}' is in input.skip_extensions (not audio); not read")
        if row["source_bytes"] == 0:
            raise Rejected(reasons.EMPTY_OBJECT, "the object has 0 bytes")
        if row["source_bytes"] > self.input_cfg.max_object_bytes:
            raise Rejected(reasons.OBJECT_TOO_LARGE,
                           f"{row['source_bytes']} bytes is over input.max_object_bytes="
                           f"{self.input_cfg.max_object_bytes}")
        try:
            if ext not in self.extensions and row["source_bytes"] > self.input_cfg.probe_bytes:
                self._probe(row, ext)
            data = self.store.get(row["source_uri"], etag=row["source_etag"])
        except StorageError as exc:
            # One unreadable object (e.g. replaced since listing) must not stop the run; a dead
            # store is caught before the run by the preflight check.
            raise Rejected(reasons.READ_ERROR, str(exc)) from exc
        decoded = decode_audio_bytes(data, self.cfg.max_duration_s, self.cfg.min_decoded_fraction,
                                     bandwidth_floor_db=self.bandwidth_floor_db,
                                     clip_level=self.clip_level)
        peak = peak_dbfs(decoded.audio)
        if peak < self.cfg.silence_peak_dbfs:
            raise Rejected(reasons.DIGITAL_SILENCE,
                           f"peak level {peak:.1f} dBFS is below {self.cfg.silence_peak_dbfs} dBFS")
        offset = float(np.mean(decoded.audio, dtype=np.float64))
        varying = peak_dbfs(decoded.audio - np.float32(offset))
        if varying < self.cfg.silence_peak_dbfs:
            # one constant value (pure DC): a level, but nothing anyone could hear
            raise Rejected(reasons.DIGITAL_SILENCE,
                           f"a constant signal (DC offset {offset:+.3f} of full scale): its "
                           f"variation peaks at {varying:.1f} dBFS, below "
                           f"{self.cfg.silence_peak_dbfs} dBFS")
        return {
            "source_container": decoded.container,
            "source_codec": decoded.codec,
            "source_sample_rate": decoded.sample_rate,
            "source_channels": decoded.channels,
            "recording_duration_s": decoded.audio.size / PIPELINE_RATE_HZ,
            "source_nonfinite_samples": decoded.nonfinite_samples,
            "source_out_of_range_samples": decoded.out_of_range_samples,
            "recording_audio": to_bytes(decoded.audio),
            "native_bandwidth_track": decoded.bandwidth_track,
            LEVEL_TRACK_FIELD.name: decoded.level_track,
        }

    def _probe(self, row: dict, ext: str) -> None:
        """An object whose extension is not a known audio one: read a bounded prefix and see
        whether it opens as an audio container before reading it all."""
        import av

        head = self.store.get_range(row["source_uri"], self.input_cfg.probe_bytes)
        try:
            with av.open(io.BytesIO(head), mode="r") as container:
                if container.streams.audio:
                    return
                what = f"opens as '{container.format.name}' but has no audio stream"
        except av.error.FFmpegError as exc:
            what = f"is not an audio container ({av_error_text(exc)})"
        raise Rejected(reasons.UNDECODABLE,
                       f"not audio: extension '{ext or '(none)'}' is not in input.extensions and "
                       f"its first {len(head)} bytes {what}")
