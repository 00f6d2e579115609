"""Parquet in and out of object storage: the one writer of every file the pipeline publishes.

Every file is zstd-compressed, carries its table's name and the schema version in its metadata
(schemas/tables.py `with_metadata`), and is written whole by one PUT (so it exists completely or
not at all). Writing returns the file's stats, which is all a worker hands back to the driver.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import ObjectStore
from schemas.tables import with_metadata

DEFAULT_ROW_GROUP_ROWS = 50_000


@dataclass(frozen=True)
class FileStats:
    """What a writer reports about one file: its path (relative to its run or release, as the
    summary or manifest lists it), rows, bytes and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def as_dict(self) -> dict:
        return asdict(self)


def parquet_bytes(table: pa.Table, schema: pa.Schema | None = None, name: str | None = None,
                  row_group_rows: int = DEFAULT_ROW_GROUP_ROWS) -> bytes:
    """`table` as Parquet bytes; with `schema`, cast to it and stamped with `name` and the
    schema version."""
    if schema is not None:
        table = table.select(schema.names).cast(schema)
        table = table.replace_schema_metadata(with_metadata(schema, name or "").metadata)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=max(1, row_group_rows))
    return buf.getvalue()


def write_parquet(store: ObjectStore, uri: str, table: pa.Table, schema: pa.Schema | None = None,
                  name: str | None = None, path: str | None = None,
                  row_group_rows: int = DEFAULT_ROW_GROUP_ROWS) -> FileStats:
    """Write one Parquet object; returns its stats (`path` defaults to the URI)."""
    data = parquet_bytes(table, schema, name, row_group_rows)
    store.put(uri, data)
    return FileStats(path or uri, table.num_rows, len(data), hashlib.sha256(data).hexdigest())


def read_parquet(store: ObjectStore, uri: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get(uri)), columns=columns)


def parquet_file(store: ObjectStore, uri: str) -> pq.ParquetFile:
    """One object as a Parquet file: its schema (with metadata) before choosing columns."""
    return pq.ParquetFile(io.BytesIO(store.get(uri)))
