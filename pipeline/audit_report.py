"""The audit report: numbers computed with SQL over the DuckDB views of pipeline/audit.py
(pipeline/audit_queries.py), drawn with matplotlib (pipeline/audit_charts.py) as PNGs next to
index.html, which is rendered from the Jinja2 template pipeline/templates/report.html.j2
(autoescaped: a transcript is text, never markup).

Every figure and table keeps the SQL it came from; the page shows it in a <details> block so an
auditor can re-run it with `audioverse audit URI --sql "..."`. A figure whose query returns no
rows says "no data"; a query that cannot run (a column an old run lacks) says why, and the report
goes on. Besides the figures: example rows per drop reason, reject reason, language and content
type with a playable clip of each segment (pipeline/audit_examples.py), and the change since the
previous run or release (pipeline/audit_previous.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pipeline import audit_charts as charts
from pipeline.audit_format import cell_text, is_number
from pipeline.audit_queries import (CAPTION_SQL, HIST_BINS, RELEASE, RUN, TOP_LANGUAGES,
                                    TOP_TAGS, report_sql)

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"
# Bounded page: clips are capped (pipeline/audit_examples.py), so is every example text.
MAX_TEXT = 400  # characters of one example field


@dataclass
class Plot:
    name: str                                   # file stem
    title: str
    caption: str
    queries: list[tuple[str, str]] = field(default_factory=list)  # (label, SQL)
    png: str | None = None                      # file name, None = no figure (see note)
    note: str | None = None                     # shown in place of / under the figure
    table: list[dict] | None = None             # the rows drawn, shown under the figure


def default_report_dir(src) -> Path:
    """./audit-run-<id>/ or ./audit-release-<id>/ (a run and a release may share an id)."""
    return Path(f"audit-{src.kind}-{src.ident}")


# --- SQL helpers -----------------------------------------------------------------------------
def fetch(con, sql: str) -> list[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


# --- the figures -------------------------------------------------------------------------------
def _plots(kind: str) -> list[tuple[Plot, list[str], object]]:
    """(plot, names of its queries, draw(results_by_name, path))."""
    run = kind == RUN
    table = "annotations" if run else "selection"
    kept = "kept (drop_reason is null)" if run else "selected"
    out = [
        (Plot("hours_by_language", "Audio by language and content type",
              f"Audio duration of {table} segments per language, stacked by content type: all "
              f"segments (left) and {kept} (right); the top {TOP_LANGUAGES} languages, the rest "
              f"as 'other'; '(none)' = no language (music, sound). The axis is in seconds, "
              f"minutes or hours by magnitude."),
         ["hours"], lambda q, p: charts.draw_hours(q["hours"], kind, p)),
        (Plot("kept_fraction",
              "Kept fraction" if run else "Selected vs eligible vs not eligible",
              ("Segments per content type that were kept (no drop_reason) or dropped."
               if run else
               "Segments of the dataset view per content type: selected, eligible but not "
               "selected (quality_eligible), and not eligible.")),
         ["kept"], lambda q, p: charts.draw_kept(q["kept"], kind, p)),
    ]
    if run:
        out.append((Plot("drop_reasons", "Drop and reject reasons",
                         "Left: segments by drop_reason (annotations). Right: recordings that "
                         "yielded no segment, by reject reason (rejects). Examples of each are "
                         "under Examples below."),
                    ["drops", "rejects"],
                    lambda q, p: charts.draw_two_bars(q["drops"], "drop_reason",
                                                      "segments dropped, by drop_reason",
                                                      q["rejects"], "reason",
                                                      "recordings rejected, by reason",
                                                      "segments", "recordings", p)))
    else:
        out.append((Plot("drop_reasons", "Drop reasons and quality gates",
                         "Left: segments by drop_reason from the run (selection). Right: the "
                         "first hard quality gate failed (quality_gate) and duplicates "
                         "(duplicate_of)."),
                    ["drops", "gates"],
                    lambda q, p: charts.draw_two_bars(q["drops"], "drop_reason",
                                                      "segments, by drop_reason",
                                                      q["gates"], "reason",
                                                      "not eligible: gates and duplicates",
                                                      "segments", "segments", p)))
    out.append((Plot("language_quality", "Quality by language",
                     ((f"Per language (the top {TOP_LANGUAGES} by segments, the rest as "
                       "'other'): the kept share of segments, and the spread of asr_agreement "
                       "and snr_db over all its segments (box: 25th-75th percentile, red line: "
                       "median, whiskers: 10th and 90th).") if run else
                      (f"Per language (the top {TOP_LANGUAGES} by segments, the rest as "
                       "'other'): the selected share of the dataset view, and the spread of "
                       "the agreement and SNR quality scores (q_agreement, q_snr; box: "
                       "25th-75th percentile, red line: median, whiskers: 10th and 90th)."))),
                ["language_quality"],
                lambda q, p: charts.draw_language_quality(q["language_quality"], kind, p)))
    if not run:
        out.append((Plot("quality_score", "Quality score",
                         f"Histogram of quality_score ({HIST_BINS} equal bins over its range), "
                         "selected vs not selected, one outline each; null scores left out."),
                    ["quality"],
                    lambda q, p: charts.draw_hist(q["quality"], "quality_score",
                                                  "quality_score", p)))
    out += [
        (Plot("duration", "Segment duration",
              f"Histogram of duration_s ({HIST_BINS} equal bins over its range), "
              + ("kept vs dropped" if run else "selected vs not selected")
              + ", one outline each (the legend gives each group's segments)."),
         ["duration"], lambda q, p: charts.draw_hist(q["duration"], "segment duration",
                                                     "duration_s (seconds)", p)),
        (Plot("event_tags", "Top event tags",
              (f"The {TOP_TAGS} AudioSet labels found most often among each segment's top-k "
               "event_labels (all segments of the run)." if run else
               f"The {TOP_TAGS} event_tags found most often in the release's shards (selected "
               "segments).")),
         ["tags"], lambda q, p: charts.draw_tags(q["tags"], "top event tags", p)),
        (Plot("speaker_counts", "Speaker counts",
              ("Segments by speaker_count (distinct speakers found by the speaker stage), "
               "stacked by content type; null = not measured." if run else
               "Shard segments by caption_speaker_count (speakers the captioner reported), "
               "stacked by content type; null = not reported.")),
         ["speakers"], lambda q, p: charts.draw_speakers(q["speakers"],
                                                         "segments by speaker count", p)),
    ]
    return out


# figure -> the query whose rows are also shown as a table under it
TABLE_UNDER = {"language_quality": "language_quality"}


def _render_plot(con, plot: Plot, names: list[str], draw, sqls: dict, out_dir: Path,
                 results: dict) -> Path:
    import duckdb

    plot.queries = [(n, sqls[n]) for n in names]
    plot.png = f"{plot.name}.png"
    path = out_dir / plot.png
    try:
        mine = {n: results[n] if n in results else fetch(con, sqls[n]) for n in names}
    except duckdb.Error as exc:
        from pipeline.audit import error_line

        plot.note = f"not available: {error_line(exc)}"
        charts.message_png(path, plot.title, "not available:\n" + error_line(exc)[:120])
        return path
    results.update(mine)
    if not any(mine.values()):
        plot.note = "no data: the queries returned no rows"
    draw(mine, path)
    if TABLE_UNDER.get(plot.name) and mine[TABLE_UNDER[plot.name]]:
        plot.table = mine[TABLE_UNDER[plot.name]]
    return path


# --- tables ----------------------------------------------------------------------------------
def _files_check(con, src) -> tuple[list[dict], set]:
    """Per view: files and rows listed in the marker vs rows read."""
    rows, bad = [], set()
    for view, entries in src.files.items():
        listed = [e["rows"] for e in entries]
        known = all(isinstance(n, int) for n in listed)
        read = con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
        rows.append({"view": view, "files": len(entries),
                     "rows listed": sum(listed) if known else "not listed",
                     "rows read": read})
        if known and sum(listed) != read:
            bad.add((len(rows) - 1, "rows read"))
    return rows, bad


def _meta_rows(meta: dict) -> list[dict]:
    return [{"key": k, "value": v} for k, v in sorted(meta.items())
            if isinstance(v, (str, int, float, bool)) or v is None]


def _captions(con, kind: str) -> dict | None:
    """The run report's caption tables, or a line saying why there are none."""
    if kind != RUN:
        return None
    columns = {r[0] for r in con.execute("DESCRIBE annotations").fetchall()}
    if not {"caption_provenance", "caption_description_source"} <= columns:
        return {"note": "This run's annotations predate caption provenance and the grounding "
                        "check (schema 8).", "tables": []}
    tables = []
    for name, sql in CAPTION_SQL.items():
        try:
            rows, error = fetch(con, sql), None
        except Exception as exc:  # noqa: BLE001 - duckdb.Error: say why, go on
            from pipeline.audit import error_line

            rows, error = [], f"not available: {error_line(exc)}"
        tables.append({"name": name, "title": name.replace("_", " "), "sql": sql,
                       "rows": rows, "error": error})
    return {"note": None, "tables": tables}


