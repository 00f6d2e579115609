"""The runs of a dataset: which exist, which are committed, what their summaries say.

Listed with a delimiter (one entry per run, never one per file of every run): a run is committed
once its summary.json exists (schemas/layout.py), and only the files its summary lists count.
"""
from __future__ import annotations

import json

from operators.storage import ObjectStore
from schemas.layout import Layout


def run_ids(store: ObjectStore, layout: Layout) -> list[str]:
    """Every run id with anything under runs/ (committed or not). (A store with real
    directories, as SeaweedFS's filer, lists a directory whose files were all deleted too: it
    does not count.)"""
    return sorted(r for r in store.list_dirs(layout.runs) if store.any_under(layout.run(r)))


def staged_run_ids(store: ObjectStore, layout: Layout) -> list[str]:
    """Every run id with a staging area (running, or dead and resumable)."""
    return sorted(r for r in store.list_dirs(layout.staging_root)
                  if store.any_under(layout.staging(r)))


def read_summary(store: ObjectStore, layout: Layout, run_id: str) -> dict | None:
    got = store.get_versioned(layout.summary(run_id))
    if got is None:
        return None
    summary = json.loads(got[0])
    summary["_prefix"] = layout.run(run_id)
    return summary


def committed_summaries(store: ObjectStore, layout: Layout,
                        skip: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """Summaries of the committed runs (except `skip`), oldest first (finished_at, run id)."""
    out = [s for s in (read_summary(store, layout, r) for r in run_ids(store, layout)
                       if r not in skip) if s is not None]
    out.sort(key=lambda s: (s.get("finished_at") or "", s["run_id"]))
    return out
