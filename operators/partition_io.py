"""The two ends of a night's DAG: a partition's objects in, a partition's files out.

A partition (schemas/layout.py) is a set of listed objects that goes through every stage as one
block. `LoadPartitionStage` reads its objects from the frozen plan. `WritePartitionStage`, the
last stage, is where a partition's rows stop: a worker splits them into the annotations, rejects
and ledger tables, checks the row invariant for the partition, writes the three files under their
final names, then the partition's done marker (its stats), and hands the driver one small row of
stats. The driver never holds a row of a table.
"""
from __future__ import annotations

import json
import socket
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Stage
from operators.ledger_rows import ledger_rows
from operators.parquet_io import read_parquet, write_parquet
from operators.storage import ObjectStore
from schemas.config import StageResources, StorageConfig
from schemas.layout import Layout
from schemas.tables import (ANNOTATIONS_SCHEMA, LEDGER_SCHEMA, LISTING_SCHEMA, PARTITION_FIELD,
                            REJECTS_SCHEMA)

STATS_SCHEMA = pa.schema([pa.field("partition", pa.string()), pa.field("stats", pa.string())])


class LoadPartitionStage(Stage):
    """One row per partition (`partition`, `plan_uri`) -> the partition's listing rows."""

    name = "load"
    requires = ("partition", "plan_uri")
    adds = pa.schema(list(LISTING_SCHEMA) + [PARTITION_FIELD])
    consumes = ("plan_uri",)
    resources = StageResources(num_cpus=0.25, concurrency=2)

    def __init__(self, storage: StorageConfig):
        super().__init__()
        self.store = ObjectStore(storage, reached=True)

    @classmethod
    def output_schema(cls, input_schema: pa.Schema) -> pa.Schema:
        return cls.adds

    def process(self, batch: pa.Table) -> pa.Table:
        parts = []
        for row in batch.to_pylist():
            listing = read_parquet(self.store, row["plan_uri"]).select(LISTING_SCHEMA.names)
            listing = listing.cast(LISTING_SCHEMA)
            parts.append(listing.append_column(
                PARTITION_FIELD, pa.array([row["partition"]] * listing.num_rows, pa.string())))
        return pa.concat_tables(parts) if parts else self.adds.empty_table()


def split_results(results: pa.Table, version: str) -> tuple[pa.Table, pa.Table]:
    """Result rows -> (annotations, rejects), each in its published schema and stable order."""
    results = results.append_column("pipeline_version",
                                    pa.array([version] * results.num_rows, pa.string()))
    rejected = pc.is_valid(results.column("reject_reason"))
    ann = results.filter(pc.invert(rejected))
    ann = ann.select(ANNOTATIONS_SCHEMA.names).cast(ANNOTATIONS_SCHEMA)
    ann = ann.sort_by([("recording_id", "ascending"), ("segment_index", "ascending")])
    rej = results.filter(rejected).rename_columns(
        {"reject_stage": "stage", "reject_reason": "reason", "reject_detail": "detail"})
    rej = rej.select(REJECTS_SCHEMA.names).cast(REJECTS_SCHEMA)
    rej = rej.sort_by([("source_uri", "ascending")])
    return ann, rej


def invariant_problems(listed: pa.Array, ann: pa.Table, rej: pa.Table) -> list[str]:
    """Every listed object in exactly one of annotations / rejects; no segment twice."""
    listed_ids = set(listed.to_pylist())
    annotated = set(ann.column("recording_id").to_pylist())
    rejected = rej.column("recording_id").to_pylist()
    problems = []
    if len(rejected) != len(set(rejected)):
        problems.append("a recording is rejected twice")
    if annotated & set(rejected):
        problems.append(f"{len(annotated & set(rejected))} recordings are in both tables")
    if listed_ids - annotated - set(rejected):
        problems.append(f"{len(listed_ids - annotated - set(rejected))} recordings are in neither")
    if (annotated | set(rejected)) - listed_ids:
        problems.append("rows of recordings this partition did not list")
    segments = ann.column("segment_id")
    if len(pc.unique(segments)) != len(segments):
        problems.append("duplicate segment ids")
    return problems


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    return dict(sorted(Counter(v for v in column.to_pylist() if v is not None).items()))


def _sums(keys: pa.ChunkedArray, values: pa.ChunkedArray) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in zip(keys.to_pylist(), values.to_pylist()):
        if key is not None:
            out[key] = out.get(key, 0.0) + (value or 0.0)
    return dict(sorted(out.items()))


