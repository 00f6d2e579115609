"""The ledger: which source objects (key + ETag/version) each committed run dealt with, and how.

Every committed run writes `runs/<run_id>/ledger/part-00000.parquet` (LEDGER_SCHEMA) before its
summary.json, and lists it there; so the ledger is exactly the union over committed runs, and a
run that died wrote nothing that counts. The state of a source is its row in the latest committed
run that names it:

- annotated / rejected: processed at that ETag. A later night skips it while the ETag stays the
  same; a changed ETag (or version id) is processed again. A `read_error` reject is retried.
- deleted: the object left the input prefix after it was processed.
- takedown: the source is in the takedown list (`input.takedown_uri`); it is not processed, and
  releases leave it out.

`--full` processes every listed object again, whatever the ledger says.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import ObjectStore, split_uri
from pipeline.errors import ConfigError
from schemas import reasons
from schemas.config import InputConfig
from schemas.tables import LEDGER_SCHEMA

log = logging.getLogger("audioverse.ledger")

LEDGER_FILE = "ledger/part-00000.parquet"
RETRIED_REJECTS = frozenset({reasons.READ_ERROR})  # storage trouble, not the object's fault


def read_ledger(store: ObjectStore, summaries: list[dict]) -> pa.Table:
    """Every committed run's ledger rows, oldest run first (`summaries` as committed_runs)."""
    tables = []
    for summary in summaries:
        files = summary.get("files", {})
        if "ledger" not in files:
            tables.append(_from_tables(store, summary))  # a run from before the ledger
        for entry in files.get("ledger", []):
            data = store.get(summary["_prefix"] + entry["path"])
            tables.append(pq.read_table(io.BytesIO(data)).cast(LEDGER_SCHEMA))
    return pa.concat_tables(tables) if tables else LEDGER_SCHEMA.empty_table()


def _from_tables(store: ObjectStore, summary: dict) -> pa.Table:
    """Ledger rows of a run committed before runs wrote a ledger, from its annotations and
    rejects (the source columns only), so upgrading does not reprocess the whole bucket."""
    cols = ["source_uri", "source_etag", "source_version_id", "recording_id"]
    parts = {}
    for name in ("annotations", "rejects"):
        tables = [pq.read_table(io.BytesIO(store.get(summary["_prefix"] + e["path"])),
                                columns=cols + (["reason"] if name == "rejects" else []))
                  for e in summary.get("files", {}).get(name, [])]
        parts[name] = pa.concat_tables(tables) if tables else None
    empty = pa.schema([LEDGER_SCHEMA.field(c) for c in cols]).empty_table()
    return ledger_rows(summary["run_id"], parts["annotations"] or empty,
                       parts["rejects"] or empty.append_column("reason", pa.array([], pa.string())),
                       [])


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
    """Source URIs of a takedown list: one per line, `#` comments; a line without `s3://` is a
    key relative to input.uri, taken as a folder whether or not the URI ends with `/`."""
    bucket, prefix = split_uri(input_uri)
    base = f"s3://{bucket}/{prefix.rstrip('/') + '/' if prefix else ''}"
    out = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(line if line.startswith("s3://") else base + line.lstrip("/"))
    return out


@dataclass
class RunPlan:
    """What a run does with the listing: process `todo`; record `marks` (deleted/takedown)."""

    todo: pa.Table                                  # listing rows to process
    marks: list[dict] = field(default_factory=list) # ledger rows without processing
    counts: dict = field(default_factory=dict)


def plan_run(listing: pa.Table, states: dict[str, dict], takedowns: set[str], input_uri: str,
             full: bool = False, limit: int | None = None) -> RunPlan:
    """Compare the listing (all objects under input.uri) with the ledger."""
    counts = {"listed": listing.num_rows, "new": 0, "changed": 0, "unchanged": 0, "retried": 0,
              "reprocessed": 0, "deleted": 0, "takedown": 0, "full": full}
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
        elif state["state"] == "rejected" and state["reason"] in RETRIED_REJECTS:
            counts["retried"] += 1
        else:
            counts["unchanged"] += 1
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


def ledger_rows(run_id: str, annotations: pa.Table, rejects: pa.Table,
                marks: list[dict]) -> pa.Table:
    """The ledger part of a run: every processed source once, plus the marks."""
    rows = []
    seen = set()
    for row in annotations.select(["source_uri", "source_etag", "source_version_id",
                                   "recording_id"]).to_pylist():
        if row["recording_id"] not in seen:
            seen.add(row["recording_id"])
            rows.append({**row, "state": "annotated", "reason": None})
    for row in rejects.select(["source_uri", "source_etag", "source_version_id",
                               "recording_id", "reason"]).to_pylist():
        rows.append({**row, "state": "rejected"})
    rows += [{k: m.get(k) for k in ("source_uri", "source_etag", "source_version_id",
                                    "recording_id", "state", "reason")} for m in marks]
    table = pa.Table.from_pylist([{"run_id": run_id, **r} for r in rows], schema=LEDGER_SCHEMA)
    return table.sort_by([("source_uri", "ascending")])


def excluded_sources(ledger: pa.Table) -> set[str]:
    """Sources whose latest state is takedown: a release leaves them out."""
    states = latest_states(ledger)
    return {uri for uri, row in states.items() if row["state"] == "takedown"}


def state_counts(ledger: pa.Table) -> dict[str, int]:
    """How many sources are in each state now (the latest row of each)."""
    states = latest_states(ledger)
    counts = {s: 0 for s in ("annotated", "rejected", "deleted", "takedown")}
    for row in states.values():
        counts[row["state"]] += 1
    return counts
