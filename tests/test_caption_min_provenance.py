"""`release.caption_min_provenance`: caption fields less sure than the minimum ship as unknown."""
import pyarrow as pa
import pytest

from pipeline.release_select import VIEW_SCHEMA, hold_captions_to
from schemas.captions import PROVENANCE_KEYS


def _prov(**over):
    base = {k: "measured" for k in PROVENANCE_KEYS}
    base.update(scene="inferred", environment="measured", description="inferred",
                emotion="unknown", speaker_gender="measured", speaker_age_group="unknown",
                speaker_emotion="unknown", speaker_speaking_style="unknown")
    base.update(over)
    return base


def _speaker(gender):
    return {"gender": gender, "age_group": "unknown", "emotion": "unknown",
            "speaking_style": "unknown"}


ROWS = [
    # the embedded text captioner: scene inferred, telephone measured, gender measured
    {"caption_scene": "reading", "caption_environment": "telephone", "caption_emotion": "unknown",
     "caption_description": "A woman reads.", "caption_speakers": [_speaker("female")],
     "caption_provenance": _prov()},
    # a model that heard: everything heard, the description replaced by the template
    {"caption_scene": "music", "caption_environment": "indoor", "caption_emotion": "calm",
     "caption_description": "Music: violin.", "caption_speakers": [],
     "caption_provenance": _prov(scene="heard", environment="heard", emotion="heard",
                                 description="measured")},
    # written before provenance existed (schema < 6): counts as inferred
    {"caption_scene": "animals", "caption_environment": "outdoor", "caption_emotion": "unknown",
     "caption_description": "Animals are creatures.", "caption_speakers": [_speaker("male"),
                                                                           _speaker("unknown")],
     "caption_provenance": None},
    # no caption at all
    {"caption_scene": None, "caption_environment": None, "caption_emotion": None,
     "caption_description": None, "caption_speakers": None, "caption_provenance": None},
]


def _table(rows):
    fields = [VIEW_SCHEMA.field(n) for n in ROWS[0]]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def test_inferred_minimum_changes_nothing():
    table = _table(ROWS)
    assert hold_captions_to(table, "inferred").equals(table)
    assert hold_captions_to(table, "unknown").equals(table)


@pytest.mark.parametrize("sliced", [False, True])
def test_heard_minimum_removes_every_text_guess(sliced):
    # sliced: a block that is a slice of a larger one (offsets not starting at 0)
    table = _table(ROWS * 2).slice(4, 4) if sliced else _table(ROWS)
    out = hold_captions_to(table, "heard").to_pylist()
    text, heard, old, empty = out
    assert (text["caption_scene"], text["caption_environment"]) == ("unknown", "telephone")
    assert text["caption_description"] is None
    assert text["caption_speakers"] == [_speaker("female")]       # measured stays
    assert (heard["caption_scene"], heard["caption_emotion"],
            heard["caption_description"]) == ("music", "calm", "Music: violin.")
    assert old["caption_scene"] == "unknown" and old["caption_description"] is None
    assert [s["gender"] for s in old["caption_speakers"]] == ["unknown", "unknown"]
    assert empty["caption_scene"] is None and empty["caption_speakers"] is None


def test_measured_minimum_keeps_only_measurements():
    out = hold_captions_to(_table(ROWS), "measured").to_pylist()
    assert out[1]["caption_scene"] == "unknown" and out[1]["caption_emotion"] == "unknown"
    assert out[1]["caption_description"] == "Music: violin."      # composed from the facts
    assert out[0]["caption_environment"] == "telephone"


def test_held_fields_say_unknown_in_the_provenance_the_shards_carry():
    """A trainer reads caption_provenance from the shards (schemas/release.py): a field the
    release held to "unknown" must not still claim to be inferred."""
    from schemas.release import SHARD_SCHEMA

    assert "caption_provenance" in SHARD_SCHEMA.names
    text, heard, old, empty = [r["caption_provenance"] for r in
                               hold_captions_to(_table(ROWS), "heard").to_pylist()]
    assert text["scene"] == "unknown" and text["description"] == "unknown"
    assert text["environment"] == "measured" and text["speaker_gender"] == "measured"
    assert text["language"] == "measured"                          # not a held field
    assert heard["scene"] == "heard" and heard["description"] == "measured"
    # no provenance written (before schema 6): what was held is unknown now
    assert old["scene"] == "unknown" and old["speaker_gender"] == "unknown"
    assert old["language"] is None
