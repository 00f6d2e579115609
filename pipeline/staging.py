"""A run's staging area, `<output.uri>/_staging/<run_id>/`: what a killed run needs to resume.

- `plan.parquet` + `plan.json`: the objects the run set out to process and the ledger marks,
  frozen at its start. A resumed run (same run id) works through the same objects even if the
  bucket changed meanwhile; new objects wait for the next night.
- `parts/part-NNNNN.parquet`: the result rows of one finished wave (`run.wave_objects`
  objects, every row of each). A resumed run skips the recordings they hold.

Nothing here is published: readers only read files that a summary.json or manifest.json lists.
The area is deleted once the run has committed; staging of other, dead runs is deleted by the
next run that holds the lock.
"""
from __future__ import annotations

import io
import json
import logging
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.storage import ObjectStore
from pipeline.publish import SUMMARY, parquet_bytes

log = logging.getLogger("audioverse.staging")


def staging_root(output_uri: str) -> str:
    return f"{output_uri.rstrip('/')}/_staging/"


class Staging:
    def __init__(self, store: ObjectStore, output_uri: str, run_id: str):
        self.store = store
        self.prefix = f"{staging_root(output_uri)}{run_id}/"
        self._next_part: int | None = None

    # --- the frozen plan ------------------------------------------------------------------
    def save_plan(self, todo: pa.Table, plan: dict) -> None:
        self.store.put(self.prefix + "plan.parquet", parquet_bytes(todo))
        self.store.put(self.prefix + "plan.json",  # last: plan.json marks the plan complete
                       json.dumps(plan, indent=2, sort_keys=True).encode(), "application/json")

    def load_plan(self) -> tuple[pa.Table, dict] | None:
        if not self.store.exists(self.prefix + "plan.json"):
            return None
        plan = json.loads(self.store.get(self.prefix + "plan.json"))
        todo = pq.read_table(io.BytesIO(self.store.get(self.prefix + "plan.parquet")))
        return todo, plan

    # --- checkpoints of finished recordings ---------------------------------------------------
    def load_parts(self) -> pa.Table | None:
        """Result rows of every recording finished by earlier attempts (None if none)."""
        objects = [o for o in self.store.list(self.prefix + "parts/")
                   if o.key.endswith(".parquet")]
        self._next_part = len(objects)
        tables = [pq.read_table(io.BytesIO(self.store.get(o.uri))) for o in objects]
        if not tables:
            return None
        # A part is one object, written whole or not at all; still, never count a recording
        # twice (e.g. two attempts raced before the lock existed): the first part wins.
        seen: set[str] = set()
        kept = []
        for table in tables:
            ids = table.column("recording_id")
            new = set(ids.to_pylist()) - seen
            kept.append(table.filter(pc.is_in(ids, value_set=pa.array(sorted(new), pa.string()))))
            seen |= new
        return pa.concat_tables(kept, promote_options="default")

    def write_part(self, table: pa.Table) -> str:
        if self._next_part is None:
            self._next_part = len(self.store.list(self.prefix + "parts/"))
        uri = f"{self.prefix}parts/part-{self._next_part:05d}.parquet"
        self.store.put(uri, parquet_bytes(table))
        self._next_part += 1
        return uri

    def clear(self) -> int:
        return self.store.delete_prefix(self.prefix)


def clean_dead_runs(store: ObjectStore, output_uri: str, keep_run_id: str) -> list[str]:
    """Delete the staging areas of other runs (called while holding the lock, so their runs are
    dead), and files a dead run left under runs/<id>/ without a summary.json (it died while
    publishing: nothing reads them, but they should not lie about). Returns the run ids."""
    root = output_uri.rstrip("/")
    cleaned = set()
    dead_staging = defaultdict(int)
    for obj in store.list(staging_root(output_uri)):
        run_id = obj.uri[len(staging_root(output_uri)):].split("/", 1)[0]
        if run_id != keep_run_id:
            dead_staging[run_id] += 1
    for run_id in dead_staging:
        store.delete_prefix(f"{staging_root(output_uri)}{run_id}/")
        cleaned.add(run_id)
    by_run = defaultdict(list)
    for obj in store.list(f"{root}/runs/"):
        run_id = obj.uri[len(f"{root}/runs/"):].split("/", 1)[0]
        by_run[run_id].append(obj.key)
    for run_id, keys in by_run.items():
        if run_id != keep_run_id and not any(k.endswith("/" + SUMMARY) for k in keys):
            store.delete_prefix(f"{root}/runs/{run_id}/")
            cleaned.add(run_id)
    if cleaned:
        log.warning("cleaned up what dead runs left behind: %s", ", ".join(sorted(cleaned)))
    return sorted(cleaned)

