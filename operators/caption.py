"""Caption stage: each kept segment -> a typed caption from an OpenAI-compatible chat endpoint.

In: segment rows with the features of the earlier stages (transcript, language, events, speakers,
measures). Out: the CAPTION_FIELDS columns, and `drop_reason` caption_error / caption_invalid for
a segment whose caption cannot be had. Only segments without a drop reason are captioned.

Per request: bounded concurrency (a thread pool of `caption.concurrency`), a socket timeout,
retries with exponential backoff and jitter, and one circuit breaker per worker: when the endpoint
is dead the stage raises `EndpointDown` and the run stops with that message instead of hanging.

The model is asked only for what it can know (schemas/captions.py): content type, language and
speaker count are measured and written by the pipeline, never requested; a text model that only
saw the features is not asked for voices either (those fields are "unknown", listed in
`caption_unheard_fields`). `caption_provenance` says for every field whether it was measured,
heard, inferred or is unknown. A reply from an endpoint that ignores the schema and writes a
pipeline field anyway is flagged where it differed (`corrected:<field>`).

The model only chooses and phrases: the scene and environment it may pick are those the evidence
allows (operators/caption_evidence.py; the request schema is built from them), a measured
telephone line and measured speaker genders replace what it said, and the grounding check
(operators/grounding.py) replaces a description that asserts what the transcript and the facts
do not support by one composed from the facts (`caption_description_source`,
`caption_grounding`).
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
from operators.base import Stage, model_identity
from operators.caption_evidence import (environment_candidates, measured_environment,
                                        scene_candidates, speaker_genders)
from operators.caption_parse import parse_reply
from operators.grounding import problems, template
from operators.caption_prompt import build_messages
from operators.logs import stage_logger
from operators.storage import ObjectStore
from schemas import reasons
from schemas.captions import (MEASURED_FIELDS, UNHEARD_BY_TEXT_MODEL, UNKNOWN, Caption,
                              HeardReply, SpeakerCaption, TextReply, field_provenance,
                              request_schema)
from schemas.provenance import MEASURED
from schemas.provenance import UNKNOWN as UNKNOWN_SOURCE
from schemas.config import CaptionConfig, DecodeConfig, StageResources, StorageConfig
from schemas.tables import CAPTION_FIELDS, DROP_FIELDS

log = stage_logger("caption")

SOURCE_AUDIO = "audio_model"
SOURCE_FEATURES = "text_features"


def measured_values(row: dict) -> dict:
    """The caption fields the pipeline measured for this segment: they are never asked of the
    model. A segment the speaker model could not count has speaker_count None."""
    if row.get("content_type") != "speech":
        # No speech was found in it: no language, nobody speaking.
        return {"content_type": row.get("content_type"), "language": None, "speaker_count": 0}
    count = row.get("speaker_count")
    return {"content_type": row.get("content_type"), "language": row.get("language") or None,
            "speaker_count": None if count is None else int(count)}


def _differs(said: object, measured: object) -> bool:
    """Whether a value a reply wrote differs from the measurement (a count of 1.0 is 1; True is
    not 1)."""
    if isinstance(said, bool) or isinstance(measured, bool):
        return said is not measured
    if isinstance(said, float) and isinstance(measured, int) and said.is_integer():
        return int(said) != measured
    return said != measured


def compose(reply: TextReply | HeardReply, said: dict, row: dict, hears_audio: bool
            ) -> tuple[Caption, list[str]]:
    """The caption record: the model's fields from its reply, the measured ones from the row.
    Returns it with flags that say where the reply wrote a pipeline field differently
    (`corrected:<field>`), where a text model claimed to know a voice (`cleared:unheard`), and
    where a hearing model's speaker list did not have the measured length (`corrected:speakers`)."""
    measured = measured_values(row)
    flags = [f"corrected:{key}" for key in MEASURED_FIELDS
             if key in said and _differs(said[key], measured[key])]
    count = measured["speaker_count"]
    blank = SpeakerCaption(UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN)
    if hears_audio:
        emotion, speakers = reply.emotion, list(reply.speakers)
        if count is not None and len(speakers) != count:
            speakers = (speakers + [blank] * count)[:count]
            flags.append("corrected:speakers")
    else:
        # A text model never heard a voice: one unknown entry per measured speaker.
        emotion, speakers = UNKNOWN, [blank] * (count or 0)
        claimed = said.get("emotion") not in (None, UNKNOWN) or any(
            isinstance(s, dict) and any(v != UNKNOWN for v in s.values())
            for s in said.get("speakers") or [])
        if claimed:
            flags.append("cleared:unheard")
    caption = Caption(scene=reply.scene, environment=reply.environment, emotion=emotion,
                      content_type=measured["content_type"], speaker_count=count,
                      speakers=speakers, description=reply.description,
                      language=measured["language"])
    return caption, flags


