"""Acoustic events stage: an AudioSet tagger (registry entry, YAMNet by default) over every
segment, speech and non-speech alike.

Per segment: the top-k classes by mean frame score (with MIDs), the share of tagger frames that
hold speech, music, neither ("noise": any other sound) and speech over music, and the content
type, which the VAD's call is refined into:
- a VAD *speech* segment stays speech unless the tagger hears speech in none of its frames (Silero
  fires on some animal calls and instruments); then it becomes music or sound, and ASR skips it;
- a VAD *sound* segment becomes music when music fills at least `events.music_share` of its
  frames, else it stays sound.
A segment shorter than the tagger's window is zero-padded to one frame: it still gets a value.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from model_serving.audioset import MUSIC_MIDS, SPEECH_MIDS
from operators.audio import from_bytes
from operators.base import ModelStage, model_identity, section
from schemas.config import EventsConfig, StageResources
from schemas.tables import EVENT_FIELDS


def summarise(scores: np.ndarray, classes, cfg: EventsConfig) -> dict:
    """Frame scores (frames, classes) -> the EVENT_FIELDS of one segment (less content type)."""
    speech_cols = [c.index for c in classes if c.mid in SPEECH_MIDS]
    music_cols = [c.index for c in classes if c.mid in MUSIC_MIDS]
    mean = scores.mean(axis=0)
    top = np.argsort(-mean, kind="stable")[:cfg.top_k]
    speech = scores[:, speech_cols].max(axis=1) >= cfg.frame_threshold if speech_cols else \
        np.zeros(len(scores), bool)
    music = scores[:, music_cols].max(axis=1) >= cfg.frame_threshold if music_cols else \
        np.zeros(len(scores), bool)
    return {
        "event_labels": [{"mid": classes[i].mid, "name": classes[i].name,
                          "score": float(mean[i])} for i in top],
        "speech_fraction": float(speech.mean()),
        "music_fraction": float(music.mean()),
        "noise_fraction": float((~speech & ~music).mean()),
        "speech_music_fraction": float((speech & music).mean()),
        "event_frames": int(len(scores)),
    }


def refine_content_type(vad_type: str, summary: dict, music_share: float) -> str:
    if vad_type == "speech" and summary["speech_fraction"] > 0.0:
        return "speech"
    return "music" if summary["music_fraction"] >= music_share else "sound"


class EventsStage(ModelStage):
    """segment rows -> the same rows + EVENT_FIELDS, content_type refined."""

    name = "events"
    config_section = "events"
    requires = ("audio", "content_type", "reject_reason")
    adds = pa.schema(EVENT_FIELDS)
    # YAMNet int8 runs ~4 ms per 0.96 s patch on one thread: one small actor keeps up with ASR.
    resources = StageResources(num_cpus=0.5, concurrency=1, batch_size=8)

    @classmethod
    def outcome_settings(cls, cfg):
        return {**section(cfg.events, "cpu_threads", "model"),
                "model": model_identity(cfg, cfg.events.model)}

    cfg: EventsConfig

    def setup(self) -> None:
        from model_serving.event_tagger import load_event_tagger

        resolved = self.registry.resolve(self.cfg.model)
        self.tagger = load_event_tagger(resolved, cpu_threads=self.cfg.cpu_threads,
                                        device=self.cfg.device,
                                        work_dir=Path(self.registry.cache_dir))

    def process_row(self, row: dict) -> None:
        if row["reject_reason"] is not None:
            return
        audio = from_bytes(row["audio"])
        if audio.size == 0:
            return
        summary = summarise(self.tagger.frame_scores(audio), self.tagger.classes, self.cfg)
        row.update(summary, vad_content_type=row["content_type"],
                   event_model=self.tagger.model_label,
                   content_type=refine_content_type(row["content_type"], summary,
                                                    self.cfg.music_share))
