"""ReleaseDataset against the real local S3 server: a small synthetic release written here."""
from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from operators.storage import ObjectStore
from pipeline.reader import ReleaseDataset
from schemas.config import StorageConfig
from schemas.release import CODE_PAD, MANIFEST, RELEASE_FORMAT, SHARD_SCHEMA
from tests.conftest import TEST_BUCKET

NUM_CODEBOOKS = 4


def shard_rows(shard: int, n: int, rng: np.random.Generator, first: int) -> list[dict]:
    rows = []
    for i in range(first, first + n):
        frames = int(rng.integers(1, 30))  # varies per row, so batches need padding
        codes = rng.integers(0, 2048, size=(NUM_CODEBOOKS, frames), dtype=np.int16)
        rows.append({
            "segment_id": f"rec-x-{i:05d}", "recording_id": f"rec-x-{shard}", "split": "train",
            "content_type": "speech", "language": "en", "transcript": f"words {i}",
            "transcript_system": "whisper-base", "caption_source": "text_features",
            "caption_scene": "room", "caption_environment": "indoor", "caption_emotion": "calm",
            "caption_speaker_count": 1, "caption_speakers": [], "caption_description": f"d{i}",
            "event_tags": ["Speech"], "quality_score": 0.9, "duration_s": frames / 12.5,
            "codes": codes.tolist(), "num_codebooks": NUM_CODEBOOKS, "num_frames": frames,
            "codec_name": "test", "codec_version": "0", "source_uri": "s3://b/x.wav",
            "source_etag": "e", "source_version_id": None, "start_sample": 0,
            "end_sample": frames * 1280, "sample_rate": 16000, "run_id": "run-1",
        })
    return rows


def shard_bytes(rows: list[dict]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), sink)
    return sink.getvalue().to_pybytes()


def write_release(sizes=(7, 5, 9), seed=0, manifest=True) -> tuple[str, dict[str, np.ndarray]]:
    """A release under a fresh prefix; returns its URI and the codes written per segment id."""
    uri = f"s3://{TEST_BUCKET}/reader-test/{uuid.uuid4().hex[:8]}/releases/r1/"
    store = ObjectStore(StorageConfig())
    rng = np.random.default_rng(seed)
    shards, written, first = [], {}, 0
    for s, n in enumerate(sizes):
        rows = shard_rows(s, n, rng, first)
        first += n
        written.update({r["segment_id"]: np.array(r["codes"], dtype=np.int16) for r in rows})
        body = shard_bytes(rows)
        path = f"train/shard-{s:05d}.parquet"
        store.put(uri + path, body)
        shards.append({"path": path, "rows": n, "hours": 0.01, "bytes": len(body),
                       "sha256": hashlib.sha256(body).hexdigest()})
    if manifest:
        doc = {"format": RELEASE_FORMAT, "release_id": "r1",
               "codec": {"name": "test", "version": "0", "frame_rate": 12.5,
                         "num_codebooks": NUM_CODEBOOKS},
               "splits": {"train": {"rows": sum(sizes), "hours": 0.03, "shards": shards},
                          "validation": {"rows": 0, "hours": 0.0, "shards": []},
                          "test": {"rows": 0, "hours": 0.0, "shards": []}}}
        store.put(uri + MANIFEST, json.dumps(doc).encode())
    return uri, written


@pytest.fixture(scope="module")
def release(s3_server):
    return write_release()


def ids_of(batches) -> list[str]:
    return [i for b in batches for i in b["segment_id"]]


def test_ranks_and_workers_are_complete_disjoint_and_even(release):
    uri, written = release
    per_rank = []
    for rank in range(2):
        ds = ReleaseDataset(uri, batch_size=4, seed=3, rank=rank, world_size=2)
        batches = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert len(batches) == ds.batches_per_rank() == 3  # ceil(ceil(21/2) / 4)
        assert all(1 <= len(b["segment_id"]) <= 4 for b in batches)
        # The DataLoader takes batches from its workers in turn: the plan's order comes back.
        assert ids_of(batches) == ids_of(iter(ds))
        per_rank.append(ids_of(batches))
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything))  # disjoint
    assert set(everything) == set(written)          # complete


