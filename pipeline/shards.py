"""Codes and training shards of a release, written by workers.

Code cache: `<output>/codes/<codec key>/bucket-<b>/part-<release>-<n>.parquet`, one row per
segment id, partitioned by a hash of the segment id (the dataset's ledger bucket count), so the
task that looks up one bucket's segments reads only that bucket's files. (A cache file written
before it was partitioned, directly under `codes/<codec key>/`, is read by every bucket.) Codes
are deterministic, so a cache file written by a release that died later is still right.

Shards: `<release>/<split>/shard-<block>-<n>.parquet`, zstd, rows in segment id order within a
shard, a shard closed once its rows reach `shards.target_mb` (estimated from the codes, which
dominate), row groups of `shards.row_group_rows` rows so a reader can stream a shard without
holding it whole. Each worker writes the shards of the rows it holds; the manifest lists them.
"""
from __future__ import annotations

import hashlib
import re

import pyarrow as pa
import pyarrow.compute as pc

from operators.parquet_io import read_parquet, write_parquet
from operators.storage import ObjectStore
from schemas.config import StorageConfig
from schemas.layout import Layout
from schemas.release import CODES_CACHE_SCHEMA, SHARD_SCHEMA
from schemas.tables import PIPELINE_RATE_HZ

ROW_OVERHEAD_BYTES = 600  # text, caption and provenance columns of one row, compressed


def codec_key(codec_version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", codec_version)


def cache_prefix(output_uri: str, codec_version: str) -> str:
    return Layout(output_uri).codes(codec_key(codec_version))


def cache_bucket_prefix(output_uri: str, codec_version: str, bucket: int) -> str:
    return f"{cache_prefix(output_uri, codec_version)}bucket-{bucket:04d}/"


def attach_cached_codes(group: pa.Table, storage: StorageConfig, output_uri: str,
                        codec_version: str) -> pa.Table:
    """Ray Data `map_groups` over the selected rows grouped by code bucket: the codes cached
    for them (null where none), read from this bucket's cache files only."""
    store = ObjectStore(storage, reached=True)
    bucket = int(group.column("code_bucket")[0].as_py())
    wanted = group.column("segment_id")
    files = [o.uri for page in store.list_pages(
        cache_bucket_prefix(output_uri, codec_version, bucket)) for o in page]
    files += [o.uri for page in store.list_pages(cache_prefix(output_uri, codec_version),
                                                  direct_only=True) for o in page
              if o.key.endswith(".parquet")]  # written before the cache was partitioned
    parts = []
    for uri in files:
        table = read_parquet(store, uri)
        parts.append(table.filter(pc.is_in(table.column("segment_id"), value_set=wanted))
                     .cast(CODES_CACHE_SCHEMA))
    cache = pa.concat_tables(parts) if parts else CODES_CACHE_SCHEMA.empty_table()
    where = pc.index_in(wanted, value_set=cache.column("segment_id"))  # the first copy
    out = group
    for name in ("codes", "num_codebooks", "num_frames"):
        out = out.append_column(name, pc.take(cache.column(name), where))
    return out.append_column("from_cache", pc.is_valid(where))


def _block_name(rows: pa.Table) -> str:
    """A deterministic name for the files a worker writes from these rows."""
    ids = sorted(rows.column("segment_id").to_pylist())
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]


def write_codes_and_shards(block: pa.Table, storage: StorageConfig, output_uri: str,
                           release_prefix: str, release_id: str, codec_name: str,
                           codec_version: str, target_mb: float,
                           row_group_rows: int) -> pa.Table:
    """Ray Data task over tokenized rows: the new codes into the cache (by bucket), the rows
    with codes into shards of their split; one row of stats (JSON) back."""
    import json

    store = ObjectStore(storage, reached=True)
    name = _block_name(block) if block.num_rows else "empty"
    failed = block.filter(pc.is_valid(block.column("tokenize_error")))
    good = block.filter(pc.is_null(block.column("tokenize_error")))
    fresh = good.filter(pc.invert(pc.fill_null(good.column("from_cache"), False)))
    cache_files = []
    for bucket in pc.unique(fresh.column("code_bucket")).to_pylist():
        rows = fresh.filter(pc.equal(fresh.column("code_bucket"), bucket))
        uri = f"{cache_bucket_prefix(output_uri, codec_version, bucket)}part-{release_id}-" \
              f"{name}.parquet"
        rows = rows.set_column(rows.schema.get_field_index("codec_version"), "codec_version",
                               pa.array([codec_version] * rows.num_rows, pa.string()))
        write_parquet(store, uri, rows, CODES_CACHE_SCHEMA, "codes")
        cache_files.append(uri)
    shards = {}
    for split in pc.unique(good.column("split")).to_pylist():
        rows = shard_rows(good.filter(pc.equal(good.column("split"), split)), codec_name,
                          codec_version)
        shards[split] = write_split_shards(store, release_prefix, split, rows, target_mb,
                                           row_group_rows, name)
    stats = {"from_cache": good.num_rows - fresh.num_rows, "new": fresh.num_rows,
             "cache_files": cache_files, "shards": shards,
             "failed": dict(zip(failed.column("segment_id").to_pylist(),
                                failed.column("tokenize_error").to_pylist()))}
    return pa.table({"stats": pa.array([json.dumps(stats)], pa.string())})


def shard_rows(rows: pa.Table, codec_name: str, codec_version: str) -> pa.Table:
    """Selected rows with their codes, as SHARD_SCHEMA."""
    n = rows.num_rows
    cols = {
        "codec_name": pa.array([codec_name] * n, pa.string()),
        "codec_version": pa.array([codec_version] * n, pa.string()),
        "sample_rate": pa.array([PIPELINE_RATE_HZ] * n, pa.int32()),
    }
    arrays = [cols[f.name] if f.name in cols else rows.column(f.name).cast(f.type)
              for f in SHARD_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SHARD_SCHEMA)


def write_split_shards(store: ObjectStore, release_prefix: str, split: str, rows: pa.Table,
                       target_mb: float, row_group_rows: int, name: str = "00000"
                       ) -> list[dict]:
    """Write one split's rows (SHARD_SCHEMA) as shards; returns the manifest entries."""
    rows = rows.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA).sort_by("segment_id")
    frames = rows.column("num_frames").to_pylist()
    books = rows.column("num_codebooks").to_pylist()
    est = [2 * f * b + ROW_OVERHEAD_BYTES for f, b in zip(frames, books)]
    limit = target_mb * 1024 * 1024
    bounds, start, size = [], 0, 0
    for i, b in enumerate(est):
        if size and size + b > limit:
            bounds.append((start, i))
            start, size = i, 0
        size += b
    if rows.num_rows:
        bounds.append((start, rows.num_rows))
    entries = []
    for n, (a, b) in enumerate(bounds):
        chunk = rows.slice(a, b - a)
        path = f"{split}/shard-{name}-{n:03d}.parquet"
        stats = write_parquet(store, release_prefix + path, chunk, SHARD_SCHEMA, "shards",
                              path=path, row_group_rows=row_group_rows)
        entries.append({
            **stats.as_dict(),
            "hours": round((pc.sum(chunk.column("duration_s")).as_py() or 0.0) / 3600, 6),
        })
    return entries
