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
            tables.append(conform_ledger(pq.read_table(io.BytesIO(data))))
    return pa.concat_tables(tables) if tables else LEDGER_SCHEMA.empty_table()


def conform_ledger(table: pa.Table) -> pa.Table:
    """A ledger part in today's schema: columns added since it was written read as null."""
    return pa.Table.from_arrays(
        [table.column(f.name).cast(f.type) if f.name in table.column_names
         else pa.nulls(table.num_rows, f.type) for f in LEDGER_SCHEMA], schema=LEDGER_SCHEMA)


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
    rejects = parts["rejects"] or empty.append_column("reason", pa.array([], pa.string()))
    rows = [{**r, "state": "annotated", "reason": None}
            for r in (parts["annotations"] or empty).to_pylist()]
    rows += [{**r, "state": "rejected"} for r in rejects.to_pylist()]
    unique = {r["recording_id"]: r for r in rows}
    return pa.Table.from_pylist([{"run_id": summary["run_id"], **r} for r in unique.values()],
                                schema=LEDGER_SCHEMA)


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


def ledger_rows(run_id: str, annotations: pa.Table, rejects: pa.Table, marks: list[dict],
                fingerprints: dict[str, str] | None = None) -> pa.Table:
    """The ledger part of a run: every processed source once, with the stage that decided its
    outcome and that stage's settings fingerprint, plus the marks."""
    from pipeline import __version__
    from pipeline.fingerprint import stage_order

    order = stage_order()
    first_stage, last_stage = min(order, key=order.get), max(order, key=order.get)
    fingerprints = fingerprints or {}
    rows = []
    seen: dict[str, dict] = {}
    for row in annotations.select(["source_uri", "source_etag", "source_version_id",
                                   "recording_id", "drop_stage", "drop_reason"]).to_pylist():
        entry = seen.get(row["recording_id"])
        if entry is None:
            entry = seen[row["recording_id"]] = {
                k: row[k] for k in ("source_uri", "source_etag", "source_version_id",
                                    "recording_id")}
            entry.update(state="annotated", reason=None, drop_reasons=[], settings_stage=None)
            rows.append(entry)
        if row["drop_reason"] is not None:
            if row["drop_reason"] not in entry["drop_reasons"]:
                entry["drop_reasons"].append(row["drop_reason"])
            stage = row["drop_stage"] if row["drop_stage"] in order else last_stage
            if entry["settings_stage"] is None or order[stage] > order[entry["settings_stage"]]:
                entry["settings_stage"] = stage
    for entry in rows:
        entry["drop_reasons"].sort()
        entry["settings_stage"] = entry["settings_stage"] or last_stage
    for row in rejects.select(["source_uri", "source_etag", "source_version_id",
                               "recording_id", "reason", "stage"]).to_pylist():
        stage = row.pop("stage")
        rows.append({**row, "state": "rejected",
                     "settings_stage": stage if stage in order else first_stage})
    for entry in rows:
        entry["settings_fingerprint"] = fingerprints.get(entry["settings_stage"])
        entry["pipeline_version"] = __version__
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
