"""pipeline.reader's helpers outside the DataLoader: `decode` (codes back to audio with the
release's own codec, the seeded local Mimi here) and plain Parquet readers (pyarrow, pandas,
DuckDB) on a release shard, with `codes_array` for a row's [codebooks, frames] codes."""
from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from infra.demo_corpus import LIBRIVOX, read_audio
from operators.storage import ObjectStore
from pipeline.config import load_config
from pipeline.reader import codes_array, decode, read_manifest
from schemas.config import StorageConfig
from schemas.release import CODE_PAD
from tests.conftest import LOCAL_CONFIG
from tests.test_reader import NUM_CODEBOOKS, ROWS, write_release


@pytest.fixture(scope="module")
def codec(registry):
    from model_serving.codec import AudioCodec

    return AudioCodec(registry.resolve(load_config(LOCAL_CONFIG).release.tokenizer.model))


@pytest.fixture(scope="module")
def speech_codes(codec):
    """2 s of real speech (LibriVox, 16 kHz) at the codec's 24 kHz, and its codes."""
    audio = read_audio(sorted(LIBRIVOX.glob("*.wav"))[0])[:32000]
    t = np.arange(48000) / 24000
    wave = np.interp(t, np.arange(audio.size) / 16000, audio).astype(np.float32)
    (codes,) = codec.encode([wave])
    return codes


def manifest_of(codec, version=None) -> dict:
    return {"codec": {"name": codec.info.version.split("@")[0],
                      "version": version or codec.info.version,
                      "sample_rate": codec.info.sample_rate, "frame_rate": codec.info.frame_rate,
                      "num_codebooks": codec.info.num_codebooks}}


def test_decode_gives_audio_of_the_codes_length_with_the_release_codec(codec, speech_codes):
    frames = speech_codes.shape[1]
    assert speech_codes.shape == (8, 25)  # 2 s at 12.5 frames/s
    audio, rate = decode(speech_codes, release=manifest_of(codec), config_path=LOCAL_CONFIG)
    assert rate == 24000 and audio.dtype == np.float32
    assert audio.shape == (frames * 1920,)          # 24000 / 12.5 samples per frame
    assert np.isfinite(audio).all() and float(np.sqrt(np.mean(audio ** 2))) > 1e-4

    # A batch as ReleaseDataset yields it: padded with CODE_PAD, lengths in num_frames.
    batch = np.full((2, 8, frames), CODE_PAD, dtype=np.int16)
    batch[0], batch[1, :, :10] = speech_codes, speech_codes[:, :10]
    outs, _ = decode(torch.from_numpy(batch), num_frames=torch.tensor([frames, 10]),
                     release=manifest_of(codec), config_path=LOCAL_CONFIG)
    assert [o.shape[0] for o in outs] == [frames * 1920, 10 * 1920]
    np.testing.assert_allclose(outs[0], audio, atol=1e-5)  # padding never reaches the decoder

    with pytest.raises(ValueError, match="tokenized with tokenizer/mimi-seeded@other.*config_path"):
        decode(speech_codes, release=manifest_of(codec, "tokenizer/mimi-seeded@other"),
               config_path=LOCAL_CONFIG)
    with pytest.raises(ValueError, match="release="):
        decode(speech_codes)


def test_decode_reads_the_codec_from_a_release_uri(codec, speech_codes, s3_server):
    uri, _ = write_release(sizes=(2,), codec_extra=manifest_of(codec)["codec"])
    audio, rate = decode(speech_codes[:, :5], release=uri, config_path=LOCAL_CONFIG)
    assert rate == 24000 and audio.shape == (5 * 1920,)


def test_a_release_shard_reads_with_pyarrow_pandas_and_duckdb(s3_server, tmp_path):
    import duckdb
    import pandas as pd

    uri, written = write_release(sizes=(9,), row_group_size=4)
    shard = read_manifest(uri)["splits"]["train"]["shards"][0]
    local = tmp_path / "shard.parquet"
    local.write_bytes(ObjectStore(StorageConfig()).get(uri + shard["path"]))

    table = pq.read_table(local, columns=["segment_id", "codes", "num_frames"])
    seg, n = table["segment_id"][0].as_py(), table["num_frames"][0].as_py()
    arr = codes_array(table["codes"][0])
    assert arr.dtype == np.int16 and arr.shape == (NUM_CODEBOOKS, n)
    assert np.array_equal(arr, written[seg])

    df = pd.read_parquet(local, columns=["segment_id", "language", "codes"])
    assert len(df) == 9
    for seg, codes in zip(df.segment_id, df.codes):
        assert np.array_equal(codes_array(codes), written[seg])
        assert np.array_equal(np.stack(codes).astype(np.int16), written[seg])  # without helper

    # pandas straight from S3 (s3fs) with the endpoint of the local server
    remote = pd.read_parquet(uri + shard["path"], columns=["segment_id"], storage_options={
        "client_kwargs": {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}})
    assert list(remote.segment_id) == list(df.segment_id)

    rows = duckdb.sql(f"SELECT segment_id, codes, num_frames FROM read_parquet('{local}') "
                      f"WHERE language = 'en' ORDER BY segment_id").fetchall()
    expected = sorted(s for s, r in ROWS[uri].items() if r["language"] == "en")
    assert [r[0] for r in rows] == expected and expected
    for seg, codes, n in rows:
        assert codes_array(codes).shape == (NUM_CODEBOOKS, n)
        assert np.array_equal(codes_array(codes), written[seg])
