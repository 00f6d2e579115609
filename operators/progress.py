"""Live counts of a running night, per stage.

Each stage reports what a batch did (recordings, segments, rejects) to one small named Ray actor
of the run, without waiting for an answer; the driver reads the counts on a timer and logs rates
and an ETA from the first minute, also while later stages are still waiting for rows. Outside a
run (a unit test calling a stage directly, or no counter for this run) reporting does nothing.
"""
from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.compute as pc

COUNTER_PREFIX = "audioverse-progress-"


def counter_name(run_id: str) -> str:
    return COUNTER_PREFIX + run_id


class ProgressCounter:
    """The run's counts: stage -> {batches, recordings, segments, rejected}. Made a Ray actor by
    the driver (pipeline/ray_session.py), named after the run."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, stage: str, delta: dict[str, int]) -> None:
        mine = self.counts.setdefault(stage, {})
        for key, value in delta.items():
            mine[key] = mine.get(key, 0) + int(value)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return self.counts


def batch_counts(batch: pa.Table) -> dict[str, int]:
    """What a stage's output batch holds: distinct recordings, segments, rejected recordings."""
    names = batch.column_names
    out = {"batches": 1}
    if "recording_id" in names:
        out["recordings"] = len(pc.unique(batch.column("recording_id")))
    if "segment_id" in names:
        out["segments"] = batch.num_rows - batch.column("segment_id").null_count
    if "reject_reason" in names:
        out["rejected"] = batch.num_rows - batch.column("reject_reason").null_count
    return out


_lock = threading.Lock()
_handles: dict[str, object] = {}


def report(run_id: str | None, stage: str, batch: pa.Table) -> None:
    """Add a batch's counts to the run's counter (fire and forget; never raises)."""
    if not run_id:
        return
    try:
        import ray

        if not ray.is_initialized():
            return
        with _lock:
            if run_id not in _handles:
                try:
                    _handles[run_id] = ray.get_actor(counter_name(run_id))
                except ValueError:
                    _handles[run_id] = None  # no counter for this run
            handle = _handles[run_id]
        if handle is not None:
            handle.add.remote(stage, batch_counts(batch))
    except Exception:  # noqa: BLE001 - progress must never fail a batch
        pass
