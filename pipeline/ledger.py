"""The ledger: which source objects (key + ETag/version) the dataset's committed runs dealt with,
and how; kept as a compacted snapshot, partitioned by a hash of the source URI.

Every run writes its ledger rows next to its tables (`runs/<run_id>/ledger/`: one file per
partition, written by the worker that wrote the partition, plus the marks of planning) and lists
them in its summary.json, so what a run that died wrote never counts. After the run commits, one
task per bucket merges the run's rows of that bucket into the snapshot (schemas/layout.py:
`ledger/v<version>/bucket-<b>.parquet`, `ledger/current.json`): the latest row of every source.
Planning joins the listing with the snapshot bucket by bucket in tasks (pipeline/plan.py);
`status` reads the counts stored in current.json. The state of a source is its latest row:

- annotated / rejected: processed at that ETag. A later night skips it while the ETag stays the
  same; a changed ETag (or version id) is processed again. A `read_error` reject is retried, and
  so is a reject or drop whose settings changed since (pipeline/fingerprint.py) or whose reason
  was named with `--reprocess`.
- deleted: the object left the input prefix after it was processed.
- takedown: the source is in the takedown list (`input.takedown_uri`); it is not processed, and
  releases leave it out.

`--full` processes every listed object again, whatever the ledger says.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from operators.parquet_io import read_parquet, write_parquet
from operators.storage import ObjectStore, split_uri
from pipeline.errors import ConfigError
from pipeline.ray_session import TASK_CPUS
from schemas import reasons
from schemas.config import InputConfig, StorageConfig
from schemas.layout import Layout
from schemas.tables import LEDGER_SCHEMA, LEDGER_STATES

log = logging.getLogger("audioverse.ledger")

RETRIED_REJECTS = frozenset({reasons.READ_ERROR})  # storage trouble, not the object's fault


def conform_ledger(table: pa.Table) -> pa.Table:
    """Ledger rows in today's schema: columns added since they were written read as null."""
    return pa.Table.from_arrays(
        [table.column(f.name).cast(f.type) if f.name in table.column_names
         else pa.nulls(table.num_rows, f.type) for f in LEDGER_SCHEMA], schema=LEDGER_SCHEMA)


def latest_rows(tables: list[pa.Table]) -> pa.Table:
    """The latest row of every source over `tables`, given oldest first (within a table, the
    later row wins), sorted by source URI: merging a run into the snapshot is this."""
    parts = [conform_ledger(t) for t in tables if t.num_rows]
    if not parts:
        return LEDGER_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    ordered = table.append_column("_order", pa.array(range(table.num_rows), pa.int64()))
    newest = ordered.group_by("source_uri").aggregate([("_order", "max")]).column("_order_max")
    return table.take(newest).sort_by([("source_uri", "ascending")])


def latest_states(ledger: pa.Table) -> dict[str, dict]:
    """source URI -> its row in the latest run that names it (rows are oldest run first)."""
    states: dict[str, dict] = {}
    for row in ledger.to_pylist():
        states[row["source_uri"]] = row
    return states


def read_takedowns(store: ObjectStore, cfg: InputConfig) -> set[str]:
    """Source URIs in the takedown list; empty when none is configured. A configured list that
    does not exist is a config error: a takedown must never be skipped silently."""
    if not cfg.takedown_uri:
        return set()
    if not store.exists(cfg.takedown_uri):
        raise ConfigError(f"input.takedown_uri {cfg.takedown_uri} does not exist: create it "
                          f"(one source per line; it may be empty) or unset the key")
    return parse_takedowns(store.get(cfg.takedown_uri).decode("utf-8", "replace"), cfg.uri)


def parse_takedowns(text: str, input_uri: str) -> set[str]:
    """Source URIs of a takedown list: one per line; a line whose first non-blank character is
    `#` is a comment. A `#` anywhere else is part of the key (S3 keys may hold `#`, `?`, spaces
    and any Unicode), so nothing after it is cut off: a takedown must never be skipped. Leading
    and trailing whitespace of a line is not part of the key. A line without `s3://` is a key
    relative to input.uri, taken as a folder whether or not the URI ends with `/`."""
    bucket, prefix = split_uri(input_uri)
    base = f"s3://{bucket}/{prefix.rstrip('/') + '/' if prefix else ''}"
    out = set()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.add(line if line.startswith("s3://") else base + line.lstrip("/"))
    return out


@dataclass
class RunPlan:
    """What a run does with the listing: process `todo`; record `marks` (deleted/takedown)."""

    todo: pa.Table                                  # listing rows to process
    marks: list[dict] = field(default_factory=list) # ledger rows without processing
    counts: dict = field(default_factory=dict)


