"""Quality score: components, per-content-type weights, hard gates (operators/quality.py)."""
import pytest

from operators.quality import assess, components, duration_fit, score
from schemas.config import QualityConfig

CFG = QualityConfig()
CLEAN_SPEECH = {"content_type": "speech", "asr_agreement": 0.95, "asr_confidence": 0.9,
                "snr_db": 32.0, "speech_fraction": 1.0, "clipped_ratio": 0.0, "duration_s": 8.0,
                "caption_description": "A man reads aloud.", "caption_flags": [],
                "caption_provenance": {"scene": "heard", "environment": "measured",
                                       "description": "heard"},
                "drop_reason": None}


def test_weighted_mean_matches_a_hand_computation():
    q = assess(CLEAN_SPEECH, CFG)
    w = CFG.weights["speech"]
    expected = (w["agreement"] * 0.95 + w["confidence"] * 0.9 + w["snr"] + w["content"]
                + w["clipping"] + w["duration"] + w["caption"]) / sum(w.values())
    assert q["quality_score"] == pytest.approx(expected)
    assert q["quality_eligible"] and q["quality_gate"] is None


@pytest.mark.parametrize("change, component", [
    ({"asr_agreement": 0.7}, "agreement"),
    ({"snr_db": 12.0}, "snr"),
    ({"speech_fraction": 0.5}, "content"),
    ({"clipped_ratio": 0.005}, "clipping"),
    ({"duration_s": 26.0}, "duration"),
    ({"caption_flags": ["corrected:speaker_count"]}, "caption"),
])
def test_each_worse_measurement_lowers_its_component_and_the_score(change, component):
    base, worse = assess(CLEAN_SPEECH, CFG), assess({**CLEAN_SPEECH, **change}, CFG)
    assert worse[f"q_{component}"] < base[f"q_{component}"]
    assert worse["quality_score"] < base["quality_score"]
    others = [k for k in base if k.startswith("q_") and k != f"q_{component}"]
    assert all(worse[k] == base[k] for k in others)  # one cause, one column


def test_the_caption_component_follows_how_its_fields_were_obtained():
    """Heard or measured fields count fully, a text model's inferences count
    inferred_caption_credit, unknown nothing; a row without provenance counts as inferred."""
    def caption(**prov):
        return components({**CLEAN_SPEECH, "caption_provenance": prov or None}, CFG)["caption"]

    heard = caption(scene="heard", environment="measured", description="heard")
    inferred = caption(scene="inferred", environment="inferred", description="inferred")
    mixed = caption(scene="inferred", environment="measured", description="measured")
    unknown = caption(scene="unknown", environment="unknown", description="unknown")
    assert heard == 1.0 and unknown == 0.0
    assert inferred == pytest.approx(CFG.inferred_caption_credit)
    assert mixed == pytest.approx((CFG.inferred_caption_credit + 2) / 3)
    assert caption() == pytest.approx(CFG.inferred_caption_credit)
    assert assess({**CLEAN_SPEECH, "caption_provenance": {
        "scene": "inferred", "environment": "inferred", "description": "inferred"}},
        CFG)["quality_score"] < assess(CLEAN_SPEECH, CFG)["quality_score"]


def test_sound_segments_are_scored_without_asr_components():
    sound = {"content_type": "sound", "snr_db": 20.0, "noise_fraction": 0.9,
             "clipped_ratio": 0.0, "duration_s": 4.0, "drop_reason": None}
    parts = components(sound, CFG)
    assert parts["agreement"] is None and parts["confidence"] is None
    assert parts["content"] == 0.9 and parts["caption"] is None  # captions off: left out
    q = assess(sound, CFG)
    assert 0.0 < q["quality_score"] <= 1.0 and q["quality_eligible"]
    # ASR numbers on a sound segment (they should not exist) change nothing.
    assert assess({**sound, "asr_agreement": 0.1}, CFG)["quality_score"] == q["quality_score"]


def test_a_failed_caption_counts_zero_and_missing_captions_count_nothing():
    failed = {**CLEAN_SPEECH, "caption_description": None, "caption_source": "text_features"}
    off = {**CLEAN_SPEECH, "caption_description": None, "caption_source": None}
    assert components(failed, CFG)["caption"] == 0.0
    assert components(off, CFG)["caption"] is None
    assert assess(failed, CFG)["quality_score"] < assess(off, CFG)["quality_score"]


@pytest.mark.parametrize("change, gate", [
    ({"drop_reason": "asr_disagreement"}, "dropped:asr_disagreement"),
    ({"duration_s": 0.8}, "min_duration_s"),
    ({"snr_db": 1.0}, "min_snr_db"),
    ({"asr_agreement": 0.5}, "min_agreement"),
    ({"asr_agreement": None}, "min_agreement"),
])
def test_hard_gates_make_a_segment_ineligible_and_are_named(change, gate):
    q = assess({**CLEAN_SPEECH, **change}, CFG)
    assert q["quality_gate"] == gate and not q["quality_eligible"]


def test_duration_fit_is_one_inside_the_ideal_range_and_falls_to_zero_outside():
    limits = [1.0, 3.0, 20.0, 30.0]
    assert [duration_fit(d, limits) for d in (0.5, 1.0, 2.0, 3.0, 10.0, 20.0, 25.0, 30.0, 40.0)] \
        == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0])


def test_score_is_none_without_any_component():
    assert score(dict.fromkeys(["snr", "content"]), CFG.weights["sound"]) is None


def test_agreement_of_rows_before_schema_7_is_left_out_not_misread():
    # Before schema 7 asr_agreement averaged every pair of systems; one wrong system pulled it
    # down. The score uses only the new meaning; the gate still applies to old rows.
    new = assess({**CLEAN_SPEECH, "asr_agreement": 0.62, "schema_version": 7}, CFG)
    old = assess({**CLEAN_SPEECH, "asr_agreement": 0.62, "schema_version": 6}, CFG)
    assert new["q_agreement"] == pytest.approx(0.62) and old["q_agreement"] is None
    w = CFG.weights["speech"]
    rest = {k: v for k, v in w.items() if k != "agreement"}
    expected = (w["confidence"] * 0.9 + sum(rest.values()) - w["confidence"]) / sum(rest.values())
    assert old["quality_score"] == pytest.approx(expected)
    assert assess({**CLEAN_SPEECH, "asr_agreement": 0.5, "schema_version": 6},
                  CFG)["quality_gate"] == "min_agreement"
