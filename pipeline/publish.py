"""Write a run's tables to S3: data files under deterministic names first, summary.json last.

summary.json is the commit marker: a run that died before writing it leaves nothing that looks
complete, and readers take the list of data files from it, never from a directory listing.
"""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.storage import ObjectStore
from pipeline import __version__
from schemas.tables import ANNOTATIONS_SCHEMA, REJECTS_SCHEMA, with_metadata

SUMMARY = "summary.json"


def run_prefix(output_uri: str, run_id: str) -> str:
    return f"{output_uri.rstrip('/')}/runs/{run_id}/"


def split_results(results: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Result rows -> (annotations, rejects), each in its published schema and stable order."""
    version = pa.array([__version__] * results.num_rows, pa.string())
    results = results.append_column("pipeline_version", version)
    rejected = pc.is_valid(results.column("reject_reason"))

    ann = results.filter(pc.invert(rejected))
    ann = ann.select(ANNOTATIONS_SCHEMA.names).cast(ANNOTATIONS_SCHEMA)
    ann = ann.sort_by([("recording_id", "ascending"), ("segment_index", "ascending")])

    rej = results.filter(rejected).rename_columns(
        {"reject_stage": "stage", "reject_reason": "reason", "reject_detail": "detail"})
    rej = rej.select(REJECTS_SCHEMA.names).cast(REJECTS_SCHEMA)
    rej = rej.sort_by([("source_uri", "ascending")])
    return ann, rej


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as Parquet bytes (zstd), the form every pipeline file is written in."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=50_000)
    return buf.getvalue()


def write_table(store: ObjectStore, prefix: str, name: str, table: pa.Table,
                schema: pa.Schema, rows_per_file: int) -> list[dict]:
    """Write `table` as <prefix><name>/part-00000.parquet ... (at least one file, even empty)."""
    files = []
    count = max(1, -(-table.num_rows // rows_per_file))
    for part in range(count):
        chunk = table.slice(part * rows_per_file, rows_per_file)
        key = f"{name}/part-{part:05d}.parquet"
        write_parquet(store, prefix + key, chunk, schema, name)
        files.append({"path": key, "rows": chunk.num_rows})
    return files


def write_parquet(store: ObjectStore, uri: str, table: pa.Table, schema: pa.Schema,
                  name: str) -> None:
    """One Parquet object carrying the schema version and table name in its metadata."""
    table = table.replace_schema_metadata(with_metadata(schema, name).metadata)
    store.put(uri, parquet_bytes(table))


def write_summary(store: ObjectStore, prefix: str, summary: dict) -> str:
    uri = prefix + SUMMARY
    store.put(uri, json.dumps(summary, indent=2, sort_keys=True).encode(), "application/json")
    return uri


def read_summary(store: ObjectStore, prefix: str) -> dict | None:
    uri = prefix + SUMMARY
    if not store.exists(uri):
        return None
    return json.loads(store.get(uri))
