"""Decode stage on rows listed from the real S3 server: every container decodes, every planted
bad file becomes a reject with the right reason, and nothing raises."""
import numpy as np
import pytest

from operators.audio import from_bytes
from operators.decode import DecodeStage
from schemas import reasons
from schemas.config import DecodeConfig, InputConfig, StorageConfig
from tests.conftest import TEST_BUCKET
from tests.helpers import by_name, listing_for

CLIPS = [
    "librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "librivox/sense_and_sensibility_01_austen_64kb-0880.flac",
    "librivox/sense_and_sensibility_01_austen_64kb-0890.mp3",
    "librivox/sense_and_sensibility_01_austen_64kb-0920.opus",
    "librivox/sense_and_sensibility_01_austen_64kb-0930.m4a",
    "tuxpaint/sound_effects/violin.ogg",
]
BAD = {
    "bad/empty.wav": reasons.EMPTY_OBJECT,
    "bad/random_bytes.wav": reasons.UNDECODABLE,
    "bad/truncated.flac": reasons.TRUNCATED,
    "bad/not_audio.mp3": reasons.UNDECODABLE,
    "bad/readme.txt": reasons.UNSUPPORTED_EXTENSION,
    "bad/digital_silence.wav": reasons.DIGITAL_SILENCE,
    "bad/header_claims_2gib.wav": reasons.TRUNCATED,
    "bad/header_claims_20s.wav": reasons.TRUNCATED,
    "bad/dc_only.wav": reasons.DIGITAL_SILENCE,
}
# Durations of the source clips (16 kHz wav in pocketsphinx-testdata), in seconds.
SOURCE_SECONDS = {"0870": 7.1, "0880": 2.99, "0890": 5.3, "0920": 6.05, "0930": 3.29}


def make_stage(**decode):
    return DecodeStage(StorageConfig(), InputConfig(uri=f"s3://{TEST_BUCKET}/raw/"),
                       DecodeConfig(**decode))


def test_every_container_decodes_to_16k_mono_of_the_right_length(demo_corpus):
    out = by_name(make_stage()(listing_for(CLIPS, TEST_BUCKET)))
    codecs = set()
    for name, row in out.items():
        assert row["reject_reason"] is None, (name, row["reject_detail"])
        audio = from_bytes(row["recording_audio"])
        assert audio.dtype == np.float32 and np.abs(audio).max() > 0.05
        assert abs(audio.size / 16000 - row["recording_duration_s"]) < 1e-6
        codecs.add(row["source_codec"])
        stem = name.rsplit("-", 1)[-1].split(".")[0]
        if stem in SOURCE_SECONDS:
            # lossy codecs add priming/padding (AAC: 1024 samples + a frame), never more
            assert abs(row["recording_duration_s"] - SOURCE_SECONDS[stem]) < 0.15, name
    assert len(codecs) == len(CLIPS), codecs  # six containers, six different decoders
    assert out["violin.ogg"]["source_sample_rate"] == 44100  # native rate kept for provenance


def test_planted_bad_files_are_rejected_with_reasons(demo_corpus):
    out = by_name(make_stage()(listing_for(list(BAD), TEST_BUCKET)))
    for key, reason in BAD.items():
        row = out[key.rsplit("/", 1)[-1]]
        assert row["reject_reason"] == reason, (key, row["reject_detail"])
        assert row["reject_stage"] == "decode" and row["reject_detail"]
        assert "Errno" not in row["reject_detail"]          # words, not FFmpeg's error numbers
        assert row["recording_audio"] is None
    assert "declares 2147483648 bytes" in out["header_claims_2gib.wav"]["reject_detail"]
    assert "(20.00s)" in out["header_claims_20s.wav"]["reject_detail"]
    assert "2.50s" in out["header_claims_20s.wav"]["reject_detail"]
    assert "constant signal" in out["dc_only.wav"]["reject_detail"]