def _replan_reason(state: dict, fingerprints: dict[str, str] | None,
                   reprocess: frozenset[str]) -> str | None:
    """Why a source processed at its current ETag is planned again, or None to skip it.
    `reconfigured`: it was rejected, or a segment of it dropped, by a stage whose settings
    (or those of a stage before it) changed since; `reprocess`: its reject reason or one of its
    drop reasons was named with --reprocess."""
    drops = state.get("drop_reasons") or []
    if state["state"] == "rejected" and state["reason"] in RETRIED_REJECTS:
        return "retried"
    if (state["state"] == "rejected" and state["reason"] in reprocess) or set(drops) & reprocess:
        return "reprocess_reason"
    stage, stored = state.get("settings_stage"), state.get("settings_fingerprint")
    decided = state["state"] == "rejected" or drops
    if decided and fingerprints and stage and stored and fingerprints.get(stage) != stored:
        return "reconfigured"
    return None


def plan_run(listing: pa.Table, states: dict[str, dict], takedowns: set[str], input_uri: str,
             full: bool = False, limit: int | None = None,
             fingerprints: dict[str, str] | None = None,
             reprocess: frozenset[str] = frozenset()) -> RunPlan:
    """Compare the listing (all objects under input.uri) with the ledger. `fingerprints`: the
    current config's per-stage settings fingerprints (pipeline/fingerprint.py); `reprocess`:
    reject and drop reasons whose sources are processed again."""
    counts = {"listed": listing.num_rows, "new": 0, "changed": 0, "unchanged": 0, "retried": 0,
              "reconfigured": 0, "reprocess_reason": 0, "reprocessed": 0, "deleted": 0,
              "takedown": 0, "full": full, "reprocess": sorted(reprocess)}
    keep, marks = [], []
    listed = set()
    for i, row in enumerate(listing.select(["recording_id", "source_uri", "source_etag",
                                            "source_version_id"]).to_pylist()):
        uri = row["source_uri"]
        listed.add(uri)
        state = states.get(uri)
        if uri in takedowns:
            if state is None or state["state"] != "takedown":
                marks.append({**row, "state": "takedown", "reason": "takedown list"})
                counts["takedown"] += 1
            continue
        same = state is not None and state["source_etag"] == row["source_etag"] and \
            (state["source_version_id"] or None) == (row["source_version_id"] or None)
        if state is None or state["state"] in ("deleted", "takedown"):
            counts["new"] += 1
        elif not same:
            counts["changed"] += 1
        elif full:
            counts["reprocessed"] += 1
        else:
            why = _replan_reason(state, fingerprints, reprocess)
            counts[why or "unchanged"] += 1
            if why is None:
                continue
        keep.append(i)
    # Only sources under this run's input prefix can be seen to be gone.
    for uri, state in sorted(states.items()):
        if uri.startswith(input_uri) and uri not in listed and \
                state["state"] in ("annotated", "rejected"):
            marks.append({"source_uri": uri, "source_etag": None, "source_version_id": None,
                          "recording_id": state["recording_id"], "state": "deleted",
                          "reason": "no longer in the input prefix"})
            counts["deleted"] += 1
    todo = listing.take(pa.array(keep, pa.int64()))
    if limit is not None and todo.num_rows > limit:
        counts["deferred_by_limit"] = todo.num_rows - limit
        todo = todo.slice(0, limit)
    counts["to_process"] = todo.num_rows
    return RunPlan(todo, marks, counts)


# --- the compacted snapshot ------------------------------------------------------------------
@dataclass
class Snapshot:
    """`ledger/current.json`: the snapshot's version (0: none yet), its bucket count (fixed for
    the dataset once written), the runs merged into it and its counts by state."""

    version: int = 0
    buckets: int = 16
    merged_runs: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=lambda: {s: 0 for s in LEDGER_STATES})

    def as_dict(self) -> dict:
        return {"version": self.version, "buckets": self.buckets,
                "merged_runs": self.merged_runs, "counts": self.counts}


def read_snapshot(store: ObjectStore, layout: Layout, default_buckets: int) -> Snapshot:
    got = store.get_versioned(layout.ledger_current)
    if got is None:
        return Snapshot(buckets=default_buckets)
    data = json.loads(got[0])
    return Snapshot(version=data["version"], buckets=data["buckets"],
                    merged_runs=list(data.get("merged_runs", [])),
                    counts=data.get("counts", {}))


def read_bucket(store: ObjectStore, layout: Layout, snapshot: Snapshot, bucket: int) -> pa.Table:
    """The snapshot's rows of one bucket (none before the first merge)."""
    if snapshot.version == 0:
        return LEDGER_SCHEMA.empty_table()
    return conform_ledger(read_parquet(store, layout.ledger_bucket(snapshot.version, bucket)))


def sources_in_state(store: ObjectStore, layout: Layout, state: str,
                     default_buckets: int = 16) -> set[str]:
    """Source URIs whose latest state is `state` (e.g. takedown: a release leaves them out).
    Reads only the state and URI columns; meant for the rare states."""
    snapshot = read_snapshot(store, layout, default_buckets)
    out: set[str] = set()
    for bucket in range(snapshot.buckets if snapshot.version else 0):
        table = read_parquet(store, layout.ledger_bucket(snapshot.version, bucket),
                             columns=["source_uri", "state"])
        out |= set(table.filter(pc.equal(table.column("state"), state))
                   .column("source_uri").to_pylist())
    return out


