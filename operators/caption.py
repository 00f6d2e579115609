"""Caption stage: each kept segment -> a typed caption from an OpenAI-compatible chat endpoint.

In: segment rows with the features of the earlier stages (transcript, language, events, speakers,
measures). Out: the CAPTION_FIELDS columns, and `drop_reason` caption_error / caption_invalid for
a segment whose caption cannot be had. Only segments without a drop reason are captioned.

Per request: bounded concurrency (a thread pool of `caption.concurrency`), a socket timeout,
retries with exponential backoff and jitter, and one circuit breaker per worker: when the endpoint
is dead the stage raises `EndpointDown` and the run stops with that message instead of hanging.

The caption is then reconciled with what the pipeline measured: content type, language and speaker
count come from the measurements; a caption that says otherwise is corrected and flagged
(`corrected:<field>`). A text model that only saw the features cannot know voices: those fields
are "unknown" and listed in `caption_unheard_fields`.
"""
from __future__ import annotations

import dataclasses
import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from model_serving.chat_client import ChatClient, EndpointDown, EndpointError
from model_serving.resilience import CallStats, CircuitBreaker, RetryPolicy, call_with_retries
from operators.base import Stage, rows_to_table
from operators.caption_parse import parse_caption
from operators.caption_prompt import build_messages
from operators.logs import stage_logger
from operators.storage import ObjectStore
from schemas import reasons
from schemas.captions import (UNHEARD_BY_TEXT_MODEL, UNKNOWN, Caption, SpeakerCaption,
                              caption_json_schema)
from schemas.config import CaptionConfig, DecodeConfig, StageResources, StorageConfig
from schemas.tables import CAPTION_FIELDS, DROP_FIELDS

log = stage_logger("caption")

SOURCE_AUDIO = "audio_model"
SOURCE_FEATURES = "text_features"


def measured_values(row: dict) -> dict:
    """The caption fields the pipeline measured for this segment (absent = not measured)."""
    out = {"content_type": row.get("content_type")}
    if row.get("content_type") != "speech":
        out.update(language=None, speaker_count=0)  # no speech was found in it
    else:
        if row.get("language"):
            out["language"] = row["language"]
        if row.get("speaker_count") is not None:
            out["speaker_count"] = int(row["speaker_count"])
    return out


def reconcile(caption: Caption, row: dict, hears_audio: bool) -> tuple[Caption, list[str]]:
    """Measured fields override the caption's; voice fields a text model cannot know become
    "unknown". Returns the caption and the flags saying what was changed."""
    flags = []
    changes = {}
    for key, value in measured_values(row).items():
        if getattr(caption, key) != value:
            changes[key] = value
            flags.append(f"corrected:{key}")
    count = changes.get("speaker_count", caption.speaker_count)
    blank = SpeakerCaption(UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN)
    speakers = list(caption.speakers)
    if not hears_audio:
        # One unknown entry per speaker: a text model never heard a voice.
        if caption.emotion != UNKNOWN or any(s != blank for s in speakers):
            flags.append("cleared:unheard")
        changes["emotion"] = UNKNOWN
        speakers = [blank] * count
    elif len(speakers) != count:
        speakers = (speakers + [blank] * count)[:count]
        flags.append("corrected:speakers")
    changes["speakers"] = speakers
    return dataclasses.replace(caption, **changes), flags


def caption_columns(caption: Caption) -> dict:
    return {
        "caption_scene": caption.scene, "caption_environment": caption.environment,
        "caption_emotion": caption.emotion, "caption_content_type": caption.content_type,
        "caption_language": caption.language, "caption_speaker_count": caption.speaker_count,
        "caption_speakers": [dataclasses.asdict(s) for s in caption.speakers],
        "caption_description": caption.description,
    }


