"""VAD stage: one decoded recording -> its speech and sound segments (fan-out), or a reject.

Runs Silero VAD (from the registry) over the whole recording, applies the segment policy of
operators/segmenting.py, and emits one row per segment with its own audio slice. A recording
with neither speech nor sound above the floor becomes a reject (`no_audible_content`); rows
already rejected by decoding pass through untouched.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from operators.audio import from_bytes, rms_dbfs, to_bytes
from operators.base import ModelStage, model_identity, section
from operators.levels import slice_track
from operators.segmenting import FRAME, RATE, plan_segments
from schemas import reasons
from schemas.config import SegmentConfig, StageResources
from schemas.tables import (AUDIO_FIELD, DROP_FIELDS, LEVEL_TRACK_FIELD, RECORDING_AUDIO_FIELD,
                            SEGMENT_FIELDS)


def segment_id(recording_id: str, index: int) -> str:
    return f"{recording_id}-{index:05d}"


class VadSegmentStage(ModelStage):
    name = "vad"
    config_section = "segment"
    requires = ("recording_id", "reject_reason", "recording_audio")
    adds = pa.schema(SEGMENT_FIELDS + DROP_FIELDS + [AUDIO_FIELD])
    consumes = (RECORDING_AUDIO_FIELD.name,)
    # Silero runs at hundreds of times real time on one thread: one small actor suffices.
    resources = StageResources(num_cpus=0.5, concurrency=1, batch_size=1)

    @classmethod
    def outcome_settings(cls, cfg):
        return {**section(cfg.segment, "vad_model"),
                "model": model_identity(cfg, cfg.segment.vad_model)}

    cfg: SegmentConfig

    def setup(self) -> None:
        from model_serving.silero_vad import SileroVad

        resolved = self.registry.resolve(self.cfg.vad_model)
        self.vad = SileroVad(resolved)
        self.model_label = resolved.label

    def process_row(self, row: dict) -> list[dict] | None:
        audio_bytes = row.pop("recording_audio", None)
        if row["reject_reason"] is not None:
            return None
        return self._segments(row, from_bytes(audio_bytes))

    def _segments(self, row: dict, audio: np.ndarray) -> list[dict]:
        probs = self.vad.speech_probs(audio)
        planned = plan_segments(audio, probs, self.cfg)
        if not planned:
            return [{**row, "reject_stage": self.name,
                     "reject_reason": reasons.NO_AUDIBLE_CONTENT,
                     "reject_detail": "no speech, and no sound above "
                                      f"{self.cfg.sound_floor_dbfs} dBFS for "
                                      f"{self.cfg.min_sound_s}s or more"}]
        rows = []
        for index, seg in enumerate(planned):
            clip = audio[seg.start:seg.end]
            clip_bytes = to_bytes(clip)
            frame_probs = probs[seg.start // FRAME: max(seg.start // FRAME + 1, seg.end // FRAME)]
            rows.append({
                **row,
                "segment_id": segment_id(row["recording_id"], index),
                "segment_index": index,
                "content_type": seg.content_type,
                "start_s": seg.start / RATE,
                "end_s": seg.end / RATE,
                "duration_s": seg.duration_s,
                "start_sample": seg.start,
                "end_sample": seg.end,
                "speech_prob_mean": float(np.mean(frame_probs)) if frame_probs.size else 0.0,
                "rms_dbfs": rms_dbfs(clip),
                "vad_model": self.model_label,
                "drop_stage": self.name if seg.too_short else None,
                "drop_reason": reasons.TOO_SHORT if seg.too_short else None,
                "drop_detail": (f"speech segment of {seg.duration_s:.2f}s is under "
                                f"segment.min_speech_s={self.cfg.min_speech_s}")
                               if seg.too_short else None,
                # The same decoded audio under another key (a re-upload, a flac copy of a
                # wav) has the same hash: a release keeps one copy.
                "audio_sha256": hashlib.sha256(clip_bytes).hexdigest(),
                "audio": clip_bytes,
                # this segment's piece of the source channels' level track
                LEVEL_TRACK_FIELD.name: slice_track(row.get(LEVEL_TRACK_FIELD.name),
                                                    seg.start / RATE, seg.end / RATE),
            })
        return rows
