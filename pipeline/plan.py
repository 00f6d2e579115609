"""Planning a night in tasks: list the input, join the listing with the ledger snapshot bucket by
bucket, cut each bucket's objects to process into partitions, and freeze that plan.

The driver holds no listing row and no ledger row: it starts the tasks and sums what they report
(counts per bucket, and the ids of the partitions). Steps:

1. Listing: one Ray task per child prefix of `input.uri` (and one for the objects directly under
   it) pages through S3 and writes listing parts under `_staging/<run_id>/listing/`.
   The listing tasks write their rows by ledger bucket (a hash of the source URI).
2. Join: one task per bucket reads that bucket's listing and that bucket of the snapshot,
   decides for every listed object (pipeline/ledger.py `plan_run`), writes the ledger marks
   (deleted, taken down) and cuts the objects to process (sorted by key) into partitions of at
   most `run.partition_objects` objects and `run.partition_bytes` bytes, one plan part each.
   With `input.limit` (for trials), the cut waits until the globally first N keys are known.
3. `plan.json`, written last, freezes the plan: a resumed run works through exactly these.
"""
from __future__ import annotations

import heapq
import json

import pyarrow as pa
import pyarrow.compute as pc

from operators.logs import stage_logger
from operators.ledger_rows import mark_rows
from operators.parquet_io import read_parquet, write_parquet
from operators.storage import ObjectStore
from pipeline import __version__
from pipeline.ledger import Snapshot, latest_states, plan_run, read_bucket
from pipeline.listing import listing_table
from pipeline.ray_session import TASK_CPUS
from schemas.config import PipelineConfig, StorageConfig
from schemas.layout import Layout, partition_id, source_bucket
from schemas.tables import LEDGER_SCHEMA, LISTING_SCHEMA

log = stage_logger("plan")

LISTING_PART_ROWS = 100_000
COUNT_KEYS = ("listed", "new", "changed", "unchanged", "retried", "reconfigured",
              "reprocess_reason", "reprocessed", "deleted", "takedown")


def write_listing_parts(store: ObjectStore, layout: Layout, run_id: str, listing: pa.Table,
                        buckets: int, name: str) -> int:
    """Listing rows into the staging area, one file per ledger bucket they fall in
    (`listing/b<bucket>/<name>.parquet`): each bucket's planning task reads only its own."""
    keys = pa.array([source_bucket(u, buckets) for u in listing.column("source_uri").to_pylist()],
                    pa.int32())
    written = 0
    for bucket in pc.unique(keys).to_pylist():
        rows = listing.filter(pc.equal(keys, bucket))
        write_parquet(store, f"{layout.listing_dir(run_id, bucket)}{name}.parquet", rows,
                      LISTING_SCHEMA, "listing")
        written += 1
    return written


def list_prefix(storage: StorageConfig, output_uri: str, uri: str, direct_only: bool,
                run_id: str, name: str, buckets: int) -> int:
    """A listing task: every object under `uri` (or only those directly under it), written by
    bucket in chunks of at most LISTING_PART_ROWS objects. Returns how many objects."""
    store = ObjectStore(storage, reached=True)
    layout = Layout(output_uri)
    buffer, objects, chunk = [], 0, 0

    def flush() -> None:
        nonlocal chunk
        if buffer:
            write_listing_parts(store, layout, run_id, listing_table(buffer, run_id), buckets,
                                f"{name}-{chunk:05d}")
            chunk += 1
            buffer.clear()

    for page in store.list_pages(uri, direct_only=direct_only):
        buffer.extend(page)
        objects += len(page)
        if len(buffer) >= LISTING_PART_ROWS:
            flush()
    flush()
    return objects


def list_input(cfg: PipelineConfig, store: ObjectStore, layout: Layout, run_id: str,
               buckets: int) -> int:
    """List the whole input prefix in tasks (one per child prefix, one for the objects directly
    under it) into the staging area; returns how many objects."""
    import ray

    base = cfg.input.uri if cfg.input.uri.endswith("/") else cfg.input.uri + "/"
    dirs = store.list_dirs(base)
    task = ray.remote(num_cpus=TASK_CPUS, max_retries=3)(list_prefix)
    futures = [task.remote(cfg.storage, cfg.output.uri, base, True, run_id, "direct", buckets)]
    futures += [task.remote(cfg.storage, cfg.output.uri, f"{base}{d}/", False, run_id,
                            f"dir{i:05d}", buckets) for i, d in enumerate(dirs)]
    objects = sum(ray.get(futures))
    log.info("listed %d objects under %s (%d listing tasks)", objects, cfg.input.uri,
             len(futures))
    return objects


def plan_bucket(storage: StorageConfig, output_uri: str, run_id: str, snapshot: dict,
                bucket: int, input_uri: str, takedowns: list[str], full: bool,
                fingerprints: dict[str, str], reprocess: list[str], limit: int | None,
                max_objects: int, max_bytes: int) -> dict:
    """A planning task: the bucket's listing against the bucket's snapshot rows. Writes the
    ledger marks and either the partitions (their plan parts) or, with `input.limit`, the
    bucket's objects to process, to be cut once the global first N keys are known."""
    store = ObjectStore(storage, reached=True)
    layout = Layout(output_uri)
    snap = Snapshot(**snapshot)
    files = [o.uri for page in store.list_pages(layout.listing_dir(run_id, bucket)) for o in page]
    tables = [read_parquet(store, u) for u in files]
    listing = pa.concat_tables(tables).cast(LISTING_SCHEMA) if tables \
        else LISTING_SCHEMA.empty_table()
    states = latest_states(read_bucket(store, layout, snap, bucket))
    plan = plan_run(listing, states, set(takedowns), input_uri, full=full,
                    fingerprints=fingerprints, reprocess=frozenset(reprocess))
    todo = plan.todo.sort_by([("source_uri", "ascending")])
    marks = None
    if plan.marks:
        key = Layout.marks_key(bucket)
        marks = write_parquet(store, layout.run(run_id) + key,
                              mark_rows(run_id, plan.marks, __version__), LEDGER_SCHEMA,
                              "ledger", path=key).as_dict()
    out = {"bucket": bucket, "counts": {k: plan.counts[k] for k in COUNT_KEYS}, "marks": marks,
           "todo": todo.num_rows}
    if limit is None:
        out["partitions"] = _cut(store, layout, run_id, bucket, todo, max_objects, max_bytes)
    else:
        write_parquet(store, layout.todo(run_id, bucket), todo, LISTING_SCHEMA, "plan")
        out["first_keys"] = todo.column("source_uri").to_pylist()[:limit]
    return out


