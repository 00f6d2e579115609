"""Speaker gender from pitch (operators/voice.py) on real male and female recordings
(codec2-examples), alone and through the two speaker stages as the DAG runs them."""
import numpy as np
import pyarrow as pa
import pytest

from infra.demo_corpus import CODEC2, CODEC2_VOICES, read_audio, telephone_band
from operators.audio import to_bytes
from operators.pitch import FUNDAMENTAL_BAND_MIN_DB, f0_track, fundamental_band_db
from operators.speakers import SpeakerClusterStage, SpeakerEmbedStage
from operators.voice import (F0_MAX_HZ, F0_MIN_HZ, gender_of, pooled_median, segment_window_pitch,
                             window_pitch)
from pipeline.config import load_config
from tests.conftest import LOCAL_CONFIG

RATE = 16000
pytestmark = pytest.mark.skipif(not CODEC2.exists(), reason="codec2-examples not installed "
                                "(make install installs it)")


def _gender(audio: np.ndarray) -> tuple[str, float, float | None]:
    f0, times = f0_track(audio, F0_MIN_HZ, F0_MAX_HZ)
    starts = np.arange(0.0, max(times[-1] - 1.6, 0.0) + 1e-9, 0.8)
    medians, voiced, frames = window_pitch(f0, times, starts, 1.6, 0.8)
    median = pooled_median(medians, voiced)
    return (*gender_of(median, sum(voiced), sum(frames)), median)


def test_every_known_voice_gets_its_gender_and_nothing_is_guessed_on_noise():
    results = {name: _gender(read_audio(CODEC2 / f"{name}.wav")) for name in CODEC2_VOICES}
    wrong = {n: r for n, r in results.items()
             if r[0] != "unknown" and r[0] != CODEC2_VOICES[n]}
    assert not wrong, results
    given = [n for n, r in results.items() if r[0] != "unknown"]
    assert len(given) >= 7, results      # measured: 8 of 8 given
    # A recording that is mostly not voiced speech (HF radio hiss, 2-4% voiced frames) must not
    # get a gender from the few frames that are: a pitch of 260 Hz there would say "female".
    for name in ("mmt1", "david4"):
        assert _gender(read_audio(CODEC2 / f"{name}.wav"))[0] == "unknown", name


def test_telephone_band_speech_gets_the_gender_of_its_wideband_original():
    """Filtered to 300-3400 Hz the fundamental is gone and WORLD on the signal reads a harmonic
    (a man at ~330 Hz, "female"); the segment is then tracked on its envelope, which must give
    each known voice its own gender and a median within 10% of the wideband one (measured: 0.2-
    2.4% on these five; hts1a reads 84 vs 110 Hz and stays male)."""
    for name in ("morig", "m2400", "forig", "f2400", "hts1a"):
        audio = read_audio(CODEC2 / f"{name}.wav")
        assert fundamental_band_db(audio) > FUNDAMENTAL_BAND_MIN_DB
        phone = telephone_band(audio)
        assert fundamental_band_db(phone) < FUNDAMENTAL_BAND_MIN_DB
        raw = f0_track(phone, F0_MIN_HZ, F0_MAX_HZ)[0]
        assert np.median(raw[raw > 0]) > 250, name      # the failure this path exists for
        windows = max(1, int((phone.size / RATE - 1.6) // 0.8) + 1)
        medians, voiced, frames = segment_window_pitch(phone, windows, 0.8, 1.6)
        median = pooled_median(medians, voiced)
        assert gender_of(median, sum(voiced), sum(frames))[0] == CODEC2_VOICES[name], name
        wide = pooled_median(*segment_window_pitch(audio, windows, 0.8, 1.6)[:2])
        if name != "hts1a":
            assert abs(median / wide - 1) < 0.10, (name, median, wide)


def test_the_rule_itself():
    assert gender_of(110.0, 400, 800) == ("male", 1.0)
    assert gender_of(200.0, 400, 800)[0] == "female"
    assert gender_of(150.0, 400, 800)[0] == "unknown"   # between the two ranges
    assert gender_of(200.0, 50, 800)[0] == "unknown"    # 0.25 s voiced: too little
    assert gender_of(200.0, 400, 4000)[0] == "unknown"  # 10% voiced: noise, not a voice
    assert gender_of(None, 0, 0)[0] == "unknown"
    assert pooled_median([100.0, None, 200.0, 210.0], [10, 0, 1, 1]) == 100.0


def test_genders_per_speaker_through_the_speaker_stages(tmp_path):
    """A woman (forig, f2400, hts2a), then a man (morig, m2400, hts1a): each segment's speakers
    get the gender of their own windows, and the straddling segment names both."""
    cfg = load_config(LOCAL_CONFIG)
    pause = np.zeros(RATE // 5, np.float32)

    def voice(names):
        return np.concatenate([x for n in names for x in (read_audio(CODEC2 / f"{n}.wav"), pause)])

    woman, man = voice(["forig", "f2400", "hts2a"] * 2), voice(["morig", "m2400", "hts1a"] * 2)
    parts = [woman, np.concatenate([woman[-3 * RATE:], man[:3 * RATE]]), man]
    n = len(parts)
    table = pa.table({
        "recording_id": ["rec-1"] * n, "segment_index": list(range(n)),
        "content_type": ["speech"] * n, "duration_s": [p.size / RATE for p in parts],
        "reject_reason": pa.nulls(n, pa.string()), "audio": [to_bytes(p) for p in parts]})
    embedded = SpeakerEmbedStage(cfg.speakers, cfg.models, str(tmp_path))(table)
    out = SpeakerClusterStage(cfg.speakers)(embedded.drop_columns(["audio"])).to_pylist()
    assert "speaker_window_pitch" not in out[0]
    first, last = out[0], out[2]
    assert "female" in first["speaker_genders"] and "male" not in first["speaker_genders"], first
    assert "male" in last["speaker_genders"] and "female" not in last["speaker_genders"], last
    for row in out:
        assert len(row["speaker_genders"]) == len(row["speaker_ids"]) == len(row["speaker_f0_hz"])
        for gender, f0 in zip(row["speaker_genders"], row["speaker_f0_hz"]):
            assert gender == "unknown" or (gender == "male") == (f0 < 150), row
