"""The release's audio codec (model_serving/codec.py): the seeded local codec from the registry,
its frame rule, batching by length, and codes on real speech."""
import math

import numpy as np
import pytest

from infra.demo_corpus import LIBRIVOX, read_audio
from model_serving.codec import AudioCodec, write_seeded_codec
from model_serving.registry import ModelError, ModelRegistry, sha256_file
from operators.tokenize import codec_batches
from pipeline.config import load_config
from tests.conftest import LOCAL_CONFIG


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    cfg = load_config(LOCAL_CONFIG)
    registry = ModelRegistry(cfg.models, str(tmp_path_factory.mktemp("models")))
    return AudioCodec(registry.resolve(cfg.release.tokenizer.model))


@pytest.fixture(scope="module")
def speech_24k():
    import librosa

    # 16 kHz real speech, ~25 s of it
    audio = np.concatenate([read_audio(p) for p in sorted(LIBRIVOX.glob("*.wav"))])
    return librosa.resample(audio, orig_sr=16000, target_sr=24000).astype(np.float32)


def test_seeded_codec_is_byte_identical_to_the_pinned_checksums(tmp_path):
    cfg = load_config(LOCAL_CONFIG)
    entry = cfg.models[cfg.release.tokenizer.model]
    write_seeded_codec(tmp_path / "codec")
    for name, spec in entry.files.items():
        assert sha256_file(tmp_path / "codec" / name) == spec.sha256, name


def test_a_corrupted_seeded_codec_is_refused(tmp_path):
    cfg = load_config(LOCAL_CONFIG)
    name = cfg.release.tokenizer.model
    registry = ModelRegistry(cfg.models, str(tmp_path))
    directory = registry.resolve(name).directory
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    from model_serving import registry as reg

    reg._verified.clear()  # a new process would hash again
    with pytest.raises(ModelError, match="corrupt"):
        ModelRegistry(cfg.models, str(tmp_path)).resolve(name)


@pytest.mark.parametrize("seconds", [0.5, 1.0, 2.37, 7.9])
def test_frame_count_follows_the_rule_duration_times_frame_rate_rounded_up(codec, speech_24k,
                                                                           seconds):
    n = int(seconds * 24000)
    (codes,) = codec.encode([speech_24k[:n]])
    assert codes.dtype == np.int16
    assert codes.shape == (8, math.ceil(n / 24000 * 12.5))
    assert codec.expected_frames(n) == codes.shape[1]


def test_batched_codes_equal_one_clip_at_a_time(codec, speech_24k):
    clips = [speech_24k[:n] for n in (30_000, 61_234, 120_000, 24_001)]
    batched = codec.encode(clips)
    for clip, codes in zip(clips, batched):
        assert np.array_equal(codes, codec.encode([clip])[0])


def test_codes_of_real_speech_use_the_codebooks_and_differ_from_silence(codec, speech_24k):
    (speech,) = codec.encode([speech_24k[:72_000]])
    (silence,) = codec.encode([np.zeros(72_000, np.float32)])
    assert (speech >= 0).all() and (speech < codec.info.codebook_size).all()
    # A codec that collapsed (all-equal weights, a broken load) would repeat one code.
    assert all(len(np.unique(book)) > 10 for book in speech)
    assert (speech != silence).mean() > 0.5


def test_codec_batches_group_by_length_within_limits():
    lengths = [24000 * s for s in (1, 9, 2, 8, 3, 30, 1)]
    batches = codec_batches(lengths, 24000, batch_seconds=20.0, max_segments=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5]                       # 30 s is over the limit: alone
    for batch in batches:
        assert len(batch) <= 3
        longest = max(lengths[i] for i in batch)
        assert longest * len(batch) / 24000 <= 20.0 or len(batch) == 1
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
