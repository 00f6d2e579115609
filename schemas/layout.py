"""The layout of a dataset under `output.uri`: every path the pipeline reads or writes, in one place.

```
<output>/
  runs/<run_id>/                        a nightly run; committed once summary.json exists
    annotations/part-<partition>.parquet  one file per partition (written by a Ray worker)
    rejects/part-<partition>.parquet
    ledger/part-<partition>.parquet       the sources this run dealt with, and how
    ledger/marks-<bucket>.parquet         sources seen deleted or taken down (planning)
    summary.json                          written last: the commit point; lists every file
  _staging/<run_id>/                    what a run needs to resume; deleted once it commits
    listing/b<bucket>/<task>.parquet      the input listing, by ledger bucket
    plan/part-<partition>.parquet         the objects of each partition (frozen at the start)
    plan.json                             the plan's counts and partitions; written last
    done/<partition>.json                 marker: the partition's files are written (its stats)
    progress.json                         live counts of a running run (audioverse status)
  _lock/run.json                        the run lock (one run at a time per dataset)
  ledger/current.json                   the compacted ledger: which version, counts by state
  ledger/v<version>/bucket-<b>.parquet  latest state of every source, by hash of its URI
  releases/<release_id>/                a release; manifest.json written last
  codes/<codec key>/                    the code cache of one codec version:
    bucket-<b>/part-<release>-<n>.parquet codes by a hash of the segment id (written by workers)
    codec.json                            the codec's rate, frame rate and codebooks
```

A partition is a set of objects of one ledger bucket that goes through the DAG as one block:
`<bucket>-<chunk>`, e.g. `0007-00012`; its rows are written together and marked done together.
"""
from __future__ import annotations

import hashlib

SUMMARY = "summary.json"
MANIFEST = "manifest.json"
PLAN = "plan.json"
LEDGER_CURRENT = "current.json"
RUN_TABLES = ("annotations", "rejects", "ledger")


def partition_id(bucket: int, chunk: int) -> str:
    return f"{bucket:04d}-{chunk:05d}"


def partition_bucket(partition: str) -> int:
    return int(partition.split("-", 1)[0])


def source_bucket(uri: str, buckets: int) -> int:
    """The ledger bucket of a source URI: stable across runs, machines and Python versions."""
    return int.from_bytes(hashlib.sha256(uri.encode()).digest()[:8], "big") % buckets


class Layout:
    """Paths under one dataset's `output.uri` (all S3 URIs, directories end with `/`)."""

    def __init__(self, output_uri: str):
        self.root = output_uri.rstrip("/")

    # --- runs ----------------------------------------------------------------------------------
    @property
    def runs(self) -> str:
        return f"{self.root}/runs/"

    def run(self, run_id: str) -> str:
        return f"{self.runs}{run_id}/"

    def summary(self, run_id: str) -> str:
        return self.run(run_id) + SUMMARY

    @staticmethod
    def part_key(table: str, partition: str) -> str:
        """A run's file of one partition, relative to the run (as summary.json lists it)."""
        return f"{table}/part-{partition}.parquet"

    @staticmethod
    def bucket_parts_key(table: str, bucket: int) -> str:
        """The prefix (relative to the run) of a run's files of one ledger bucket's partitions."""
        return f"{table}/part-{bucket:04d}-"

    @staticmethod
    def marks_key(bucket: int) -> str:
        return f"ledger/marks-{bucket:04d}.parquet"

    # --- staging -------------------------------------------------------------------------------
    @property
    def staging_root(self) -> str:
        return f"{self.root}/_staging/"

    def staging(self, run_id: str) -> str:
        return f"{self.staging_root}{run_id}/"

    def listing_dir(self, run_id: str, bucket: int) -> str:
        return f"{self.staging(run_id)}listing/b{bucket:04d}/"

    def todo(self, run_id: str, bucket: int) -> str:
        return f"{self.staging(run_id)}plan/todo-{bucket:04d}.parquet"

    def plan_part(self, run_id: str, partition: str) -> str:
        return f"{self.staging(run_id)}plan/part-{partition}.parquet"

    def plan_json(self, run_id: str) -> str:
        return self.staging(run_id) + PLAN

    def done_dir(self, run_id: str) -> str:
        return f"{self.staging(run_id)}done/"

    def done_marker(self, run_id: str, partition: str) -> str:
        return f"{self.done_dir(run_id)}{partition}.json"

    def progress(self, run_id: str) -> str:
        return f"{self.staging(run_id)}progress.json"

    # --- the lock and the ledger ------------------------------------------------------------
    @property
    def lock(self) -> str:
        return f"{self.root}/_lock/run.json"

    @property
    def ledger_root(self) -> str:
        return f"{self.root}/ledger/"

    @property
    def ledger_current(self) -> str:
        return self.ledger_root + LEDGER_CURRENT

    def ledger_version(self, version: int) -> str:
        return f"{self.ledger_root}v{version:06d}/"

    def ledger_bucket(self, version: int, bucket: int) -> str:
        return f"{self.ledger_version(version)}bucket-{bucket:04d}.parquet"

    # --- releases and the code cache -----------------------------------------------------------
    @property
    def releases(self) -> str:
        return f"{self.root}/releases/"

    def release(self, release_id: str) -> str:
        return f"{self.releases}{release_id}/"

    def codes(self, codec_key: str) -> str:
        return f"{self.root}/codes/{codec_key}/"
