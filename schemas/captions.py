"""The caption record: what the captioner must produce for one segment, as typed dataclasses, the
closed vocabularies of its fields, and the JSON schema the model is asked to follow.

One source of truth: the JSON schema, the dataclasses (which `dacite` fills strictly), and the
validation in `operators/caption_parse.py` are all built from the constants below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

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
MAX_DESCRIPTION_CHARS = 300

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
    """One segment described. `language` is an ISO 639-1 code, or None where nobody speaks."""

    scene: str
    environment: str
    emotion: str
    content_type: str
    speaker_count: int
    speakers: list[SpeakerCaption]
    description: str
    language: Optional[str] = None


# field -> allowed values, for the enum checks and the schema
ENUMS: dict[str, tuple[str, ...]] = {
    "scene": SCENES, "environment": ENVIRONMENTS, "emotion": EMOTIONS,
    "content_type": CONTENT_TYPES,
}
SPEAKER_ENUMS: dict[str, tuple[str, ...]] = {
    "gender": GENDERS, "age_group": AGE_GROUPS, "emotion": EMOTIONS,
    "speaking_style": SPEAKING_STYLES,
}
REQUIRED = ("scene", "environment", "emotion", "content_type", "speaker_count", "speakers",
            "description")


def caption_json_schema(hears_audio: bool = True) -> dict:
    """The JSON schema sent as `response_format`; constrained decoding follows it token by token.
    Keys appear in the order a model should write them (the description last, once it knows).
    For a model that cannot hear, the fields only a listener could know allow "unknown" alone."""
    def enum(key: str, values: tuple[str, ...]) -> dict:
        heard_only = not hears_audio and key in UNHEARD_BY_TEXT_MODEL
        return {"type": "string", "enum": [UNKNOWN] if heard_only else list(values)}

    speaker = {
        "type": "object",
        "properties": {k: enum(f"speakers.{k}", v) for k, v in SPEAKER_ENUMS.items()},
        "required": list(SPEAKER_ENUMS),
        "additionalProperties": False,
    }
    props = {
        "scene": enum("scene", SCENES),
        "environment": enum("environment", ENVIRONMENTS),
        "emotion": enum("emotion", EMOTIONS),
        "content_type": enum("content_type", CONTENT_TYPES),
        "language": {"type": ["string", "null"], "pattern": "^[a-z]{2,3}$"},
        "speaker_count": {"type": "integer", "minimum": 0, "maximum": MAX_SPEAKERS},
        # A text model cannot describe a voice: its speakers list stays empty (the pipeline
        # fills in one "unknown" entry per measured speaker), which saves ~25 tokens each.
        "speakers": {"type": "array", "items": speaker,
                     "maxItems": MAX_SPEAKERS if hears_audio else 0},
        "description": {"type": "string", "minLength": 10,
                        "maxLength": MAX_DESCRIPTION_CHARS},
    }
    return {"type": "object", "properties": props, "required": list(REQUIRED) + ["language"],
            "additionalProperties": False}


@dataclass
class CaptionOutcome:
    """What the caption step made of one model reply (or of its failure)."""

    caption: Optional[Caption] = None
    raw: Optional[str] = None
    repaired: bool = False
    errors: list[str] = field(default_factory=list)   # why the reply is not a valid caption
    flags: list[str] = field(default_factory=list)    # corrections made afterwards
