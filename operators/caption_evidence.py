"""What the measurements allow a caption to say: the scene and environment values the evidence
permits, the environment when it is measured, and the speakers' genders.

The text model only chooses among these (operators/caption.py builds its request schema from
them, so constrained decoding cannot pick a value the evidence contradicts); a value outside them
from an endpoint that ignores the schema is replaced by "unknown" and flagged.

- Scenes come from the content type, the speaker count and the AudioSet tags the event tagger
  heard (score >= TAG_MIN_SCORE), through the ontology's groups (model_serving/audioset.py): a
  speech segment can be a reading or a lecture, "animals" only where an animal was tagged, music
  is "music" (or "singing" where singing was tagged), never a speech scene.
- Environment `telephone` is measured: narrowband speech, recorded at 8 kHz or less or whose
  bandwidth ends at or below TELEPHONE_MAX_HZ. Narrowband telephony carries 300-3400 Hz; the
  bandwidth measure (operators/bandwidth.py, 62.5 Hz bins, the median edge of the loud windows)
  read 3.9-4.1 kHz on real speech filtered to 300-3400 Hz and 3.7-4.6 kHz on speech recorded at
  8 kHz, and at least 5.4 kHz on every wideband recording of the caption bench. The value
  means "telephone-band audio": a radio link of the same band reads the same. Otherwise
  indoor/outdoor/vehicle only where the tags say so.
- Gender per speaker is measured from pitch by the speaker stages (operators/voice.py). Age and
  emotion stay "unknown": no model shipped here hears them.
"""
from __future__ import annotations

from model_serving.audioset import (ANIMAL_MIDS, CROWD_MIDS, HOUSEHOLD_MIDS, INDOOR_MIDS,
                                    MUSIC_MIDS, NATURE_MIDS, OFFICE_MIDS, OUTDOOR_MIDS,
                                    SINGING_MIDS, VEHICLE_MIDS)
from schemas.captions import UNKNOWN

TAG_MIN_SCORE = 0.1           # a tag's mean score over the segment for it to count as heard
TELEPHONE_MAX_HZ = 4700.0     # speech band-limited at or below this: telephone band
NARROWBAND_RATE_HZ = 8000     # ...and so is speech recorded at this rate or less
URBAN_MID, RURAL_MID = "/t/dd00128", "/t/dd00129"

SPEECH_SCENES_ONE = ("speech", "reading", "lecture", "broadcast")
SPEECH_SCENES_MANY = ("speech", "conversation", "interview", "broadcast")
# AudioSet group -> the scenes its tags make possible
GROUP_SCENES = ((ANIMAL_MIDS, ("animals",)), (NATURE_MIDS, ("nature",)),
                (VEHICLE_MIDS, ("vehicle", "street")), (HOUSEHOLD_MIDS, ("household",)),
                (OFFICE_MIDS, ("office",)), (CROWD_MIDS, ("crowd",)),
                (frozenset({URBAN_MID}), ("street",)), (frozenset({RURAL_MID}), ("nature",)))
GROUP_ENVIRONMENTS = ((INDOOR_MIDS | HOUSEHOLD_MIDS | OFFICE_MIDS, "indoor"),
                      (OUTDOOR_MIDS | NATURE_MIDS, "outdoor"), (VEHICLE_MIDS, "vehicle"))


def heard_tags(row: dict) -> list[dict]:
    """The event tags heard in the segment, best first."""
    return [e for e in row.get("event_labels") or [] if (e.get("score") or 0) >= TAG_MIN_SCORE]


def _mids(row: dict) -> set[str]:
    return {e.get("mid") for e in heard_tags(row)} - {None}


def _ordered(values) -> tuple[str, ...]:
    seen: list[str] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return tuple(seen)


def scene_candidates(row: dict) -> tuple[str, ...]:
    mids, content = _mids(row), row.get("content_type")
    out: list[str] = []
    if content == "music":
        out += ["singing"] if mids & SINGING_MIDS else []
        out.append("music")
    elif content == "speech":
        count = row.get("speaker_count")
        out += SPEECH_SCENES_MANY if count is not None and count >= 2 else SPEECH_SCENES_ONE
        if mids & MUSIC_MIDS:
            out.append("music")
    # groups in the order of their best tag's score: the likeliest scene first
    best = {}
    for tag in heard_tags(row):
        for k, (group, _) in enumerate(GROUP_SCENES):
            if tag.get("mid") in group:
                best[k] = max(best.get(k, 0.0), float(tag["score"]))
    for k in sorted(best, key=lambda k: -best[k]):
        out += GROUP_SCENES[k][1]
    if content == "sound":
        out.append("other")
    return _ordered(out + [UNKNOWN])


def measured_environment(row: dict) -> str | None:
    """The environment the measurements establish on their own, or None."""
    if row.get("content_type") != "speech":
        return None
    bandwidth, rate = row.get("bandwidth_hz"), row.get("source_sample_rate")
    if (rate and rate <= NARROWBAND_RATE_HZ) or (bandwidth and 0 < bandwidth <= TELEPHONE_MAX_HZ):
        return "telephone"
    return None


def environment_candidates(row: dict) -> tuple[str, ...]:
    measured = measured_environment(row)
    if measured:
        return (measured,)
    mids = _mids(row)
    return _ordered([env for group, env in GROUP_ENVIRONMENTS if mids & group] + [UNKNOWN])


def speaker_genders(row: dict) -> list[str]:
    """One gender per speaker of the segment (speaker_ids order), "unknown" where not measured."""
    count = row.get("speaker_count") or 0
    genders = list(row.get("speaker_genders") or [])
    return (genders + [UNKNOWN] * count)[:count]
