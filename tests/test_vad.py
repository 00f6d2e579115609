"""VAD stage on real decoded recordings: speech found where people speak, sound segments for
sound effects, near-silence rejected, rejects passed through, ids deterministic."""
import numpy as np
import pytest

from operators.audio import from_bytes
from operators.vad import VadSegmentStage
from pipeline.config import load_config
from schemas import reasons
from tests.conftest import LOCAL_CONFIG, TEST_BUCKET
from tests.helpers import decoded_for

KEYS = [
    "librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "librivox/sense_and_sensibility_01_austen_64kb-0920.opus",
    "tuxpaint/sound_effects/violin.ogg",
    "bad/near_silence.flac",
    "bad/empty.wav",
]


@pytest.fixture(scope="module")
def vad_output(demo_corpus):
    cfg = load_config(LOCAL_CONFIG)
    decoded = decoded_for(KEYS, TEST_BUCKET)
    stage = VadSegmentStage(cfg.segment, cfg.models, cfg.model_cache_dir)
    return decoded, stage(decoded), stage


def rows_of(table, name):
    return [r for r in table.to_pylist() if r["source_uri"].endswith(name)]


def test_speech_clip_is_one_speech_segment_covering_the_words(vad_output):
    _, out, _ = vad_output
    for name, seconds in (("0870.wav", 7.1), ("0920.opus", 6.05)):
        segs = rows_of(out, name)
        assert [s["content_type"] for s in segs] == ["speech"]
        seg = segs[0]
        assert seg["duration_s"] > 0.85 * seconds and seg["drop_reason"] is None
        assert seg["speech_prob_mean"] > 0.6
        assert seg["segment_id"] == f"{seg['recording_id']}-00000"
        audio = from_bytes(seg["audio"])
        assert audio.size == seg["end_sample"] - seg["start_sample"]
        assert seg["vad_model"].startswith("vad/silero-v6@")


def test_sound_effect_becomes_a_sound_segment(vad_output):
    _, out, _ = vad_output
    segs = rows_of(out, "violin.ogg")
    assert [s["content_type"] for s in segs] == ["sound"]
    assert segs[0]["duration_s"] > 2.5 and segs[0]["speech_prob_mean"] < 0.2


def test_near_silence_is_rejected_and_rejects_pass_through(vad_output):
    _, out, _ = vad_output
    [quiet] = rows_of(out, "near_silence.flac")
    assert quiet["reject_stage"] == "vad" and quiet["reject_reason"] == reasons.NO_AUDIBLE_CONTENT
    assert quiet["segment_id"] is None
    [empty] = rows_of(out, "empty.wav")
    assert empty["reject_stage"] == "decode" and empty["reject_reason"] == reasons.EMPTY_OBJECT
    assert "recording_audio" not in out.column_names and "audio" in out.column_names


def test_segmentation_is_deterministic(vad_output):
    decoded, out, stage = vad_output
    again = stage(decoded)
    cols = ["segment_id", "start_sample", "end_sample", "content_type"]
    assert again.select(cols).equals(out.select(cols))
    assert np.array_equal(
        np.concatenate([from_bytes(a) for a in again.column("audio").to_pylist() if a]),
        np.concatenate([from_bytes(a) for a in out.column("audio").to_pylist() if a]))
