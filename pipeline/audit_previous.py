"""Night over night: the same queries on this run (release) and on the one before it.

A run's previous run is the latest committed run under the same `<output>/runs/` that sorts before
it in pipeline/runs.py committed_summaries (finished_at, then run id); a release's is the latest
finished release (manifest.json) under `<output>/releases/` before it (created_at, then id).
The previous one is opened with pipeline/audit.py locate() and connect() (its own DuckDB
connection, the same view names), so every query of the comparison runs unchanged on both.
"""
from __future__ import annotations

import json

from pipeline.audit_format import format_change
from pipeline.audit_queries import DELTA_QUERIES, RUN


def _output_root(src) -> str | None:
    """`s3://b/out` for `s3://b/out/runs/<id>/` (or releases/<id>/), None elsewhere."""
    tail = f"/{'runs' if src.kind == RUN else 'releases'}/{src.ident}/"
    return src.uri[: -len(tail)] if src.uri.endswith(tail) else None


def committed_releases(store, layout) -> list[dict]:
    """Manifests of the finished releases, oldest first (created_at, release id); each with
    `_prefix`. (Listed with a delimiter like pipeline/runs.py run_ids: one entry per release.)"""
    out = []
    for release_id in store.list_dirs(layout.releases):
        got = store.get_versioned(layout.release(release_id) + "manifest.json")
        if got is None:
            continue  # unfinished: died before its manifest
        manifest = json.loads(got[0])
        manifest.setdefault("release_id", release_id)
        manifest["_id"], manifest["_prefix"] = release_id, layout.release(release_id)
        out.append(manifest)
    out.sort(key=lambda m: (m.get("created_at") or "", m["_id"]))
    return out


def previous_uri(store, src) -> tuple[str | None, str]:
    """(URI of the previous run / release, or None; a line saying which or why none)."""
    from pipeline.runs import committed_summaries
    from schemas.layout import Layout

    what = "run" if src.kind == RUN else "release"
    root = _output_root(src)
    if root is None:
        return None, f"no previous {what}: {src.uri} is not under <output>/{what}s/<id>/"
    layout = Layout(root)
    if src.kind == RUN:
        entries = [(s["run_id"], (s.get("finished_at") or "", s["run_id"]), s["_prefix"])
                   for s in committed_summaries(store, layout)]
        mine = (src.meta.get("finished_at") or "", src.ident)
    else:
        entries = [(m["_id"], (m.get("created_at") or "", m["_id"]), m["_prefix"])
                   for m in committed_releases(store, layout)]
        mine = (src.meta.get("created_at") or "", src.ident)
    before = [e for e in entries if e[0] != src.ident and e[1] < mine]
    if not before:
        return None, f"no previous {what} under {layout.root}/{what}s/"
    ident, _, prefix = before[-1]
    return prefix, f"previous {what}: {ident}"


def _by_key(rows: list[dict], key: str, value: str) -> dict:
    return {r[key]: r[value] for r in rows}


def compare(this: dict[str, list[dict]], prev: dict[str, list[dict]], kind: str
            ) -> list[dict]:
    """Tables of this vs previous with the change: the summary's numbers, then each reason."""
    summary_this = (this.get("summary") or [{}])[0]
    summary_prev = (prev.get("summary") or [{}])[0]
    tables = []
    rows = []
    for col in summary_this:
        a, b = summary_this.get(col), summary_prev.get(col)
        rows.append({"metric": col, "this": a, "previous": b,
                     "change": format_change(a, b, col), "_col": col})
    tables.append({"title": "totals", "rows": rows})
    reason_queries = [q for q in DELTA_QUERIES[kind] if q != "summary"]
    for name in reason_queries:
        key = "drop_reason" if name == "drops" else "reason"
        value = "recordings" if name == "rejects" else "segments"
        a, b = _by_key(this.get(name, []), key, value), _by_key(prev.get(name, []), key, value)
        order = sorted(set(a) | set(b), key=lambda k: (-(a.get(k) or 0), -(b.get(k) or 0), k))
        rows = [{"metric": k, "this": a.get(k, 0), "previous": b.get(k, 0),
                 "change": format_change(a.get(k, 0), b.get(k, 0), value), "_col": value}
                for k in order]
        title = {"drops": "segments by drop_reason", "rejects": "recordings by reject reason",
                 "gates": "segments by quality gate / duplicate"}[name]
        tables.append({"title": title, "rows": rows})
    return tables


def deltas(store, storage, src, sqls: dict[str, str], this: dict[str, list[dict]], fetch
           ) -> dict:
    """{"line": which previous or why none, "tables": [...], "error": ...}. Never raises."""
    from pipeline.audit import connect, error_line, locate

    try:
        prev_uri, line = previous_uri(store, src)
    except Exception as exc:  # noqa: BLE001 - listing failed: say so, the report goes on
        return {"line": f"previous {src.kind} unknown: {error_line(exc)}", "tables": [],
                "error": True, "uri": None}
    if prev_uri is None:
        return {"line": line, "tables": [], "error": False, "uri": None}
    try:
        prev_src = locate(store, prev_uri)
        con, _ = connect(prev_src, storage)
        try:
            prev = {n: fetch(con, sqls[n]) for n in DELTA_QUERIES[src.kind]}
        finally:
            con.close()
    except Exception as exc:  # noqa: BLE001 - an old run missing a column, a gone file, ...
        return {"line": f"{line}: cannot compare: {error_line(exc)}", "tables": [],
                "error": True, "uri": prev_uri}
    return {"line": line, "tables": compare(this, prev, src.kind), "error": False,
            "uri": prev_uri}
