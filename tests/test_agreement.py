"""The agreement stage on controlled hypotheses: a transcript two model families confirm is kept
with the dissent recorded, same-family voters count once, and what nobody confirms is dropped
with a reason that names who disagreed."""
import pyarrow as pa

from operators.agreement import AgreementStage, system_families
from pipeline.config import load_config
from schemas import reasons
from schemas.config import AgreementConfig

FAMILIES = {"whisper-base": "whisper-ct2", "whisper-tiny-en": "whisper-ct2",
            "moonshine-base-en": "moonshine-onnx", "pocketsphinx-en": "pocketsphinx"}


def run(*segments, **cfg):
    rows = [{"segment_id": f"s{i}", "language": "en", "duration_s": 3.0, "drop_stage": None,
             "drop_reason": None, "drop_detail": None,
             "asr_hypotheses": [{"system": system, "model": f"{system}@1", "text": text,
                                 "confidence": 0.9} for system, text in hyps]}
            for i, hyps in enumerate(segments)]
    return AgreementStage(AgreementConfig(**cfg), FAMILIES)(pa.Table.from_pylist(rows)).to_pylist()


def test_two_families_agree_and_one_garbage_voter_is_recorded_not_obeyed():
    [row] = run([("whisper-base", "Four of clubs."), ("whisper-tiny-en", "4 of clubs"),
                 ("pocketsphinx-en", "for a club's or minute nine")])
    # pocketsphinx alone is not independent support; moonshine is absent: only whisper + sphinx
    assert row["drop_reason"] == reasons.ASR_DISAGREEMENT
    assert "pocketsphinx-en" in row["drop_detail"]
    [kept] = run([("whisper-base", "Four of clubs."), ("whisper-tiny-en", "4 of clubs"),
                  ("pocketsphinx-en", "you can get a competent and i'm there"),
                  ("moonshine-base-en", "four of clubs")])
    assert kept["drop_reason"] is None and kept["asr_agreement"] == 1.0
    assert kept["transcript"] == "Four of clubs." and kept["transcript_system"] == "whisper-base"
    assert set(kept["asr_support"]) == {"whisper-tiny-en", "moonshine-base-en"}
    [dissent] = kept["asr_dissent"]
    assert dissent["system"] == "pocketsphinx-en" and dissent["error"] > 0.9


def test_three_mutually_different_transcripts_are_dropped():
    [row] = run([("whisper-base", "the rain in spain"), ("pocketsphinx-en", "a cat on a mat"),
                 ("moonshine-base-en", "nothing like either")])
    assert row["drop_reason"] == reasons.ASR_DISAGREEMENT and row["asr_agreement"] < 0.6
    assert row["transcript_system"] == "whisper-base"      # the tie goes to the first system
    assert len(row["asr_dissent"]) == 2 and row["asr_support"] == []


def test_one_family_alone_is_unverified_not_a_disagreement():
    [row] = run([("whisper-base", "guten morgen"), ("whisper-tiny-en", "good morning")])
    assert row["drop_reason"] == reasons.UNVERIFIED and "1 model family(ies)" in row["drop_detail"]
    [single] = run([("whisper-base", "bonjour")])
    assert single["drop_reason"] == reasons.UNVERIFIED
    [kept] = run([("whisper-base", "bonjour")], unverified_policy="penalize",
                 unverified_score=0.4)
    assert kept["drop_reason"] is None and abs(kept["asr_agreement"] - 0.4) < 1e-6


def test_two_families_apart_and_families_from_the_config():
    rows = run([("whisper-base", "a b c"), ("moonshine-base-en", "x y z")])
    assert rows[0]["drop_reason"] == reasons.ASR_DISAGREEMENT
    cfg = load_config("configs/local.yaml")
    families = system_families(cfg)
    assert families["whisper-base"] == families["whisper-tiny-en"]
    assert len(set(families.values())) == len(families) - 1
