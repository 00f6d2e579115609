"""The caption record: what the captioner produces for one segment, as typed dataclasses, the
closed vocabularies of its fields, who writes each field, and the JSON schema the model follows.

The model is asked only for what it can know: a text model that saw the features chooses the
scene and environment and writes the description; a model that hears also gives the emotion and
the speakers' voices. Content type, language and speaker count are measured by the pipeline and
never requested. One source of truth: the request schema, the reply dataclasses (which `dacite`
fills strictly), and the validation in `operators/caption_parse.py` are all built from the
constants below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from schemas.provenance import HEARD, INFERRED, MEASURED
from schemas.provenance import UNKNOWN as UNKNOWN_SOURCE

UNKNOWN = "unknown"

SCENES = ("speech", "conversation", "interview", "lecture", "reading", "broadcast", "music",
          "singing", "nature", "animals", "street", "vehicle", "household", "office", "crowd",
          "sports", "other", UNKNOWN)
ENVIRONMENTS = ("indoor", "outdoor", "studio", "vehicle", "telephone", UNKNOWN)
EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "surprised", "calm", "excited",
            UNKNOWN)
GENDERS = ("male", "female", UNKNOWN)
AGE_GROUPS = ("child", "teen", "adult", "senior", UNKNOWN)
SPEAKING_STYLES = ("conversational", "read", "narrative", "announcement", "shouting",
                   "whispering", "singing", UNKNOWN)
CONTENT_TYPES = ("speech", "music", "sound")

MAX_SPEAKERS = 8
MIN_DESCRIPTION_CHARS = 10
MAX_DESCRIPTION_CHARS = 300

# Who writes which field of the record. The model is asked only for what it can know; the
# pipeline writes the rest, and every field's provenance (schemas/provenance.py) says which.
MEASURED_FIELDS = ("content_type", "language", "speaker_count")  # the pipeline, always
VOICE_FIELDS = ("emotion", "speakers")     # a model that hears; otherwise unknown
DESCRIBED_FIELDS = ("scene", "environment", "description")      # the model, always

# Per-field provenance, one key per caption field (the speakers' fields one key each).
PROVENANCE_KEYS = ("scene", "environment", "emotion", "content_type", "language",
                   "speaker_count", "speaker_gender", "speaker_age_group", "speaker_emotion",
                   "speaker_speaking_style", "description")

# What a text model that only saw the extracted features cannot know: it never heard a voice.
# Those fields are stored as "unknown" for text-only captions and listed per row.
UNHEARD_BY_TEXT_MODEL = ("emotion", "speakers.gender", "speakers.age_group", "speakers.emotion",
                         "speakers.speaking_style")


@dataclass(frozen=True)
class SpeakerCaption:
    gender: str
    age_group: str
    emotion: str
    speaking_style: str


@dataclass(frozen=True)
class Caption:
    """One segment described: the model's fields and the pipeline's, put together.
    `language` is an ISO 639-1 code, or None where nobody speaks; `speaker_count` is None where
    the pipeline could not count (a segment too short for the speaker model)."""

    scene: str
    environment: str
    emotion: str
    content_type: str
    speaker_count: Optional[int]
    speakers: list[SpeakerCaption]
    description: str
    language: Optional[str] = None


@dataclass(frozen=True)
class TextReply:
    """What a text model that only saw the features writes."""

    scene: str
    environment: str
    description: str


@dataclass(frozen=True)
class HeardReply:
    """What a model that heard the audio writes."""

    scene: str
    environment: str
    emotion: str
    speakers: list[SpeakerCaption]
    description: str


# field -> allowed values, for the enum checks and the schema
ENUMS: dict[str, tuple[str, ...]] = {
    "scene": SCENES, "environment": ENVIRONMENTS, "emotion": EMOTIONS,
    "content_type": CONTENT_TYPES,
}
SPEAKER_ENUMS: dict[str, tuple[str, ...]] = {
    "gender": GENDERS, "age_group": AGE_GROUPS, "emotion": EMOTIONS,
    "speaking_style": SPEAKING_STYLES,
}


def model_fields(hears_audio: bool) -> tuple[str, ...]:
    """The fields the model is asked for, in the order it should write them (the description
    last, once it has decided the rest)."""
    return ("scene", "environment") + (VOICE_FIELDS if hears_audio else ()) + ("description",)


def pipeline_fields(hears_audio: bool) -> tuple[str, ...]:
    """The fields the pipeline writes itself (a reply may still contain them, from an endpoint
    that ignores the schema: they are compared, flagged and overridden, never taken)."""
    return MEASURED_FIELDS + (() if hears_audio else VOICE_FIELDS)


def reply_type(hears_audio: bool) -> type:
    return HeardReply if hears_audio else TextReply


def request_schema(hears_audio: bool, speaker_count: Optional[int] = None,
                   scenes: tuple[str, ...] = SCENES,
                   environments: tuple[str, ...] = ENVIRONMENTS) -> dict:
    """The JSON schema sent as `response_format`: constrained decoding follows it token by token,
    so every field is a closed enum or a length-bounded string and a constrained reply is always
    valid. For a model that hears, the speakers list has exactly the measured speaker count.
    `scenes` and `environments` narrow the choice to what the evidence allows
    (operators/caption_evidence.py)."""
    def enum(values: tuple[str, ...]) -> dict:
        return {"type": "string", "enum": list(values)}

    assert set(scenes) <= set(SCENES) and set(environments) <= set(ENVIRONMENTS)
    props: dict = {"scene": enum(scenes), "environment": enum(environments)}
    if hears_audio:
        props["emotion"] = enum(EMOTIONS)
        speaker = {"type": "object",
                   "properties": {k: enum(v) for k, v in SPEAKER_ENUMS.items()},
                   "required": list(SPEAKER_ENUMS), "additionalProperties": False}
        count = {"minItems": speaker_count, "maxItems": speaker_count} \
            if speaker_count is not None else {"maxItems": MAX_SPEAKERS}
        props["speakers"] = {"type": "array", "items": speaker, **count}
    props["description"] = {"type": "string", "minLength": MIN_DESCRIPTION_CHARS,
                            "maxLength": MAX_DESCRIPTION_CHARS}
    assert tuple(props) == model_fields(hears_audio)
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


def field_provenance(hears_audio: bool) -> dict[str, str]:
    """Where each caption field comes from, for a model that hears or one that only reads."""
    model = HEARD if hears_audio else INFERRED
    voice = HEARD if hears_audio else UNKNOWN_SOURCE
    out = {key: voice for key in PROVENANCE_KEYS
           if key == "emotion" or key.startswith("speaker_") and key != "speaker_count"}
    out.update({key: model for key in DESCRIBED_FIELDS})
    out.update({key: MEASURED for key in MEASURED_FIELDS})
    return {key: out[key] for key in PROVENANCE_KEYS}


@dataclass
class CaptionOutcome:
    """What the caption step made of one model reply (or of its failure)."""

    reply: Optional[object] = None        # a TextReply / HeardReply when the reply is valid
    said: dict = field(default_factory=dict)  # pipeline fields the reply wrote anyway
    raw: Optional[str] = None
    repaired: bool = False
    errors: list[str] = field(default_factory=list)   # why the reply is not a valid caption
