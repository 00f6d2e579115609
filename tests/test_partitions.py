"""The pieces of a night that hold no model: partition bounds, the writer's split, invariant and
stats, the summary as the sum of partition stats, ledger buckets. Pure functions, plus the writer
against the real S3 server (it reads its plan part and writes its files and marker)."""
import json

import pyarrow as pa
import pytest

from operators.partition_io import (WritePartitionStage, invariant_problems, partition_stats,
                                    split_results)
from pipeline.plan import partition_bounds
from pipeline.summary import RunTotals, build_summary
from schemas.layout import Layout, partition_bucket, partition_id, source_bucket
from schemas.tables import ANNOTATIONS_SCHEMA, LISTING_SCHEMA, PARTITION_FIELD


def test_partitions_are_bounded_by_objects_and_bytes():
    assert partition_bounds([10] * 7, 3, 1000) == [(0, 3), (3, 6), (6, 7)]
    assert partition_bounds([40, 40, 40, 10], 10, 100) == [(0, 2), (2, 4)]
    assert partition_bounds([500, 1, 1], 10, 100) == [(0, 1), (1, 3)]  # a big one alone
    assert partition_bounds([], 3, 100) == []
    assert partition_id(7, 12) == "0007-00012" and partition_bucket("0007-00012") == 7


def test_ledger_bucket_is_a_stable_hash_of_the_uri():
    uri = "s3://b/raw/a.wav"
    assert source_bucket(uri, 16) == source_bucket(uri, 16)
    # sha256-based, so every process, machine and Python version agrees (not hash()).
    assert source_bucket(uri, 2**32) == int.from_bytes(
        __import__("hashlib").sha256(uri.encode()).digest()[:8], "big") % 2**32
    spread = {source_bucket(f"s3://b/raw/{i}.wav", 16) for i in range(400)}
    assert spread == set(range(16))


def rows(partition="0000-00000"):
    """Result rows of two recordings (one with two segments, one rejected)."""
    base = {"run_id": "r", "source_version_id": None, "source_bytes": 10,
            "partition": partition}
    seg = {f.name: None for f in ANNOTATIONS_SCHEMA if f.name != "pipeline_version"}
    out = []
    for i, (drop, stage) in enumerate([(None, None), ("too_short", "vad")]):
        out.append({**seg, **base, "recording_id": "rec-a", "source_uri": "s3://b/raw/a.wav",
                    "source_etag": "e1", "segment_id": f"rec-a-{i:05d}", "segment_index": i,
                    "content_type": "speech", "duration_s": 2.0 + i,
                    "recording_duration_s": 9.0, "drop_reason": drop, "drop_stage": stage,
                    "caption_flags": [], "reject_stage": None, "reject_reason": None,
                    "reject_detail": None})
    out.append({**seg, **base, "recording_id": "rec-b", "source_uri": "s3://b/raw/b.wav",
                "source_etag": "e1", "reject_stage": "decode", "reject_reason": "undecodable",
                "reject_detail": "not audio", "caption_flags": None})
    return pa.Table.from_pylist(out)


def test_split_invariant_and_stats_of_a_partition():
    ann, rej = split_results(rows(), "9.9")
    assert ann.num_rows == 2 and rej.num_rows == 1
    assert set(ann.column("pipeline_version").to_pylist()) == {"9.9"}
    listed = pa.array(["rec-a", "rec-b"])
    assert invariant_problems(listed, ann, rej) == []
    assert invariant_problems(pa.array(["rec-a", "rec-b", "rec-c"]), ann, rej) == \
        ["1 recordings are in neither"]
    assert "rows of recordings this partition did not list" in \
        invariant_problems(pa.array(["rec-a"]), ann, rej)
    dup = pa.concat_tables([ann, ann.slice(0, 1)])
    assert "duplicate segment ids" in invariant_problems(listed, dup, rej)
    stats = partition_stats(ann, rej, 2)
    assert (stats["inputs"], stats["recordings_annotated"], stats["recordings_rejected"]) == \
        (2, 1, 1)
    assert stats["segments_kept"] == 1 and stats["segments_dropped_by_reason"] == \
        {"too_short": 1}
    assert stats["audio_s"] == 9.0 and stats["segment_s"] == 5.0
    assert stats["rejected_by_reason"] == {"undecodable": 1}


def test_the_summary_is_the_sum_of_the_partitions_and_counts_each_once():
    ann, rej = split_results(rows(), "9.9")
    one = {"partition": "0000-00000", "node": "n1", "files": {
        "annotations": {"path": "annotations/part-0000-00000.parquet", "rows": 2, "bytes": 9,
                        "sha256": "x"}}, **partition_stats(ann, rej, 2)}
    two = {**one, "partition": "0001-00000", "files": {}}
    totals = RunTotals()
    for stats in (one, two, one):  # the same partition twice (a retry) counts once
        totals.add(stats)
    s = build_summary(run_id="r", status="succeeded", totals=totals, wall_s=9.0,
                      started_at="a", finished_at="b", models={}, config_path="c", limits={})
    assert s["inputs"] == 4 and s["recordings_rejected"] == 2 and s["segments"] == 4
    assert s["segments_dropped_by_reason"] == {"too_short": 2}
    assert s["audio_hours"] == round(18 / 3600, 6) and s["real_time_factor"] == 0.5
    assert s["partitions"] == 2 and len(s["files"]["annotations"]) == 1


def test_the_writer_writes_a_partition_and_refuses_a_broken_one(s3_server):
    from operators.parquet_io import read_parquet, write_parquet
    from operators.storage import ObjectStore
    from schemas.config import StorageConfig
    from tests.conftest import TEST_BUCKET

    out = f"s3://{TEST_BUCKET}/partitions-unit/"
    layout, store = Layout(out), ObjectStore(StorageConfig())
    listing = rows().filter(pa.compute.is_valid(rows().column("source_uri"))).select(
        LISTING_SCHEMA.names)
    listing = pa.Table.from_pylist([dict(r) for r in {r["recording_id"]: r for r in
                                                      listing.to_pylist()}.values()])
    write_parquet(store, layout.plan_part("r", "0000-00000"), listing, LISTING_SCHEMA, "plan")
    writer = WritePartitionStage(StorageConfig(), out, "r", "9.9", {"decode": 0, "vad": 1},
                                 {"decode": "f0", "vad": "f1"})
    got = writer(rows())
    stats = json.loads(got.column("stats")[0].as_py())
    assert stats == json.loads(store.get(layout.done_marker("r", "0000-00000")))
    assert set(stats["files"]) == {"annotations", "rejects", "ledger"}
    ledger = read_parquet(store, layout.run("r") + stats["files"]["ledger"]["path"])
    by_uri = {r["source_uri"]: r for r in ledger.to_pylist()}
    assert by_uri["s3://b/raw/a.wav"]["settings_stage"] == "vad"
    assert by_uri["s3://b/raw/a.wav"]["settings_fingerprint"] == "f1"
    assert by_uri["s3://b/raw/b.wav"]["state"] == "rejected"
    # A recording of the plan missing from the rows: the writer refuses the partition.
    broken = rows().filter(pa.compute.equal(rows().column("recording_id"), "rec-a"))
    with pytest.raises(RuntimeError, match="in neither"):
        writer(broken)
    two = pa.concat_tables([rows(), rows("0000-00001")])
    with pytest.raises(RuntimeError, match="exactly one partition"):
        writer(two)
    assert PARTITION_FIELD.name == "partition"