# --- examples --------------------------------------------------------------------------------
HIDDEN = {"grp", "example", "group_rows", "snippet_etag", "snippet_start", "snippet_end",
          "snippet_bytes", "audio", "audio_note", "audio_s", "audio_id", "audio_link",
          "_section"}


def _example_fields(row: dict) -> list[tuple[str, str]]:
    """(name, text) of an example's non-null fields; start_s/end_s as one `time` field."""
    out = []
    for name, value in row.items():
        if name in HIDDEN or value is None or name == "end_s":
            continue
        if name == "start_s":
            end = row.get("end_s")
            text = f"{value:.2f} – {end:.2f} s" if end is not None else f"from {value:.2f} s"
            out.append(("time", text))
            continue
        text = cell_text(value, name)
        out.append((name, text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"))
    return out


def _prepare_examples(sections: list[dict]) -> None:
    for section in sections:
        for row in section["rows"]:
            row["_fields"] = _example_fields(row)


# --- rendering -------------------------------------------------------------------------------
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html", "j2"], default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["cell"] = lambda value, column="": cell_text(value, column)
    env.tests["number"] = is_number
    return env


def render(context: dict) -> str:
    return _environment().get_template(TEMPLATE).render(**context)


def write_report(con, src, out_dir: str | Path, view_definitions: dict[str, str] | None = None,
                 *, storage=None, snippets: bool = True, previous: bool = True) -> list[Path]:
    """Compute, draw and write the report for `src` (pipeline.audit.AuditSource) into
    `out_dir`; returns the written files (the PNGs, then index.html).

    `storage`: the StorageConfig the audit resolved (default: the AWS_* variables), used to
    read the clips' sources and the previous run or release. `snippets=False`: no clips (the
    example rows stay); `previous=False`: no night-over-night comparison."""
    from model_serving.s3client import resolve_storage
    from operators.storage import ObjectStore
    from pipeline.audit_examples import SNIPPETS_PER_GROUP, attach_snippets, fetch_examples
    from pipeline.audit_previous import deltas
    from schemas.config import StorageConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = src.kind
    sqls = report_sql(kind)
    written: list[Path] = []
    storage = resolve_storage(storage or StorageConfig())
    store = ObjectStore(storage)

    plots, results = [], {}
    for plot, names, draw in _plots(kind):
        written.append(_render_plot(con, plot, names, draw, sqls, out_dir, results))
        plots.append(plot)

    summary = fetch(con, sqls["summary"])
    detail_name = "by_type" if kind == RUN else "by_split"
    detail = fetch(con, sqls[detail_name])
    files, bad_files = _files_check(con, src)
    bad_summary = set()
    if kind == RELEASE and summary and summary[0]["selected"] != summary[0]["shard_rows"]:
        bad_summary.add((0, "shard_rows"))

    examples = fetch_examples(con, kind, fetch)
    clips = {"clips": 0, "notes": 0, "bytes": 0}
    if snippets:
        clips = attach_snippets(store, examples)
    _prepare_examples(examples)

    compared = None
    if previous:
        this = {"summary": summary}
        for name in ("drops", "rejects", "gates"):
            if name in sqls:
                try:
                    this[name] = results[name] if name in results else fetch(con, sqls[name])
                except Exception:  # noqa: BLE001 - shown as not available in its figure
                    this[name] = []
        compared = deltas(store, storage, src, sqls, this, fetch)
        compared["queries"] = [(n, sqls[n]) for n in ("summary", "drops", "rejects", "gates")
                               if n in sqls]

    context = {
        "kind": kind, "what": "run" if kind == RUN else "release", "src": src,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "summary": summary, "bad_summary": bad_summary, "summary_sql": sqls["summary"],
        "detail": detail, "detail_name": detail_name, "detail_sql": sqls[detail_name],
        "files": files, "bad_files": bad_files, "meta": _meta_rows(src.meta),
        "plots": plots, "examples": examples, "clips": clips, "snippets": snippets,
        "clip_cap": SNIPPETS_PER_GROUP if snippets else 0,
        "compared": compared, "captions": _captions(con, kind),
        "view_definitions": sorted((view_definitions or {}).items()),
    }
    index = out_dir / "index.html"
    index.write_text(render(context), encoding="utf-8")
    written.append(index)
    return written


__all__ = ["Plot", "default_report_dir", "render", "write_report"]