class CaptionStage(Stage):
    name = "caption"
    requires = ("segment_id", "content_type", "drop_reason")
    adds = pa.schema(CAPTION_FIELDS + DROP_FIELDS)
    # An actor: it keeps the HTTP pool and the circuit breaker across batches. It mostly waits
    # on the endpoint, so it claims little CPU; `caption.concurrency` sets requests in flight.
    uses_model = True
    resources = StageResources(num_cpus=0.25, concurrency=1, batch_size=16)

    def __init__(self, cfg: CaptionConfig, endpoint_url: str, model_label: str,
                 storage: StorageConfig | None = None, decode_cfg: DecodeConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.endpoint_url = endpoint_url
        self.model_label = model_label
        self.storage = storage
        self.decode_cfg = decode_cfg or DecodeConfig()
        self.hears_audio = cfg.endpoint.hears_audio
        self.schema = caption_json_schema(self.hears_audio)

    def setup(self) -> None:
        if not self.cfg.enabled:
            return
        if not self.endpoint_url:
            raise ValueError("the caption stage needs its endpoint URL: the driver resolves it "
                             "(pipeline/caption_service.py) and passes it to build_dataset")
        key = os.environ.get(self.cfg.endpoint.api_key_env) if self.cfg.endpoint.api_key_env \
            else None
        self.client = ChatClient(self.endpoint_url, self.cfg.endpoint.model, api_key=key,
                                 timeout_s=self.cfg.timeout_s)
        self.policy = RetryPolicy(self.cfg.max_attempts, self.cfg.backoff_base_s,
                                  self.cfg.backoff_max_s)
        self.breaker = CircuitBreaker(self.cfg.breaker_failures, self.endpoint_url)
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency,
                                       thread_name_prefix="caption")
        self.rng = random.Random(self.cfg.seed)
        self.store = ObjectStore(self.storage, reached=True) if self.hears_audio else None

    def process(self, batch: pa.Table) -> pa.Table:
        if not self.cfg.enabled:
            return batch  # caption columns stay null
        rows = batch.to_pylist()
        todo = [i for i, r in enumerate(rows) if r.get("segment_id") and not r.get("drop_reason")]
        audio, unreadable = self._segment_audio(rows, todo) if self.hears_audio and todo \
            else ({}, {})
        for i, why in unreadable.items():
            rows[i].update(drop_stage=self.name, drop_reason=reasons.CAPTION_ERROR,
                           drop_detail=f"the segment audio could not be read again: {why}")
        futures = {i: self.pool.submit(self._caption, rows[i], audio.get(i))
                   for i in todo if i not in unreadable}
        try:
            for i, fut in futures.items():
                rows[i].update(fut.result())
        except EndpointDown:
            for fut in futures.values():
                fut.cancel()
            raise
        return rows_to_table(rows, self.output_schema(batch.schema))

    def _caption(self, row: dict, audio: np.ndarray | None) -> dict:
        source = SOURCE_AUDIO if self.hears_audio else SOURCE_FEATURES
        out = {"caption_source": source, "caption_model": self.model_label}
        messages = build_messages(row, self.schema, self.hears_audio,
                                  self.cfg.max_transcript_chars, audio)
        stats = CallStats()
        try:
            reply = call_with_retries(
                lambda: self.client.complete(
                    messages, max_tokens=self.cfg.max_tokens, temperature=0.0,
                    seed=self.cfg.seed, json_schema=self.schema if self.cfg.constrained else None),
                self.policy, self.breaker, stats, rng=self.rng)
        except EndpointDown:
            raise
        except EndpointError as exc:
            log.warning("segment %s: caption endpoint failed after %d attempts: %s",
                        row["segment_id"], stats.attempts, exc)
            return {**out, "caption_attempts": stats.attempts, "caption_errors": stats.errors,
                    "drop_stage": self.name, "drop_reason": reasons.CAPTION_ERROR,
                    "drop_detail": f"caption endpoint: {exc}"[:500]}
        outcome = parse_caption(reply.text)
        out.update(caption_raw=reply.text, caption_repaired=outcome.repaired,
                   caption_errors=outcome.errors, caption_attempts=stats.attempts,
                   caption_prompt_tokens=reply.prompt_tokens,
                   caption_completion_tokens=reply.completion_tokens)
        flags = ["truncated"] if reply.finish_reason == "length" else []
        if outcome.caption is None:
            return {**out, "caption_flags": flags, "drop_stage": self.name,
                    "drop_reason": reasons.CAPTION_INVALID,
                    "drop_detail": "; ".join(outcome.errors[:3])[:500]}
        caption, corrections = reconcile(outcome.caption, row, self.hears_audio)
        return {**out, **caption_columns(caption), "caption_flags": flags + corrections,
                "caption_unheard_fields": [] if self.hears_audio else list(UNHEARD_BY_TEXT_MODEL)}

    def _segment_audio(self, rows: list[dict], todo: list[int]
                       ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """For a model that hears: the segment audio is not carried past the per-recording
        speaker step (it would travel through a shuffle), so it is read again here."""
        from operators.decode import read_segments

        return read_segments(self.store, rows, todo, self.decode_cfg)
