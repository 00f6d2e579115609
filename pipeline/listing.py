"""Listing rows: one row per object, with a deterministic id.

recording_id = a hash of the object's URI and ETag (and version id, where the store has one), so
the same bytes under the same key get the same id in every run, and a replaced object a new one.

A night lists its input in tasks, page by page (pipeline/plan.py); `list_inputs`, which holds a
whole listing in one process, is for tests and benchmarks over a few objects.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

from operators.storage import ObjectInfo, ObjectStore
from schemas.config import InputConfig
from schemas.tables import LISTING_SCHEMA


def recording_id(info: ObjectInfo) -> str:
    ident = f"{info.uri}\n{info.etag}\n{info.version_id or ''}"
    return "rec-" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def listing_table(objects: list[ObjectInfo], run_id: str) -> pa.Table:
    """Listing rows of `objects` (folder placeholders, keys ending in `/`, left out)."""
    return pa.Table.from_pylist(
        [{"run_id": run_id, "recording_id": recording_id(o), "source_uri": o.uri,
          "source_etag": o.etag, "source_version_id": o.version_id, "source_bytes": o.size}
         for o in objects if not o.key.endswith("/")], schema=LISTING_SCHEMA)


def list_inputs(store: ObjectStore, cfg: InputConfig, run_id: str) -> pa.Table:
    """Every object under input.uri, sorted by key (tests and benchmarks only, see above)."""
    objects = [o for page in store.list_pages(cfg.uri) for o in page]
    objects.sort(key=lambda o: o.key)
    return listing_table(objects, run_id)