def merge_bucket(storage: StorageConfig, layout: Layout, snapshot: Snapshot, bucket: int,
                 inputs: list[dict], version: int) -> dict[str, int]:
    """One bucket of the next snapshot version: the current bucket, then the rows of `inputs`
    (ledger files of runs, oldest run first) that fall in this bucket. Returns its counts by
    state. Runs in a Ray task (storage: the config's section; keys come from the worker's own
    environment, never inside task arguments)."""
    from schemas.layout import source_bucket

    store = ObjectStore(storage, reached=True)
    tables = [read_bucket(store, layout, snapshot, bucket)]
    for entry in inputs:
        if entry["kind"] == "ledger":
            table = conform_ledger(read_parquet(store, entry["uri"]))
        else:  # a run from before the ledger: its annotations and rejects say what it did
            table = _pre_ledger_rows(store, entry)
        if entry.get("mixed_buckets"):
            keep = [source_bucket(u, snapshot.buckets) == bucket
                    for u in table.column("source_uri").to_pylist()]
            table = table.filter(pa.array(keep, pa.bool_()))
        tables.append(table)
    merged = latest_rows(tables)
    write_parquet(store, layout.ledger_bucket(version, bucket), merged, LEDGER_SCHEMA, "ledger")
    return {s: int(pc.sum(pc.equal(merged.column("state"), s)).as_py() or 0)
            for s in LEDGER_STATES}


def _pre_ledger_rows(store: ObjectStore, entry: dict) -> pa.Table:
    """Ledger rows of a run committed before runs wrote a ledger, from its annotations or
    rejects file (the source columns only), so upgrading does not reprocess the whole bucket."""
    cols = ["source_uri", "source_etag", "source_version_id", "recording_id"]
    table = read_parquet(store, entry["uri"],
                         columns=cols + (["reason"] if entry["kind"] == "rejects" else []))
    state = "annotated" if entry["kind"] == "annotations" else "rejected"
    rows = {r["recording_id"]: {**r, "state": state, "run_id": entry["run_id"]}
            for r in table.to_pylist()}
    return pa.Table.from_pylist(list(rows.values()), schema=LEDGER_SCHEMA)


# A run's ledger files: one per partition, and the marks of planning; both in one bucket. A
# run from before the snapshot wrote one file of every bucket (ledger/part-00000.parquet).
_BUCKETED = re.compile(r"^ledger/(?:part-(\d{4})-\d{5}|marks-(\d{4}))\.parquet$")


def merge_runs(store: ObjectStore, storage: StorageConfig, layout: Layout, snapshot: Snapshot,
               summaries: list[dict]) -> Snapshot:
    """The next snapshot version: committed runs (oldest first) merged in, one Ray task per
    bucket; `ledger/current.json` is written last (the commit of the merge). Returns it."""
    if not summaries:
        return snapshot
    import ray

    inputs: dict[int, list[dict]] = {b: [] for b in range(snapshot.buckets)}
    for summary in summaries:
        files, run_id, prefix = summary.get("files", {}), summary["run_id"], summary["_prefix"]
        if "ledger" not in files:  # a run from before the ledger: read its tables
            entries = [{"uri": prefix + e["path"], "kind": kind, "run_id": run_id,
                        "mixed_buckets": True}
                       for kind in ("annotations", "rejects") for e in files.get(kind, [])]
            for bucket in inputs:
                inputs[bucket] += entries
            continue
        for e in files["ledger"]:
            entry = {"uri": prefix + e["path"], "kind": "ledger", "run_id": run_id}
            match = _BUCKETED.match(e["path"])
            if match:
                inputs[int(match.group(1) or match.group(2))].append(entry)
            else:
                for bucket in inputs:
                    inputs[bucket].append({**entry, "mixed_buckets": True})
    version = snapshot.version + 1
    task = ray.remote(num_cpus=TASK_CPUS, max_retries=3)(merge_bucket)
    per_bucket = ray.get([task.remote(storage, layout, snapshot, b, inputs[b], version)
                          for b in range(snapshot.buckets)])
    counts = {s: sum(c[s] for c in per_bucket) for s in LEDGER_STATES}
    merged = Snapshot(version=version, buckets=snapshot.buckets,
                      merged_runs=snapshot.merged_runs + [s["run_id"] for s in summaries],
                      counts=counts)
    store.put(layout.ledger_current, json.dumps(merged.as_dict(), indent=1).encode(),
              "application/json")
    if snapshot.version > 1:  # nobody reads the version before the previous one any more
        store.delete_prefix(layout.ledger_version(snapshot.version - 1))
    log.info("ledger snapshot v%d: %d runs merged (%s); %s", version, len(summaries),
             ", ".join(s["run_id"] for s in summaries),
             ", ".join(f"{n} {s}" for s, n in counts.items()))
    return merged