def test_batch_contents_round_trip(release):
    uri, written = release
    ds = ReleaseDataset(uri, batch_size=5, columns=["language", "duration_s"])
    batches = list(ds)
    assert set(batches[0]) == {"segment_id", "codes", "num_frames", "language", "duration_s"}
    assert sorted(ids_of(batches)) == sorted(written)
    saw_padding = False
    for b in batches:
        codes, frames = b["codes"], b["num_frames"]
        assert codes.dtype == torch.int16 and frames.dtype == torch.int64
        assert codes.shape == (len(b["segment_id"]), NUM_CODEBOOKS, int(frames.max()))
        for i, seg in enumerate(b["segment_id"]):
            f = int(frames[i])
            assert f == written[seg].shape[1]
            assert np.array_equal(codes[i, :, :f].numpy(), written[seg])
            assert (codes[i, :, f:] == CODE_PAD).all()
            saw_padding |= f < codes.shape[2]
            assert b["duration_s"][i] == pytest.approx(f / 12.5)
        assert b["language"] == ["en"] * len(b["segment_id"])
    assert saw_padding


def test_shuffle_is_seeded_by_seed_and_epoch(release):
    uri, written = release
    order = lambda ds: ids_of(iter(ds))  # noqa: E731
    a, b = ReleaseDataset(uri, batch_size=4, seed=7), ReleaseDataset(uri, batch_size=4, seed=7)
    first = order(a)
    assert order(b) == first
    a.set_epoch(1)
    second = order(a)
    assert second != first and sorted(second) == sorted(first) == sorted(written)
    b.set_epoch(1)
    assert order(b) == second
    assert order(ReleaseDataset(uri, batch_size=4, seed=8)) != first


def test_rank_and_world_come_from_the_environment(release, monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ds = ReleaseDataset(release[0], batch_size=2)
    assert (ds.rank, ds.world_size) == (2, 3)
    assert ds.batches_per_rank() == 4  # ceil(7 / 2)


def test_a_split_too_small_for_the_world_is_a_clear_error(s3_server):
    uri, _ = write_release(sizes=(3,))
    with pytest.raises(ValueError, match="cannot give every one of 2 ranks 2 batches"):
        ReleaseDataset(uri, batch_size=1, rank=0, world_size=2)
    assert ReleaseDataset(uri, batch_size=2, rank=0, world_size=2).batches_per_rank() == 1


def test_bad_arguments_are_clear_errors(release):
    with pytest.raises(ValueError, match="no split 'dev'"):
        ReleaseDataset(release[0], split="dev")
    with pytest.raises(ValueError, match="unknown shard columns"):
        ReleaseDataset(release[0], columns=["speaker"])
    with pytest.raises(ValueError, match="rank 2 is not in a world of size 2"):
        ReleaseDataset(release[0], rank=2, world_size=2)


def test_a_release_without_manifest_is_not_a_release(s3_server):
    uri, _ = write_release(manifest=False)
    with pytest.raises(FileNotFoundError, match="not a release") as info:
        ReleaseDataset(uri)
    assert uri + MANIFEST in str(info.value)


def test_verify_checksums_catches_a_replaced_shard(s3_server):
    uri, _ = write_release()
    # Valid Parquet with the right row count but other codes: only the checksum can tell.
    other = shard_bytes(shard_rows(1, 5, np.random.default_rng(99), 7))
    ObjectStore(StorageConfig()).put(uri + "train/shard-00001.parquet", other)
    assert len(ids_of(iter(ReleaseDataset(uri)))) == 21  # unverified, it reads fine
    ds = ReleaseDataset(uri, verify_checksums=True)
    with pytest.raises(ValueError, match=r"shard train/shard-00001\.parquet .* does not match"):
        list(DataLoader(ds, batch_size=None, num_workers=1))