def apply_evidence(caption: Caption, row: dict, hears_audio: bool
                   ) -> tuple[Caption, list[str], set[str]]:
    """Hold the model's choices to what the measurements allow (operators/caption_evidence.py):
    a scene or environment the evidence does not permit becomes "unknown", a measured environment
    and measured speaker genders replace the model's; each replaced value is flagged
    `corrected:<field>` (the model's word stays in caption_raw). Returns the caption, flags, and
    the keys now measured."""
    flags, measured = [], set()
    scene, environment, speakers = caption.scene, caption.environment, list(caption.speakers)
    if scene not in scene_candidates(row):
        flags.append("corrected:scene")
        scene = UNKNOWN
    fixed = measured_environment(row)
    if fixed:
        if environment not in (fixed, UNKNOWN):
            flags.append("corrected:environment")
        environment = fixed
        measured.add("environment")
    elif environment not in environment_candidates(row):
        flags.append("corrected:environment")
        environment = UNKNOWN
    genders = speaker_genders(row) if caption.content_type == "speech" else []
    if any(g != UNKNOWN for g in genders) and len(genders) == len(speakers):
        for i, gender in enumerate(genders):
            if gender == UNKNOWN:
                continue
            if hears_audio and speakers[i].gender not in (gender, UNKNOWN):
                flags.append("corrected:speakers.gender")
            speakers[i] = dataclasses.replace(speakers[i], gender=gender)
        measured.add("speaker_gender")
    return dataclasses.replace(caption, scene=scene, environment=environment,
                               speakers=speakers), flags, measured


def ground(caption: Caption, row: dict) -> tuple[Caption, list[str], str]:
    """The grounding check (operators/grounding.py): a description asserting what the transcript
    and the facts do not support is replaced by the sentence composed from the facts. Returns the
    caption, the problems found, and the description's source ("model" or "template")."""
    found = problems(caption.description, row, [s.gender for s in caption.speakers])
    if not found:
        return caption, [], "model"
    return (dataclasses.replace(caption, description=template(row, caption.environment,
                                                              caption.scene)),
            found, "template")


def provenance(caption: Caption, hears_audio: bool, measured: set[str] = frozenset()
               ) -> dict[str, str]:
    """Per-field provenance of a caption: the model's fields heard or inferred, the pipeline's
    measured (and `measured`: fields the evidence fixed), and a value nobody could tell (a
    speaker count the speaker model could not give) unknown."""
    out = field_provenance(hears_audio)
    out.update({key: MEASURED for key in measured})
    if caption.speaker_count is None:
        out["speaker_count"] = UNKNOWN_SOURCE
    return out


def caption_columns(caption: Caption, hears_audio: bool, measured: set[str] = frozenset(),
                    description_source: str = "model", grounding: list[str] = ()) -> dict:
    prov = provenance(caption, hears_audio, measured)
    unheard = [] if hears_audio else [
        f for f in UNHEARD_BY_TEXT_MODEL if not (f == "speakers.gender" and
                                                 "speaker_gender" in measured)]
    return {
        "caption_scene": caption.scene, "caption_environment": caption.environment,
        "caption_emotion": caption.emotion, "caption_content_type": caption.content_type,
        "caption_language": caption.language, "caption_speaker_count": caption.speaker_count,
        "caption_speakers": [dataclasses.asdict(s) for s in caption.speakers],
        "caption_description": caption.description,
        "caption_description_source": description_source,
        "caption_grounding": list(grounding),
        "caption_provenance": prov,
        "caption_unheard_fields": unheard,
    }


