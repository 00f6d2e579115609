"""A model reply -> a typed, valid `Caption`, or the reasons it cannot be one.

Three steps, each recorded: repair (only if the reply is not strict JSON: `json-repair` fixes
markdown fences, trailing commas, single quotes, comments, truncation), type (`dacite`, strict:
an extra key is an error, so an injected field can never enter the table), validate (enums,
ranges, required fields, one-sentence description). Nothing here raises on bad model output.
"""
from __future__ import annotations

import json
import re

import dacite

from schemas.captions import (ENUMS, MAX_DESCRIPTION_CHARS, MAX_SPEAKERS, REQUIRED,
                              SPEAKER_ENUMS, Caption, CaptionOutcome)

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_LANGUAGE_TAG = re.compile(r"^([a-z]{2,3})[-_][a-z0-9-]+$")  # BCP 47 (en-US): keep the language
_FIELDS = set(REQUIRED) | {"language"}


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
        value = next((v for v in value if isinstance(v, dict) and _FIELDS & set(v)), None)
    if not isinstance(value, dict) or not value:
        return None, True, "no JSON object in the reply"
    return value, True, None


def _normalise(obj: dict) -> dict:
    """Case and whitespace of enum values; models write 'Indoor ' as often as 'indoor', and
    'en-US' where the schema asks for 'en' (llama.cpp's grammar does not enforce `pattern`)."""
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
        out["description"] = out["description"].strip()
    return out


def validate(obj: dict) -> list[str]:
    """Every way `obj` breaks the caption schema; empty when it is valid."""
    errors = [f"unexpected field '{k}'" for k in obj if k not in _FIELDS]
    errors += [f"missing field '{k}'" for k in REQUIRED if k not in obj]
    for key, allowed in ENUMS.items():
        if key in obj and obj[key] not in allowed:
            errors.append(f"{key}={obj[key]!r} is not one of {list(allowed)}")
    count = obj.get("speaker_count")
    if "speaker_count" in obj and (not isinstance(count, int) or isinstance(count, bool)
                                   or not 0 <= count <= MAX_SPEAKERS):
        errors.append(f"speaker_count={count!r} is not an integer in [0, {MAX_SPEAKERS}]")
    speakers = obj.get("speakers")
    if "speakers" in obj:
        if not isinstance(speakers, list) or len(speakers) > MAX_SPEAKERS:
            errors.append(f"speakers must be a list of at most {MAX_SPEAKERS} objects")
        else:
            for i, spk in enumerate(speakers):
                if not isinstance(spk, dict):
                    errors.append(f"speakers[{i}] is not an object")
                    continue
                errors += [f"speakers[{i}]: unexpected field '{k}'"
                           for k in spk if k not in SPEAKER_ENUMS]
                for key, allowed in SPEAKER_ENUMS.items():
                    if spk.get(key) not in allowed:
                        errors.append(f"speakers[{i}].{key}={spk.get(key)!r} is not one of "
                                      f"{list(allowed)}")
    lang = obj.get("language")
    if lang is not None and not (isinstance(lang, str) and _LANGUAGE.match(lang)):
        errors.append(f"language={lang!r} is not an ISO 639 code")
    desc = obj.get("description")
    if "description" in obj:
        if not isinstance(desc, str) or len(desc) < 10:
            errors.append("description is empty or shorter than 10 characters")
        elif len(desc) > MAX_DESCRIPTION_CHARS or "\n" in desc:
            errors.append(f"description is not one sentence (over {MAX_DESCRIPTION_CHARS} "
                          f"characters, or several lines)")
    return errors


def parse_caption(raw: str) -> CaptionOutcome:
    """Repair -> type -> validate one reply. `outcome.caption` is None when it is not valid."""
    outcome = CaptionOutcome(raw=raw)
    obj, outcome.repaired, error = extract_object(raw or "")
    if obj is None:
        outcome.errors.append(error or "no JSON object in the reply")
        return outcome
    obj = _normalise(obj)
    outcome.errors = validate(obj)
    if outcome.errors:
        return outcome
    try:
        outcome.caption = dacite.from_dict(Caption, obj, config=dacite.Config(strict=True))
    except dacite.DaciteError as exc:
        outcome.errors.append(f"does not type as Caption: {exc}")
    return outcome
