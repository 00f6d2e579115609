"""A model reply -> the model's typed, valid fields, or the reasons it cannot give them.

Three steps, each recorded: repair (only if the reply is not strict JSON: `json-repair` fixes
markdown fences, trailing commas, single quotes, comments, truncation), type (`dacite`, strict:
an extra key is an error, so an injected field can never enter the table), validate (enums,
lengths, required fields). Nothing here raises on bad model output.

The model is asked only for its own fields (schemas/captions.py `model_fields`). An endpoint
that ignores `response_format` may still write the fields the pipeline owns (content type,
language, speaker count; a text model's voice fields): those are set aside in `said`, never
taken; the caption stage compares them with its measurements and flags where they differed.
Any other key makes the reply invalid.
"""
from __future__ import annotations

import json
import re

import dacite

from schemas.captions import (ENUMS, MAX_DESCRIPTION_CHARS, MAX_SPEAKERS, MIN_DESCRIPTION_CHARS,
                              SPEAKER_ENUMS, CaptionOutcome, model_fields, pipeline_fields,
                              reply_type)

_LANGUAGE_TAG = re.compile(r"^([a-z]{2,3})[-_][a-z0-9-]+$")  # BCP 47 (en-US): keep the language
_ANY_FIELD = set(model_fields(True)) | set(pipeline_fields(False))


def extract_object(raw: str) -> tuple[dict | None, bool, str | None]:
    """(object, repaired, error). Strict JSON first; json-repair only when that fails."""
    text = raw.strip()
    try:
        value = json.loads(text)
        if isinstance(value, dict):
            return value, False, None
    except ValueError:
        pass
    import json_repair

    try:
        value = json_repair.loads(text)
    except Exception as exc:  # noqa: BLE001 - the repairer's own failure is a verdict too
        return None, True, f"json-repair failed: {type(exc).__name__}: {exc}"
    if isinstance(value, list):  # several objects (a looping model): the first that fits
        value = next((v for v in value if isinstance(v, dict) and _ANY_FIELD & set(v)), None)
    if not isinstance(value, dict) or not value:
        return None, True, "no JSON object in the reply"
    return value, True, None


def normalise(obj: dict) -> dict:
    """Case and whitespace of enum values (models write 'Indoor ' as often as 'indoor'), the
    language of a BCP 47 tag ('en-US' -> 'en'), and the description's whitespace collapsed to
    single spaces: the grammar lets a model write a newline escape inside a string, and a
    constrained reply must never fail validation for what the grammar allowed."""
    out = dict(obj)
    for key in ENUMS:
        if isinstance(out.get(key), str):
            out[key] = out[key].strip().lower()
    if isinstance(out.get("speakers"), list):
        out["speakers"] = [
            {k: (v.strip().lower() if isinstance(v, str) and k in SPEAKER_ENUMS else v)
             for k, v in s.items()} if isinstance(s, dict) else s
            for s in out["speakers"]]
    if isinstance(out.get("language"), str):
        lang = out["language"].strip().lower()
        tag = _LANGUAGE_TAG.match(lang)
        out["language"] = (tag.group(1) if tag else lang) or None
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].split())
    return out


def _speaker_errors(speakers: object) -> list[str]:
    if not isinstance(speakers, list) or len(speakers) > MAX_SPEAKERS:
        return [f"speakers must be a list of at most {MAX_SPEAKERS} objects"]
    errors = []
    for i, spk in enumerate(speakers):
        if not isinstance(spk, dict):
            errors.append(f"speakers[{i}] is not an object")
            continue
        errors += [f"speakers[{i}]: unexpected field '{k}'" for k in spk if k not in SPEAKER_ENUMS]
        for key, allowed in SPEAKER_ENUMS.items():
            if spk.get(key) not in allowed:
                errors.append(f"speakers[{i}].{key}={spk.get(key)!r} is not one of "
                              f"{list(allowed)}")
    return errors


def validate(obj: dict, hears_audio: bool) -> list[str]:
    """Every way `obj` breaks the reply contract; empty when it is valid. Only the model's own
    fields are checked for values: the pipeline's fields are never taken from a reply."""
    own = model_fields(hears_audio)
    allowed = set(own) | set(pipeline_fields(hears_audio))
    errors = [f"unexpected field '{k}'" for k in obj if k not in allowed]
    errors += [f"missing field '{k}'" for k in own if k not in obj]
    for key in own:
        if key not in obj:
            continue
        value = obj[key]
        if key in ENUMS and value not in ENUMS[key]:
            errors.append(f"{key}={value!r} is not one of {list(ENUMS[key])}")
        elif key == "speakers":
            errors += _speaker_errors(value)
        elif key == "description":
            if not isinstance(value, str) or len(value) < MIN_DESCRIPTION_CHARS:
                errors.append(f"description is empty or shorter than {MIN_DESCRIPTION_CHARS} "
                              f"characters")
            elif len(value) > MAX_DESCRIPTION_CHARS:
                errors.append(f"description is over {MAX_DESCRIPTION_CHARS} characters")
    return errors


def parse_reply(raw: str, hears_audio: bool) -> CaptionOutcome:
    """Repair -> type -> validate one reply. `outcome.reply` is None when it is not valid."""
    outcome = CaptionOutcome(raw=raw)
    obj, outcome.repaired, error = extract_object(raw or "")
    if obj is None:
        outcome.errors.append(error or "no JSON object in the reply")
        return outcome
    obj = normalise(obj)
    outcome.errors = validate(obj, hears_audio)
    if outcome.errors:
        return outcome
    own = model_fields(hears_audio)
    outcome.said = {k: v for k, v in obj.items() if k not in own}
    try:
        outcome.reply = dacite.from_dict(reply_type(hears_audio),
                                         {k: obj[k] for k in own},
                                         config=dacite.Config(strict=True))
    except dacite.DaciteError as exc:
        outcome.errors.append(f"does not type as a caption reply: {exc}")
    return outcome