def test_audio_is_told_by_its_content_not_its_name(demo_corpus, s3_client):
    """An unknown extension that decodes is audio; one that does not is undecodable after a
    bounded probe; sidecars are skipped unread."""
    flac = demo_corpus["librivox/sense_and_sensibility_01_austen_64kb-0880.flac"].body
    ogg = demo_corpus["tuxpaint/sound_effects/violin.ogg"].body
    objects = {"tmp/probe/click.oga": ogg, "tmp/probe/speech_no_extension": flac,
               "tmp/probe/blob.bin": np.random.default_rng(3).bytes(300_000),
               "tmp/probe/labels.json": b'{"speaker": "x"}'}
    for key, body in objects.items():
        s3_client.put_object(Bucket=TEST_BUCKET, Key=f"raw/{key}", Body=body)
    try:
        out = by_name(make_stage()(listing_for(list(objects), TEST_BUCKET)))
    finally:
        for key in objects:
            s3_client.delete_object(Bucket=TEST_BUCKET, Key=f"raw/{key}")
    assert out["click.oga"]["reject_reason"] is None and out["click.oga"]["source_codec"]
    assert out["speech_no_extension"]["reject_reason"] is None
    assert abs(out["speech_no_extension"]["recording_duration_s"] - 2.99) < 0.05
    blob = out["blob.bin"]
    assert blob["reject_reason"] == reasons.UNDECODABLE
    assert "first 262144 bytes" in blob["reject_detail"] and "Errno" not in blob["reject_detail"]
    assert out["labels.json"]["reject_reason"] == reasons.UNSUPPORTED_EXTENSION


def test_length_and_size_limits(demo_corpus):
    table = listing_for([CLIPS[0]], TEST_BUCKET)
    row = make_stage(max_duration_s=3.0)(table).to_pylist()[0]
    assert row["reject_reason"] == reasons.TOO_LONG
    stage = DecodeStage(StorageConfig(), InputConfig(uri="s3://x/", max_object_bytes=1000),
                        DecodeConfig())
    row = stage(table).to_pylist()[0]
    assert row["reject_reason"] == reasons.OBJECT_TOO_LARGE and "1000" in row["reject_detail"]


def test_object_replaced_after_listing_is_a_read_error_not_other_audio(demo_corpus, s3_client):
    key = "raw/tmp/replaced.wav"
    s3_client.put_object(Bucket=TEST_BUCKET, Key=key,
                         Body=demo_corpus["librivox/sense_and_sensibility_01_austen_64kb-0870.wav"].body)
    table = listing_for(["tmp/replaced.wav"], TEST_BUCKET)
    s3_client.put_object(Bucket=TEST_BUCKET, Key=key, Body=demo_corpus["cmu_cards/001.wav"].body)
    try:
        row = make_stage()(table).to_pylist()[0]
    finally:
        s3_client.delete_object(Bucket=TEST_BUCKET, Key=key)
    assert row["reject_reason"] == reasons.READ_ERROR
    assert "reading" in row["reject_detail"]


def test_stage_declares_what_it_needs():
    with pytest.raises(KeyError, match="source_uri"):
        import pyarrow as pa
        make_stage()(pa.table({"recording_id": ["x"]}))


def test_read_segments_cuts_pinned_sources_at_any_rate_and_names_what_it_could_not_read(
        demo_corpus):
    from operators.decode import decode_audio_bytes, read_segments
    from operators.storage import ObjectStore

    store = ObjectStore(StorageConfig())
    listed = listing_for([CLIPS[0], CLIPS[1]], TEST_BUCKET).to_pylist()
    rows = [{**listed[0], "start_sample": 16000, "end_sample": 40000},   # 1.0-2.5 s
            {**listed[0], "start_sample": 0, "end_sample": 8000},
            {**listed[1], "start_sample": 0, "end_sample": 16000,
             "source_etag": "0" * 32},                                   # not the listed bytes
            {**listed[0], "start_sample": 200_000, "end_sample": 210_000}]  # past the end
    for rate in (16000, 24000):
        audio, errors = read_segments(store, rows, [0, 1, 2, 3], DecodeConfig(), rate)
        whole = decode_audio_bytes(store.get(rows[0]["source_uri"]), 3600, 0.9, rate=rate).audio
        scale = rate / 16000
        assert np.array_equal(audio[0], whole[round(16000 * scale):round(40000 * scale)])
        assert audio[1].size == round(8000 * scale)
        assert set(audio) == {0, 1} and set(errors) == {2, 3}
        assert "empty slice" in errors[3]