class CaptionStage(Stage):
    name = "caption"
    requires = ("segment_id", "content_type", "drop_reason")
    adds = pa.schema(CAPTION_FIELDS + DROP_FIELDS)
    # An actor: it keeps the HTTP pool and the circuit breaker across batches. It mostly waits
    # on the endpoint, so it claims little CPU; `caption.concurrency` sets requests in flight.
    runs_as_actor = True
    resources = StageResources(num_cpus=0.25, concurrency=1, batch_size=16)

    @classmethod
    def config_kwargs(cls, cfg, storage, caption=None):
        return {"cfg": cfg.caption, "endpoint_url": caption.url if caption else None,
                "model_label": caption.model_label if caption else None,
                "storage": storage, "decode_cfg": cfg.decode}

    @classmethod
    def outcome_settings(cls, cfg):
        c = cfg.caption
        model = model_identity(cfg, c.local_server.model) if not c.endpoint.url \
            else {"endpoint": c.endpoint.url, "name": c.endpoint.model}
        return {"enabled": c.enabled, "model": model, "hears_audio": c.endpoint.hears_audio,
                "constrained": c.constrained, "max_tokens": c.max_tokens, "seed": c.seed,
                "max_transcript_chars": c.max_transcript_chars}

    def __init__(self, cfg: CaptionConfig, endpoint_url: str, model_label: str,
                 storage: StorageConfig | None = None, decode_cfg: DecodeConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.endpoint_url = endpoint_url
        self.model_label = model_label
        self.storage = storage
        self.decode_cfg = decode_cfg or DecodeConfig()
        self.hears_audio = cfg.endpoint.hears_audio

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
            self.drop(rows[i], reasons.CAPTION_ERROR,
                      f"the segment audio could not be read again: {why}")
        futures = {i: self.pool.submit(self._caption, rows[i], audio.get(i))
                   for i in todo if i not in unreadable}
        try:
            for i, fut in futures.items():
                rows[i].update(fut.result())
        except EndpointDown:
            for fut in futures.values():
                fut.cancel()
            raise
        return self.to_table(rows, batch)

    def _caption(self, row: dict, audio: np.ndarray | None) -> dict:
        source = SOURCE_AUDIO if self.hears_audio else SOURCE_FEATURES
        out = {"caption_source": source, "caption_model": self.model_label}
        schema = request_schema(self.hears_audio, measured_values(row)["speaker_count"],
                                scenes=scene_candidates(row),
                                environments=environment_candidates(row))
        messages = build_messages(row, schema, self.hears_audio,
                                  self.cfg.max_transcript_chars, audio)
        stats = CallStats()
        try:
            reply = call_with_retries(
                lambda: self.client.complete(
                    messages, max_tokens=self.cfg.max_tokens, temperature=0.0,
                    seed=self.cfg.seed, json_schema=schema if self.cfg.constrained else None),
                self.policy, self.breaker, stats, rng=self.rng)
        except EndpointDown:
            raise
        except EndpointError as exc:
            log.warning("segment %s: caption endpoint failed after %d attempts: %s",
                        row["segment_id"], stats.attempts, exc)
            return {**out, "caption_attempts": stats.attempts, "caption_errors": stats.errors,
                    "drop_stage": self.name, "drop_reason": reasons.CAPTION_ERROR,
                    "drop_detail": f"caption endpoint: {exc}"[:500]}
        outcome = parse_reply(reply.text, self.hears_audio)
        out.update(caption_raw=reply.text, caption_repaired=outcome.repaired,
                   caption_errors=outcome.errors, caption_attempts=stats.attempts,
                   caption_prompt_tokens=reply.prompt_tokens,
                   caption_completion_tokens=reply.completion_tokens)
        flags = ["truncated"] if reply.finish_reason == "length" else []
        if outcome.reply is None:
            return {**out, "caption_flags": flags, "drop_stage": self.name,
                    "drop_reason": reasons.CAPTION_INVALID,
                    "drop_detail": "; ".join(outcome.errors[:3])[:500]}
        caption, corrections = compose(outcome.reply, outcome.said, row, self.hears_audio)
        caption, held, measured = apply_evidence(caption, row, self.hears_audio)
        caption, found, source = ground(caption, row)
        if source == "template":
            measured.add("description")
        return {**out, **caption_columns(caption, self.hears_audio, measured, source, found),
                "caption_flags": flags + corrections + held
                + (["corrected:description"] if found else [])}

    def _segment_audio(self, rows: list[dict], todo: list[int]
                       ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """For a model that hears: the segment audio is not carried past the per-recording
        speaker step (it would travel through a shuffle), so it is read again here."""
        from operators.decode import read_segments

        return read_segments(self.store, rows, todo, self.decode_cfg)
