"""List the input prefix into listing rows: one row per object, with a deterministic id.

recording_id = a hash of the object's URI and ETag (and version id, where the store has one), so
the same bytes under the same key get the same id in every run, and a replaced object a new one.
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


def list_inputs(store: ObjectStore, cfg: InputConfig, run_id: str,
                apply_limit: bool = True) -> pa.Table:
    objects = [o for o in store.list(cfg.uri) if not o.key.endswith("/")]
    objects.sort(key=lambda o: o.key)
    if apply_limit and cfg.limit is not None:
        objects = objects[: cfg.limit]
    return pa.Table.from_pylist(
        [
            {
                "run_id": run_id,
                "recording_id": recording_id(o),
                "source_uri": o.uri,
                "source_etag": o.etag,
                "source_version_id": o.version_id,
                "source_bytes": o.size,
            }
            for o in objects
        ],
        schema=LISTING_SCHEMA,
    )
