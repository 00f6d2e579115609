"""A run's staging area, `<output.uri>/_staging/<run_id>/` (schemas/layout.py): what a killed run
needs to resume.

- the frozen plan (pipeline/plan.py): the listing, the objects of every partition, plan.json.
  A resumed run (same run id) works through the same partitions even if the bucket changed
  meanwhile; new objects wait for the next night.
- `done/<partition>.json`: written by the worker that wrote a partition's files, after them;
  a resumed run skips the partitions that have one (their files are in place already).
- `progress.json`: the live counts of a running run, for `audioverse status`.

Nothing here is published: readers only read files that a summary.json or manifest.json lists.
The area is deleted once the run has committed; staging of other, dead runs is deleted by the
next run that holds the lock.
"""
from __future__ import annotations

import json
import logging

from operators.storage import ObjectStore
from pipeline.runs import read_summary, run_ids, staged_run_ids
from schemas.layout import Layout

log = logging.getLogger("audioverse.staging")


def done_partitions(store: ObjectStore, layout: Layout, run_id: str) -> set[str]:
    """Partitions whose files and marker are written."""
    return {o.key.rsplit("/", 1)[-1][: -len(".json")]
            for page in store.list_pages(layout.done_dir(run_id)) for o in page
            if o.key.endswith(".json")}


def read_marker(store: ObjectStore, layout: Layout, run_id: str, partition: str) -> dict:
    return json.loads(store.get(layout.done_marker(run_id, partition)))


def write_progress(store: ObjectStore, layout: Layout, run_id: str, progress: dict) -> None:
    store.put(layout.progress(run_id), json.dumps(progress, sort_keys=True).encode(),
              "application/json")


def read_progress(store: ObjectStore, layout: Layout, run_id: str) -> dict | None:
    got = store.get_versioned(layout.progress(run_id))
    return None if got is None else json.loads(got[0])


def clear(store: ObjectStore, layout: Layout, run_id: str) -> int:
    return store.delete_prefix(layout.staging(run_id))


def clean_dead_runs(store: ObjectStore, layout: Layout, keep_run_id: str) -> list[str]:
    """Delete the staging areas of other runs (called while holding the lock, so their runs are
    dead), and what a dead run left under runs/<id>/ without a summary.json (it died before it
    committed: nothing reads those files, but they should not lie about). Both listed with a
    delimiter: one entry per run. Returns the run ids."""
    cleaned = set()
    for run_id in staged_run_ids(store, layout):
        if run_id != keep_run_id:
            store.delete_prefix(layout.staging(run_id))
            cleaned.add(run_id)
    for run_id in run_ids(store, layout):
        if run_id != keep_run_id and read_summary(store, layout, run_id) is None:
            store.delete_prefix(layout.run(run_id))
            cleaned.add(run_id)
    if cleaned:
        log.warning("cleaned up what dead runs left behind: %s", ", ".join(sorted(cleaned)))
    return sorted(cleaned)
