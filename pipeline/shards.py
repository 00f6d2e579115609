"""Training shards and the code cache on S3.

Shards: `<release>/<split>/shard-00000.parquet`, zstd, rows in segment id order, a shard closed
once its rows reach `shards.target_mb` (estimated from the codes, which dominate), row groups of
`shards.row_group_rows` rows so a reader can stream a shard without holding it whole.

Code cache: `<output>/codes/<codec key>/part-<release_id>.parquet`, one row per segment id; a
release reads the cache for its codec version and tokenizes only the segments it lacks. Codes are
deterministic, so a cache file written by a release that died later is still right.
"""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from operators.parquet_io import read_parquet, write_parquet
from operators.storage import ObjectStore
from schemas.layout import Layout
from schemas.release import CODES_CACHE_SCHEMA, SHARD_SCHEMA

ROW_OVERHEAD_BYTES = 600  # text, caption and provenance columns of one row, compressed


def codec_key(codec_version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", codec_version)


def cache_prefix(output_uri: str, codec_version: str) -> str:
    return Layout(output_uri).codes(codec_key(codec_version))


def read_code_cache(store: ObjectStore, output_uri: str, codec_version: str,
                    wanted: set[str]) -> pa.Table:
    """Cached codes of the wanted segments (each segment once, whichever file has it)."""
    parts = []
    for obj in store.list(cache_prefix(output_uri, codec_version)):
        if not obj.key.endswith(".parquet"):
            continue
        table = read_parquet(store, obj.uri)
        mask = pc.is_in(table.column("segment_id"), value_set=pa.array(sorted(wanted)))
        parts.append(table.filter(mask).cast(CODES_CACHE_SCHEMA))
    if not parts:
        return CODES_CACHE_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    # The same segment in two cache files (two releases raced) holds the same codes: keep one.
    seen, keep = set(), []
    for i, sid in enumerate(table.column("segment_id").to_pylist()):
        if sid not in seen:
            seen.add(sid)
            keep.append(i)
    return table.take(keep)


def write_code_cache(store: ObjectStore, output_uri: str, codec_version: str,
                     release_id: str, table: pa.Table) -> str | None:
    if table.num_rows == 0:
        return None
    uri = cache_prefix(output_uri, codec_version) + f"part-{release_id}.parquet"
    write_parquet(store, uri, table, CODES_CACHE_SCHEMA, "codes")
    return uri


def write_split_shards(store: ObjectStore, release_prefix: str, split: str, rows: pa.Table,
                       target_mb: float, row_group_rows: int) -> list[dict]:
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
        path = f"{split}/shard-{n:05d}.parquet"
        stats = write_parquet(store, release_prefix + path, chunk, SHARD_SCHEMA, "shards",
                              path=path, row_group_rows=row_group_rows)
        entries.append({
            **stats.as_dict(),
            "hours": round((pc.sum(chunk.column("duration_s")).as_py() or 0.0) / 3600, 6),
        })
    return entries