def partition_bounds(sizes: list[int], max_objects: int, max_bytes: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of consecutive objects: at most `max_objects` objects and
    `max_bytes` bytes each, except that an object bigger than `max_bytes` is one of its own."""
    bounds, start, size = [], 0, 0
    for i, b in enumerate(sizes):
        if i > start and (i - start >= max_objects or size + b > max_bytes):
            bounds.append((start, i))
            start, size = i, 0
        size += b
    if sizes:
        bounds.append((start, len(sizes)))
    return bounds


def _cut(store: ObjectStore, layout: Layout, run_id: str, bucket: int, todo: pa.Table,
         max_objects: int, max_bytes: int) -> list[dict]:
    """`todo` as partitions of at most `max_objects` objects and `max_bytes` bytes (an object
    bigger than that is a partition of its own), one plan part each."""
    out = []
    bounds = partition_bounds(todo.column("source_bytes").to_pylist(), max_objects, max_bytes)
    for chunk, (a, b) in enumerate(bounds):
        part = partition_id(bucket, chunk)
        rows = todo.slice(a, b - a)
        write_parquet(store, layout.plan_part(run_id, part), rows, LISTING_SCHEMA, "plan")
        out.append({"partition": part, "objects": rows.num_rows,
                    "bytes": int(pc.sum(rows.column("source_bytes")).as_py() or 0)})
    return out


def cut_limited(storage: StorageConfig, output_uri: str, run_id: str, bucket: int,
                cutoff: str, max_objects: int, max_bytes: int) -> list[dict]:
    """With `input.limit`: the bucket's objects at or before `cutoff` as partitions."""
    store = ObjectStore(storage, reached=True)
    layout = Layout(output_uri)
    todo = read_parquet(store, layout.todo(run_id, bucket))
    todo = todo.filter(pc.less_equal(todo.column("source_uri"), cutoff))
    return _cut(store, layout, run_id, bucket, todo, max_objects, max_bytes)


def make_plan(cfg: PipelineConfig, store: ObjectStore, layout: Layout, run_id: str,
              snapshot: Snapshot, takedowns: set[str], full: bool,
              fingerprints: dict[str, str], reprocess: frozenset[str],
              listed: bool = False) -> dict:
    """Plan the run in tasks; returns the plan (counts, partitions, marks files), not saved.
    `listed`: the listing is in the staging area already (the scale benchmark writes synthetic
    ones); by default the input prefix is listed first."""
    import ray

    buckets = snapshot.buckets
    if not listed:
        list_input(cfg, store, layout, run_id, buckets)
    task = ray.remote(num_cpus=TASK_CPUS, max_retries=3)(plan_bucket)
    by_bucket = {b: [] for b in range(buckets)}
    for takedown in takedowns:
        by_bucket[source_bucket(takedown, buckets)].append(takedown)
    limit = cfg.input.limit
    results = ray.get([task.remote(
        cfg.storage, cfg.output.uri, run_id, snapshot.as_dict(), b, cfg.input.uri,
        by_bucket[b], full, fingerprints, sorted(reprocess), limit, cfg.run.partition_objects,
        cfg.run.partition_bytes) for b in range(buckets)])
    counts = {k: sum(r["counts"][k] for r in results) for k in COUNT_KEYS}
    marks = sorted((r["marks"] for r in results if r["marks"]), key=lambda m: m["path"])
    todo_total = sum(r["todo"] for r in results)
    if limit is None:
        partitions = [p for r in results for p in r["partitions"]]
    else:
        # The globally first N keys: every bucket's first N, merged; cut at the N-th.
        firsts = list(heapq.merge(*(r["first_keys"] for r in results)))
        cutoff = firsts[min(limit, len(firsts)) - 1] if firsts else ""
        counts["deferred_by_limit"] = max(0, todo_total - limit)
        cut = ray.remote(num_cpus=TASK_CPUS, max_retries=3)(cut_limited)
        partitions = [p for chunk in ray.get([
            cut.remote(cfg.storage, cfg.output.uri, run_id, b, cutoff,
                       cfg.run.partition_objects, cfg.run.partition_bytes)
            for b in range(buckets)]) for p in chunk]
    counts.update(full=full, reprocess=sorted(reprocess),
                  to_process=sum(p["objects"] for p in partitions))
    return {"counts": counts, "partitions": partitions, "marks": marks, "buckets": buckets,
            "snapshot_version": snapshot.version}


def save_plan(store: ObjectStore, layout: Layout, run_id: str, plan: dict) -> None:
    store.put(layout.plan_json(run_id), json.dumps(plan, indent=1, sort_keys=True).encode(),
              "application/json")


def load_plan(store: ObjectStore, layout: Layout, run_id: str) -> dict | None:
    """The frozen plan of a run that started before (None: it never finished planning)."""
    got = store.get_versioned(layout.plan_json(run_id))
    return None if got is None else json.loads(got[0])
