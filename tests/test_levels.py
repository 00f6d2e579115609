"""Levels measured on the source channels as recorded (operators/levels.py): stereo, 5.1 and 7.1
files made from real speech at known levels read their true peak and BS.1770 loudness, a stereo
sine at -3 dBFS is not clipping, integer PCM never reads above 0 dBFS, and float files holding
NaN, inf and 3.4e38 are scrubbed (and counted) before anything is measured."""
import io

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from infra.demo_corpus import LIBRIVOX, read_audio
from operators.bandwidth import segment_bandwidth
from operators.decode import decode_audio_bytes
from operators.levels import channel_weights, segment_levels, slice_track
from operators.measures import MeasuresStage
from schemas.config import MeasuresConfig


def wav(frames: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, frames, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="module")
def speech():
    audio = read_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav")
    return (audio / np.abs(audio).max() * 10 ** (-1 / 20)).astype(np.float32)  # -1 dBFS peak


def levels_of(data: bytes, start_s: float = 0.0, end_s: float = 1e9):
    decoded = decode_audio_bytes(data, 3600, 0.9)
    return decoded, segment_levels(slice_track(decoded.level_track, start_s, end_s))


@pytest.mark.parametrize("channels", [1, 2, 6, 8])
def test_speech_at_a_known_level_reads_that_level_in_any_layout(speech, channels):
    import pyloudnorm

    mono_lufs = pyloudnorm.Meter(16000).integrated_loudness(speech.astype(np.float64))
    frames = np.repeat(speech[:, None], channels, axis=1) if channels > 1 else speech
    decoded, lv = levels_of(wav(frames, 16000))
    # peak of the channels as recorded: -1 dBFS, not the +2 to +12 dBFS of a summing downmix
    assert abs(lv["peak_dbfs"] - (-1.0)) < 0.01
    assert abs(20 * np.log10(np.abs(decoded.audio).max()) - (-1.0)) < 0.05  # the mean: no gain
    # BS.1770: identical channels add their weights (LFE 0, surrounds 1.41)
    weights = channel_weights(["NONE"] * channels)
    expected = mono_lufs + 10 * np.log10(weights.sum())
    assert abs(lv["loudness_lufs"] - expected) < 0.05, (lv, expected)
    if channels <= 5:
        assert abs(lv["loudness_lufs"] - pyloudnorm.Meter(16000).integrated_loudness(
            frames.astype(np.float64))) < 0.05
    assert lv["clipped_ratio"] == 0.0


def test_a_stereo_sine_at_minus_3_dbfs_is_not_clipping():
    rate = 48000
    sine = (10 ** (-3 / 20) * np.sin(2 * np.pi * 440 * np.arange(rate * 3) / rate))
    decoded, lv = levels_of(wav(np.stack([sine, sine], axis=1), rate))
    assert round(lv["peak_dbfs"], 2) == -3.00 and lv["clipped_ratio"] == 0.0
    row = {"audio": decoded.audio.tobytes(), "content_type": "sound", "start_s": 0.0,
           "end_s": 3.0, "drop_stage": None, "drop_reason": None, "drop_detail": None,
           "reject_reason": None, "native_bandwidth_track": decoded.bandwidth_track,
           "source_level_track": slice_track(decoded.level_track, 0.0, 3.0)}
    [out] = MeasuresStage(MeasuresConfig(pitch=False))(pa.Table.from_pylist([row])).to_pylist()
    assert out["drop_reason"] is None and round(out["peak_dbfs"], 2) == -3.00
    assert "source_level_track" not in out


def test_integer_pcm_never_reads_above_full_scale_and_clipping_is_per_channel(speech):
    square = np.sign(np.sin(2 * np.pi * 100 * np.arange(16000) / 16000))      # +-1.0
    _, lv = levels_of(wav(np.stack([square, -square], axis=1), 16000))
    assert lv["peak_dbfs"] <= 0.0 and lv["clipped_ratio"] > 0.9
    # one clipped channel beside a quiet one is clipping, half the samples of the pair
    loud = np.clip(speech * 12, -1, 1)
    _, lv = levels_of(wav(np.stack([loud, speech * 0.1], axis=1), 16000))
    share = np.mean(np.abs(loud) >= 0.99) / 2
    assert abs(lv["clipped_ratio"] - share) < 0.2 * share


def test_float_files_with_nan_inf_and_huge_values_are_scrubbed_and_counted(speech):
    dirty = speech.copy()
    dirty[1000:1100] = np.nan
    dirty[5000:5010] = np.inf
    dirty[9000:9005] = 3.4e38
    dirty[9005:9010] = -3.4e38
    decoded, lv = levels_of(wav(dirty, 16000, "FLOAT"))
    assert decoded.nonfinite_samples == 110 and decoded.out_of_range_samples == 10
    assert np.isfinite(decoded.audio).all() and np.abs(decoded.audio).max() <= 1.0
    assert lv["peak_dbfs"] <= 0.0
    _, clean = levels_of(wav(speech, 16000, "FLOAT"))
    assert abs(lv["loudness_lufs"] - clean["loudness_lufs"]) < 1.0     # not 761 LUFS
    # bandwidth is measured on the scrubbed audio: a real edge, not 0 Hz
    assert segment_bandwidth(decoded.bandwidth_track, 0.0, 7.0) > 3000


def test_a_segment_reads_its_own_piece_of_the_track(speech):
    quiet_then_loud = np.concatenate([speech * 0.05, speech]).astype(np.float32)
    decoded = decode_audio_bytes(wav(quiet_then_loud, 16000), 3600, 0.9)
    half = speech.size / 16000
    first = segment_levels(slice_track(decoded.level_track, 0.0, half))
    second = segment_levels(slice_track(decoded.level_track, half, 2 * half))
    assert abs(first["peak_dbfs"] - (-1.0 + 20 * np.log10(0.05))) < 0.2
    assert abs(second["peak_dbfs"] - (-1.0)) < 0.01
    assert abs((second["loudness_lufs"] - first["loudness_lufs"]) - 26.0) < 0.5
    assert segment_levels(b"") is None and segment_levels(None) is None
