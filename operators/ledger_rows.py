"""Ledger rows of processed sources: one per recording, saying how it ended and what that depended
on (pipeline/ledger.py explains the ledger; pipeline/fingerprint.py the fingerprints).

A pure function over a partition's two result tables, run by the worker that writes the
partition, so the driver never sees these rows.
"""
from __future__ import annotations

import pyarrow as pa

from schemas.tables import LEDGER_SCHEMA

SOURCE_COLUMNS = ("source_uri", "source_etag", "source_version_id", "recording_id")


def ledger_rows(run_id: str, annotations: pa.Table, rejects: pa.Table,
                stage_order: dict[str, int], fingerprints: dict[str, str],
                version: str) -> pa.Table:
    """Every processed source once, with the stage that decided its outcome (the reject stage,
    or the latest stage that dropped one of its segments, or the last stage when nothing was
    dropped), that stage's settings fingerprint, its drop reasons and the pipeline version."""
    first = min(stage_order, key=stage_order.get) if stage_order else None
    last = max(stage_order, key=stage_order.get) if stage_order else None
    rows: list[dict] = []
    seen: dict[str, dict] = {}
    cols = list(SOURCE_COLUMNS) + ["drop_stage", "drop_reason"]
    for row in annotations.select(cols).to_pylist():
        entry = seen.get(row["recording_id"])
        if entry is None:
            entry = seen[row["recording_id"]] = {k: row[k] for k in SOURCE_COLUMNS}
            entry.update(state="annotated", reason=None, drop_reasons=[], settings_stage=None)
            rows.append(entry)
        if row["drop_reason"] is not None:
            if row["drop_reason"] not in entry["drop_reasons"]:
                entry["drop_reasons"].append(row["drop_reason"])
            stage = row["drop_stage"] if row["drop_stage"] in stage_order else last
            current = entry["settings_stage"]
            if current is None or stage_order.get(stage, -1) > stage_order.get(current, -1):
                entry["settings_stage"] = stage
    for entry in rows:
        entry["drop_reasons"].sort()
        entry["settings_stage"] = entry["settings_stage"] or last
    for row in rejects.select(list(SOURCE_COLUMNS) + ["reason", "stage"]).to_pylist():
        stage = row.pop("stage")
        rows.append({**row, "state": "rejected",
                     "settings_stage": stage if stage in stage_order else first})
    for entry in rows:
        entry["settings_fingerprint"] = fingerprints.get(entry["settings_stage"])
        entry["pipeline_version"] = version
        entry["run_id"] = run_id
    table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)
    return table.sort_by([("source_uri", "ascending")])


def mark_rows(run_id: str, marks: list[dict], version: str) -> pa.Table:
    """Ledger rows of sources a run only marked (deleted, taken down), without processing."""
    return pa.Table.from_pylist(
        [{**{k: m.get(k) for k in (*SOURCE_COLUMNS, "state", "reason")}, "run_id": run_id,
          "pipeline_version": version} for m in marks], schema=LEDGER_SCHEMA)