def partition_stats(ann: pa.Table, rej: pa.Table, listed: int) -> dict:
    """The additive figures of a partition; summary.json is their sum over the partitions."""
    audio_s = 0.0
    if ann.num_rows:
        first = ann.group_by("recording_id").aggregate([("recording_duration_s", "max")])
        audio_s = pc.sum(first.column("recording_duration_s_max")).as_py() or 0.0
    kept = pc.is_null(ann.column("drop_reason"))
    captioned = ann.filter(pc.is_valid(ann.column("caption_description")))
    flags = captioned.column("caption_flags").to_pylist()
    drops = ann.column("drop_reason").to_pylist()
    return {
        "inputs": listed,
        "recordings_annotated": len(pc.unique(ann.column("recording_id"))),
        "recordings_rejected": rej.num_rows,
        "rejected_by_reason": _counts(rej.column("reason")),
        "segments": ann.num_rows,
        "segments_by_content_type": _counts(ann.column("content_type")),
        "segments_kept": int(pc.sum(kept).as_py() or 0),
        "segments_dropped_by_reason": _counts(ann.column("drop_reason")),
        "audio_s": audio_s,
        "segment_s": pc.sum(ann.column("duration_s")).as_py() or 0.0,
        "segment_s_by_content_type": _sums(ann.column("content_type"), ann.column("duration_s")),
        "captions": {
            "sources": _counts(captioned.column("caption_source")),
            "captioned": captioned.num_rows,
            "repaired": int(pc.sum(captioned.column("caption_repaired")).as_py() or 0),
            "corrected": sum(1 for f in flags if any(x.startswith("corrected:") for x in f or [])),
            "invalid": drops.count("caption_invalid"),
            "endpoint_errors": drops.count("caption_error"),
        },
    }


def _node() -> str:
    """The Ray node this worker runs on (its host name outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - only informative
        pass
    return socket.gethostname()


class WritePartitionStage(Stage):
    """A partition's result rows -> its annotations, rejects and ledger files and its done marker;
    out: one row (`partition`, `stats` as JSON)."""

    name = "write"
    requires = ("recording_id", "reject_reason", PARTITION_FIELD.name)
    adds = STATS_SCHEMA
    skips_rejected = False  # a partition of rejects only is written all the same
    resources = StageResources(num_cpus=0.25, concurrency=2)

    def __init__(self, storage: StorageConfig, output_uri: str, run_id: str, version: str,
                 stage_order: dict[str, int], fingerprints: dict[str, str]):
        super().__init__()
        self.store = ObjectStore(storage, reached=True)
        self.layout = Layout(output_uri)
        self.run_id = run_id
        self.version = version
        self.stage_order = stage_order
        self.fingerprints = fingerprints

    @classmethod
    def output_schema(cls, input_schema: pa.Schema) -> pa.Schema:
        return cls.adds

    def process(self, batch: pa.Table) -> pa.Table:
        partitions = pc.unique(batch.column(PARTITION_FIELD.name)).to_pylist()
        if len(partitions) != 1:
            raise RuntimeError(f"a block must hold exactly one partition, got {partitions}: "
                               f"the DAG split or merged partition blocks")
        partition = partitions[0]
        listed = read_parquet(self.store, self.layout.plan_part(self.run_id, partition),
                              columns=["recording_id"]).column("recording_id")
        ann, rej = split_results(batch, self.version)
        problems = invariant_problems(listed, ann, rej)
        if problems:
            raise RuntimeError(f"partition {partition} breaks the row invariant: "
                               + "; ".join(problems))
        ledger = ledger_rows(self.run_id, ann, rej, self.stage_order, self.fingerprints,
                             self.version)
        files = {}
        for table, rows, schema in (("annotations", ann, ANNOTATIONS_SCHEMA),
                                    ("rejects", rej, REJECTS_SCHEMA),
                                    ("ledger", ledger, LEDGER_SCHEMA)):
            if rows.num_rows == 0:
                continue  # no empty files; a run with none at all gets one empty file
            key = Layout.part_key(table, partition)
            files[table] = write_parquet(self.store, self.layout.run(self.run_id) + key, rows,
                                         schema, table, path=key).as_dict()
        stats = {"partition": partition, "node": _node(), "files": files,
                 **partition_stats(ann, rej, len(listed))}
        text = json.dumps(stats, sort_keys=True)
        # The marker last: a partition with a marker has all its files.
        self.store.put(self.layout.done_marker(self.run_id, partition), text.encode(),
                       "application/json")
        return pa.Table.from_pylist([{"partition": partition, "stats": text}], schema=STATS_SCHEMA)
