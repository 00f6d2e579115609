"""ReleaseDataset / ReleaseLoader against the real local S3 server: small synthetic releases
written here (several row groups per shard, mixed languages and content types)."""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import subprocess
import sys
import time
import uuid
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from operators.storage import ObjectStore
from pipeline.reader import ReleaseDataset, ReleaseLoader
from schemas.config import StorageConfig
from schemas.release import CODE_PAD, MANIFEST, RELEASE_FORMAT, SHARD_SCHEMA
from tests.conftest import TEST_BUCKET

NUM_CODEBOOKS = 4
LANGS = ("en", "de", "fr")
ROWS: dict[str, dict[str, dict]] = {}  # release URI -> segment id -> row as written


def shard_rows(shard: int, n: int, rng: np.random.Generator, first: int,
               max_frames: int = 30) -> list[dict]:
    rows = []
    for j, i in enumerate(range(first, first + n)):
        frames = int(rng.integers(1, max_frames))  # varies per row, so batches need padding
        codes = rng.integers(0, 2048, size=(NUM_CODEBOOKS, frames), dtype=np.int16)
        music = j % 5 == 4
        rows.append({
            "segment_id": f"rec-x-{i:05d}", "recording_id": f"rec-x-{shard}", "split": "train",
            # Language constant over runs of 4 rows: row groups of 4 are single-language, so
            # their statistics alone decide a language filter.
            "content_type": "music" if music else "speech",
            "language": None if music else LANGS[(j // 4) % len(LANGS)],
            "transcript": None if music else f"words {i}",
            "transcript_system": "whisper-base", "caption_source": "text_features",
            "caption_scene": "room", "caption_environment": "indoor", "caption_emotion": "calm",
            "caption_speaker_count": 1, "caption_speakers": [], "caption_description": f"d{i}",
            "event_tags": ["Speech"], "quality_score": round(float(rng.uniform(0.3, 1.0)), 3),
            "duration_s": frames / 12.5,
            "codes": codes.tolist(), "num_codebooks": NUM_CODEBOOKS, "num_frames": frames,
            "codec_name": "test", "codec_version": "0", "source_uri": "s3://b/x.wav",
            "source_etag": "e", "source_version_id": None, "start_sample": 0,
            "end_sample": frames * 1280, "sample_rate": 16000, "run_id": "run-1",
        })
    return rows


def shard_bytes(rows: list[dict], row_group_size: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), sink,
                   row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


def write_release(sizes=(7, 5, 9), seed=0, manifest=True, row_group_size=None, max_frames=30,
                  codec_extra=None, release_config=False) -> tuple[str, dict[str, np.ndarray]]:
    """A release under a fresh prefix; returns its URI and the codes written per segment id
    (the whole rows are in ROWS[uri])."""
    uri = f"s3://{TEST_BUCKET}/reader-test/{uuid.uuid4().hex[:8]}/releases/r1/"
    store = ObjectStore(StorageConfig())
    rng = np.random.default_rng(seed)
    shards, written, first = [], {}, 0
    ROWS[uri] = {}
    for s, n in enumerate(sizes):
        rows = shard_rows(s, n, rng, first, max_frames)
        first += n
        written.update({r["segment_id"]: np.array(r["codes"], dtype=np.int16) for r in rows})
        ROWS[uri].update({r["segment_id"]: r for r in rows})
        body = shard_bytes(rows, row_group_size)
        path = f"train/shard-{s:05d}.parquet"
        store.put(uri + path, body)
        shards.append({"path": path, "rows": n, "hours": 0.01, "bytes": len(body),
                       "sha256": hashlib.sha256(body).hexdigest()})
    if manifest:
        doc = {"format": RELEASE_FORMAT, "release_id": "r1",
               "codec": {"name": "test", "version": "0", "frame_rate": 12.5,
                         "num_codebooks": NUM_CODEBOOKS, **(codec_extra or {})},
               "splits": {"train": {"rows": sum(sizes), "hours": 0.03, "shards": shards},
                          "validation": {"rows": 0, "hours": 0.0, "shards": []},
                          "test": {"rows": 0, "hours": 0.0, "shards": []}}}
        if release_config:
            doc["release_config"] = {"shards": {"row_group_rows": row_group_size}}
        store.put(uri + MANIFEST, json.dumps(doc).encode())
    return uri, written


@pytest.fixture(scope="module")
def release(s3_server):
    return write_release(row_group_size=4)


@pytest.fixture(scope="module")
def mixed(s3_server):
    """Four shards of 24..40 rows in row groups of 4, lengths 1..119 frames."""
    return write_release(sizes=(40, 24, 36, 28), seed=5, row_group_size=4, max_frames=120,
                         release_config=True)


def ids_of(batches) -> list[str]:
    return [i for b in batches for i in b["segment_id"]]


def loader_ids(ds, workers=0, **kw) -> list[str]:
    return ids_of(DataLoader(ds, batch_size=None, num_workers=workers, **kw))


def test_ranks_and_workers_are_complete_disjoint_and_even(release):
    uri, written = release
    per_rank = []
    for rank in range(2):
        ds = ReleaseDataset(uri, batch_size=4, seed=3, rank=rank, world_size=2)
        batches = list(DataLoader(ds, batch_size=None, num_workers=2))
        assert len(batches) == ds.batches_per_rank() == len(ds) == 3  # ceil(ceil(21/2) / 4)
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
            assert b["language"][i] == ROWS[uri][seg]["language"]
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


def test_order_is_row_group_major(mixed):
    """Each (shard, row group) is one contiguous run of a rank's order: workers stream row
    groups. Blocks come from the manifest's row_group_rows here (no footer read to plan)."""
    uri, _ = mixed
    for rank in range(2):
        ds = ReleaseDataset(uri, batch_size=8, seed=1, rank=rank, world_size=2)
        assert ds._block_rows == 4
        shard_idx = np.concatenate([s for s, _ in ds.rank_batches()])
        row_idx = np.concatenate([r for _, r in ds.rank_batches()])
        keys = list(zip(shard_idx.tolist(), (row_idx // 4).tolist()))
        runs = [k for i, k in enumerate(keys) if i == 0 or k != keys[i - 1]]
        assert len(runs) == len(set(runs))       # no row group comes back later
        assert len(runs) <= len(keys) // 4 + 2   # only the ends of the rank's block are partial
        # and rows inside a row group are shuffled, not in file order
        assert any(np.diff(row_idx[i:i + 4]).min() < 0 for i in range(0, len(row_idx) - 4, 4))


def test_persistent_workers_follow_set_epoch(release):
    uri, written = release
    ds = ReleaseDataset(uri, batch_size=3, seed=4)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        got = ids_of(loader)
        fresh = ReleaseDataset(uri, batch_size=3, seed=4)
        fresh.set_epoch(epoch)
        assert got == loader_ids(fresh)  # the order without persistent workers
        assert sorted(got) == sorted(written)
        seen.append(got)
    assert seen[0] != seen[1]


def test_len_is_batches_per_rank_also_with_filters(mixed):
    uri, _ = mixed
    for kw in ({}, {"languages": ["en", "fr"]},
               {"min_quality_score": 0.6, "bucket_by_length": True}):
        ds = ReleaseDataset(uri, batch_size=5, rank=1, world_size=3, **kw)
        loader = DataLoader(ds, batch_size=None)
        assert len(loader) == len(ds) == len(list(loader)) == -(-(-(-ds.num_rows // 3)) // 5)


@pytest.mark.parametrize("workers,stops", [(0, (0, 2, 6)), (2, (1, 4))])
def test_resume_mid_epoch_gives_exactly_the_rest(mixed, workers, stops):
    uri, _ = mixed
    kw = dict(batch_size=6, seed=2, rank=1, world_size=2, min_duration_s=0.5)
    whole = loader_ids(ReleaseDataset(uri, **kw))
    nb = len(ReleaseDataset(uri, **kw))
    for k in stops:
        first = ReleaseLoader(ReleaseDataset(uri, **kw), num_workers=workers)
        part = ids_of(itertools.islice(first, k))  # the trainer took k batches, then stopped
        state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
        assert (state["epoch"], state["batches_done"]) == (0, k)
        again = ReleaseLoader(ReleaseDataset(uri, **kw), num_workers=workers,
                              persistent_workers=workers > 0)
        again.load_state_dict(state)
        again.set_epoch(0)  # the trainer's epoch loop restarts at the saved epoch: kept
        rest = ids_of(again)
        assert part + rest == whole, k  # same order, nothing twice, nothing missing
        assert len(rest) and again.state_dict()["batches_done"] == 0
        assert again.state_dict()["epoch"] == 1  # a finished epoch moves to the next
    # The next epoch after a resumed one starts at its first batch, persistent workers too.
    ref = ReleaseDataset(uri, **kw)
    ref.set_epoch(1)
    assert ids_of(again) == loader_ids(ref)
    assert nb > max(stops)


def test_loader_epochs_and_a_mismatched_state_is_refused(mixed):
    uri, _ = mixed
    loader = ReleaseLoader(ReleaseDataset(uri, batch_size=8, seed=3))
    e0 = ids_of(loader)
    e1 = ids_of(loader)  # the next epoch by itself, as after set_epoch(1)
    ref = ReleaseDataset(uri, batch_size=8, seed=3)
    ref.set_epoch(1)
    assert e1 == ids_of(iter(ref)) != e0
    state = loader.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 0 and state["seed"] == 3
    for other, field in ((dict(batch_size=8, seed=4), "seed=3"),
                         (dict(batch_size=4, seed=3), "batch_size=8"),
                         (dict(batch_size=8, seed=3, languages=["en"]), "filters="),
                         (dict(batch_size=8, seed=3, world_size=2, rank=0), "world_size=1")):
        with pytest.raises(ValueError, match=f"makes other batches: .*{field}.*same release"):
            ReleaseLoader(ReleaseDataset(uri, **other)).load_state_dict(state)


def test_filters_keep_exactly_the_matching_rows(mixed):
    uri, _ = mixed
    rows = ROWS[uri]
    kw = dict(languages=["en", "de"], min_quality_score=0.5, max_duration_s=6.0)
    expected = {s for s, r in rows.items() if r["language"] in ("en", "de")
                and r["quality_score"] >= 0.5 and r["duration_s"] <= 6.0}
    assert 0 < len(expected) < len(rows)
    per_rank, gets, scan_gets = [], [], []
    for rank in range(2):
        before = len(gets)
        ds = ReleaseDataset(uri, batch_size=4, rank=rank, world_size=2,
                            io_hook=lambda u, kind, a, n: gets.append((u, kind, a, n)), **kw)
        assert ds.num_rows == len(expected)
        scan_gets += gets[before:]  # the pre-pass's, at construction
        got = loader_ids(ds, workers=2)
        assert got == ids_of(iter(ds)) and len(got) == len(set(got))
        assert len(DataLoader(ds, batch_size=None)) == ds.batches_per_rank()
        per_rank.append(got)
    assert set(per_rank[0]) | set(per_rank[1]) == expected
    assert not set(per_rank[0]) & set(per_rank[1])
    # Pushed down: French row groups are skipped on their statistics, and besides footers the
    # pre-pass reads a few small columns (no codes).
    st = ds.scan_stats
    assert st["row_groups_skipped"] >= 8 and st["row_groups_read"] < st["row_groups"]
    codes_chunks = {}
    for u in ds.shard_uris():
        md = pq.ParquetFile(io.BytesIO(ObjectStore(StorageConfig()).get(u))).metadata
        leaf = [i for i in range(md.num_columns) if md.schema.column(i).path.startswith("codes.")]
        chunks = [md.row_group(g).column(leaf[0]) for g in range(md.num_row_groups)]
        starts = [min(c.data_page_offset, c.dictionary_page_offset or c.data_page_offset)
                  for c in chunks]
        codes_chunks[u] = [(a, a + c.total_compressed_size) for a, c in zip(starts, chunks)]
    prepass = [(u, a, n) for u, kind, a, n in scan_gets if kind == "range"]
    assert prepass and not any(a < hi and lo < a + n for u, a, n in prepass
                               for lo, hi in codes_chunks[u])
    music = ReleaseDataset(uri, batch_size=2, content_types=["music"])
    assert set(ids_of(iter(music))) == {s for s, r in rows.items() if r["content_type"] == "music"}


def test_bad_filters_are_clear_errors(mixed):
    uri, _ = mixed
    with pytest.raises(ValueError, match=r"takes a list of values, e.g. languages=\['en'\]"):
        ReleaseDataset(uri, languages="en")
    with pytest.raises(ValueError, match="passes the filters .* loosen them"):
        ReleaseDataset(uri, languages=["xx"])
    with pytest.raises(ValueError, match="min_duration_s 5.0 is above max_duration_s 1.0"):
        ReleaseDataset(uri, min_duration_s=5, max_duration_s=1)


def padding_share(batches) -> float:
    real = sum(int(b["num_frames"].sum()) for b in batches)
    cells = sum(b["codes"].shape[0] * b["codes"].shape[2] for b in batches)
    return 1 - real / cells


def test_bucketing_cuts_padding_keeps_rows_and_batch_count(mixed, capsys):
    uri, written = mixed
    plain = ReleaseDataset(uri, batch_size=8, seed=6)
    bucketed = ReleaseDataset(uri, batch_size=8, seed=6, bucket_by_length=True, bucket_window=8)
    a, b = list(plain), list(bucketed)
    assert len(a) == len(b) == len(plain) == len(bucketed)
    assert sorted(len(x["segment_id"]) for x in a) == sorted(len(x["segment_id"]) for x in b)
    assert sorted(ids_of(b)) == sorted(ids_of(a)) == sorted(written)
    # Same rows per window of 8 batches, only regrouped.
    assert set(ids_of(a[:8])) == set(ids_of(b[:8]))
    pa_, pb = padding_share(a), padding_share(b)
    with capsys.disabled():
        print(f"\npadding share, batch 8, lengths 1..119 frames: {pa_:.1%} plain, "
              f"{pb:.1%} bucketed (window 8)")
    assert pb < pa_ / 3
    assert loader_ids(bucketed, workers=2) == ids_of(b)  # workers deal the bucketed batches
    bucketed.set_epoch(1)
    assert ids_of(iter(bucketed)) != ids_of(b)


def test_shards_are_streamed_by_row_group_with_prefetch(mixed):
    uri, _ = mixed
    gets = []
    ds = ReleaseDataset(uri, batch_size=4, columns=[], prefetch_row_groups=2)
    ds.footer_tail_bytes = 1024  # a footer GET that does not also bring most of a small shard
    ds.io_hook = lambda u, kind, first, n: gets.append((u, kind, n))
    it = iter(ds)
    first = next(it)
    time.sleep(0.3)  # the thread fetches ahead while the trainer works on this batch
    assert ds.io_stats["queued_max"] == 2  # ... exactly prefetch_row_groups ahead, no more
    rest = [first, *it]
    st = ds.io_stats
    sizes = {ds.release_uri + s["path"]: s["bytes"] for s in ds.shards}
    assert sorted(ids_of(rest)) == sorted(ROWS[uri])
    assert st["misses"] == 0                           # pyarrow read only the ranges fetched
    assert st["row_groups"] == 128 // 4                # every row group once
    ranges = [(u, n) for u, kind, n in gets if kind == "range"]
    assert len(ranges) == 32                           # one GET per row group
    assert {kind for _, kind, _ in gets} == {"footer", "range"}
    assert all(n < sizes[u] / 4 for u, n in ranges)    # none near a whole shard
    # Row groups held (decoded in use + fetched ahead) stay a few, whatever the shard size.
    assert st["held_max"] <= 2 + 2
    assert sum(n for _, n in ranges) < sum(sizes.values())  # codes and ids, not every column

    # verify_checksums reads whole shards (one GET each), in the same order.
    whole = []
    ds2 = ReleaseDataset(uri, batch_size=4, columns=[], verify_checksums=True)
    ds2.io_hook = lambda u, kind, first, n: whole.append((kind, n))
    assert ids_of(iter(ds2)) == ids_of(rest)
    assert sorted(whole) == sorted(("whole", n) for n in sizes.values())


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
    with pytest.raises(ValueError, match="do not pass batch_size"):
        ReleaseLoader(ReleaseDataset(release[0]), batch_size=4)


def test_a_release_without_manifest_is_not_a_release(s3_server):
    uri, _ = write_release(manifest=False)
    with pytest.raises(FileNotFoundError, match="not a release") as info:
        ReleaseDataset(uri)
    assert uri + MANIFEST in str(info.value)


def test_an_untrained_codec_is_refused_unless_allowed(s3_server):
    text = "UNTRAINED CODEC: tokenizer/mimi-seeded@x has seeded random weights"
    uri, _ = write_release(codec_extra={"untrained": True, "version": "tokenizer/mimi-seeded@x",
                                        "warning": text})
    with pytest.raises(ValueError, match=r"untrained codec \(tokenizer/mimi-seeded@x\).*"
                                         r"allow_untrained_codec=True"):
        ReleaseDataset(uri)
    with pytest.warns(UserWarning, match="seeded random weights"):
        ds = ReleaseDataset(uri, allow_untrained_codec=True)
    assert len(ids_of(iter(ds))) == 21
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trained codec: no warning
        ReleaseDataset(write_release(codec_extra={"untrained": False})[0])


def test_verify_checksums_catches_a_replaced_shard(s3_server):
    uri, _ = write_release()
    # Valid Parquet with the right row count but other codes: only the checksum can tell.
    other = shard_bytes(shard_rows(1, 5, np.random.default_rng(99), 7))
    ObjectStore(StorageConfig()).put(uri + "train/shard-00001.parquet", other)
    assert len(ids_of(iter(ReleaseDataset(uri)))) == 21  # unverified, it reads fine
    ds = ReleaseDataset(uri, verify_checksums=True)
    with pytest.raises(ValueError, match=r"shard train/shard-00001\.parquet .* does not match"):
        list(DataLoader(ds, batch_size=None, num_workers=1))


def test_importing_the_reader_loads_no_pipeline_stack():
    code = ("import sys, pipeline.reader; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert {"torch", "pyarrow", "numpy"} <= loaded
    assert not loaded & {"ray", "librosa", "faster_whisper", "transformers", "pandas", "duckdb",
                         "s3fs"}
