"""Training shards and the code cache on S3.

Shards: `<release>/<split>/shard-00000.parquet`, zstd, rows in segment id order, a shard closed
once its rows reach `shards.target_mb` (estimated from the codes, which dominate), row groups of
`shards.row_group_rows` rows so a reader can stream a shard without holding it whole.

Code cache: `<output>/codes/<codec key>/part-<release_id>.parquet`, one row per segment id; a
release reads the cache for its codec version and tokenizes only the segments it lacks. Codes are
deterministic, so a cache file written by a release that died later is still right.
"""
from __future__ import annotations

import hashlib
import io
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.storage import ObjectStore
from schemas.release import CODES_CACHE_SCHEMA, SHARD_SCHEMA

ROW_OVERHEAD_BYTES = 600  # text, caption and provenance columns of one row, compressed


def codec_key(codec_version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", codec_version)


def cache_prefix(output_uri: str, codec_version: str) -> str:
    return f"{output_uri.rstrip('/')}/codes/{codec_key(codec_version)}/"


def read_code_cache(store: ObjectStore, output_uri: str, codec_version: str,
                    wanted: set[str]) -> pa.Table:
    """Cached codes of the wanted segments (each segment once, whichever file has it)."""
    parts = []
    for obj in store.list(cache_prefix(output_uri, codec_version)):
        if not obj.key.endswith(".parquet"):
            continue
        table = pq.read_table(io.BytesIO(store.get(obj.uri)))
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
    buf = io.BytesIO()
    pq.write_table(table.select(CODES_CACHE_SCHEMA.names).cast(CODES_CACHE_SCHEMA), buf,
                   compression="zstd")
    store.put(uri, buf.getvalue())
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
        buf = io.BytesIO()
        pq.write_table(chunk, buf, compression="zstd", row_group_size=row_group_rows)
        data = buf.getvalue()
        path = f"{split}/shard-{n:05d}.parquet"
        store.put(release_prefix + path, data)
        entries.append({
            "path": path, "rows": chunk.num_rows, "bytes": len(data),
            "hours": round((pc.sum(chunk.column("duration_s")).as_py() or 0.0) / 3600, 6),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    return entries
