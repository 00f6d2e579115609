"""The audit report: numbers computed with SQL over the DuckDB views of pipeline/audit.py, drawn
with matplotlib (Agg, no pyplot state), written as PNGs next to a self-contained index.html.

Every figure keeps the SQL it was drawn from; the report shows it in a <details> block so an
auditor can re-run it with `audioverse audit URI --sql "..."`. A figure whose query returns no
rows is a PNG that says "no data"; a query that cannot run (a column an old run lacks) is a PNG
that says why, and the report goes on.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

RUN, RELEASE = "run", "release"
TOP_LANGUAGES = 12
TOP_REASONS = 25
TOP_TAGS = 25
HIST_BINS = 30
CONTENT_COLORS = {"speech": "#4C72B0", "music": "#DD8452", "sound": "#55A868"}
OTHER_COLORS = ["#8172B3", "#C44E52", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]
FIGSIZE = (9.0, 4.6)
DPI = 100


@dataclass
class Plot:
    name: str                                   # file stem
    title: str
    caption: str
    queries: list[tuple[str, str]] = field(default_factory=list)  # (label, SQL)
    png: str | None = None                      # file name, None = no figure (see note)
    note: str | None = None                     # shown in place of / under the figure


# --- SQL helpers -----------------------------------------------------------------------------
def _fetch(con, sql: str) -> list[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _hist_sql(view: str, column: str, group: str) -> str:
    """Equal-width bins over [min, max] of `column`, counted per `group` (a SQL expression)."""
    return f"""WITH v AS (
    SELECT {column} AS x, {group} AS grp FROM {view} WHERE {column} IS NOT NULL
), r AS (SELECT min(x) AS lo, max(x) AS hi FROM v)
SELECT grp,
       coalesce(least(CAST(floor((x - lo) / nullif((hi - lo) / {HIST_BINS}, 0)) AS INTEGER),
                      {HIST_BINS - 1}), 0) AS bin,
       lo, (hi - lo) / {HIST_BINS} AS width,
       count(*) AS n
FROM v, r
GROUP BY ALL
ORDER BY grp, bin"""


def _sql(kind: str) -> dict[str, str]:
    """Every query of the report, by name, for a run or a release."""
    if kind == RUN:
        status = "CASE WHEN drop_reason IS NULL THEN 'kept' ELSE 'dropped' END"
        return {
            "summary": """SELECT count(*) AS segments,
       count(*) FILTER (WHERE drop_reason IS NULL) AS segments_kept,
       count(*) FILTER (WHERE drop_reason IS NOT NULL) AS segments_dropped,
       count(DISTINCT recording_id) AS recordings_annotated,
       (SELECT count(*) FROM rejects) AS recordings_rejected,
       round(coalesce(sum(duration_s), 0) / 3600, 4) AS segment_hours,
       round(coalesce(sum(duration_s) FILTER (WHERE drop_reason IS NULL), 0) / 3600, 4)
           AS kept_hours
FROM annotations""",
            "by_type": """SELECT content_type,
       count(*) AS segments,
       count(*) FILTER (WHERE drop_reason IS NULL) AS kept,
       round(coalesce(sum(duration_s), 0) / 3600, 4) AS hours,
       round(coalesce(sum(duration_s) FILTER (WHERE drop_reason IS NULL), 0) / 3600, 4)
           AS kept_hours
FROM annotations
GROUP BY 1
ORDER BY 1""",
            "hours": """SELECT coalesce(language, '(none)') AS language,
       coalesce(content_type, '(none)') AS content_type,
       coalesce(sum(duration_s), 0) / 3600 AS hours,
       coalesce(sum(duration_s) FILTER (WHERE drop_reason IS NULL), 0) / 3600 AS kept_hours
FROM annotations
GROUP BY ALL
ORDER BY hours DESC, language, content_type""",
            "kept": """SELECT coalesce(content_type, '(none)') AS content_type,
       count(*) FILTER (WHERE drop_reason IS NULL) AS kept,
       count(*) FILTER (WHERE drop_reason IS NOT NULL) AS dropped
FROM annotations
GROUP BY 1
ORDER BY 1""",
            "drops": """SELECT drop_reason, count(*) AS segments,
       round(coalesce(sum(duration_s), 0) / 3600, 4) AS hours
FROM annotations
WHERE drop_reason IS NOT NULL
GROUP BY 1
ORDER BY segments DESC, drop_reason""",
            "rejects": """SELECT reason, count(*) AS recordings
FROM rejects
GROUP BY 1
ORDER BY recordings DESC, reason""",
            "duration": _hist_sql("annotations", "duration_s", status),
            "tags": f"""SELECT label.name AS tag, count(*) AS segments
FROM annotations, unnest(event_labels) AS t(label)
WHERE label.name IS NOT NULL
GROUP BY 1
ORDER BY segments DESC, tag
LIMIT {TOP_TAGS}""",
            "speakers": """SELECT speaker_count, coalesce(content_type, '(none)') AS content_type,
       count(*) AS segments
FROM annotations
GROUP BY ALL
ORDER BY speaker_count NULLS LAST, content_type""",
        }
    status = "CASE WHEN selected THEN 'selected' ELSE 'not selected' END"
    return {
        "summary": """SELECT count(*) AS segments,
       count(*) FILTER (WHERE quality_eligible) AS eligible,
       count(*) FILTER (WHERE selected) AS selected,
       count(DISTINCT recording_id) AS recordings,
       round(coalesce(sum(duration_s), 0) / 3600, 4) AS hours,
       round(coalesce(sum(duration_s) FILTER (WHERE selected), 0) / 3600, 4) AS selected_hours,
       (SELECT count(*) FROM shards) AS shard_rows
FROM selection""",
        "by_split": """SELECT split, count(*) AS segments,
       count(DISTINCT recording_id) AS recordings,
       round(coalesce(sum(duration_s), 0) / 3600, 4) AS hours
FROM shards
GROUP BY 1
ORDER BY 1""",
        "hours": """SELECT coalesce(language, '(none)') AS language,
       coalesce(content_type, '(none)') AS content_type,
       coalesce(sum(duration_s), 0) / 3600 AS hours,
       coalesce(sum(duration_s) FILTER (WHERE selected), 0) / 3600 AS selected_hours
FROM selection
GROUP BY ALL
ORDER BY hours DESC, language, content_type""",
        "kept": """SELECT coalesce(content_type, '(none)') AS content_type,
       count(*) FILTER (WHERE selected) AS selected,
       count(*) FILTER (WHERE NOT coalesce(selected, false) AND quality_eligible)
           AS eligible_not_selected,
       count(*) FILTER (WHERE NOT coalesce(selected, false)
                        AND NOT coalesce(quality_eligible, false)) AS not_eligible
FROM selection
GROUP BY 1
ORDER BY 1""",
        "drops": """SELECT drop_reason, count(*) AS segments,
       round(coalesce(sum(duration_s), 0) / 3600, 4) AS hours
FROM selection
WHERE drop_reason IS NOT NULL
GROUP BY 1
ORDER BY segments DESC, drop_reason""",
        "gates": """SELECT reason, segments FROM (
    SELECT 'gate: ' || quality_gate AS reason, count(*) AS segments
    FROM selection WHERE quality_gate IS NOT NULL GROUP BY 1
    UNION ALL
    SELECT 'duplicate', count(*) FROM selection WHERE duplicate_of IS NOT NULL
) WHERE segments > 0
ORDER BY segments DESC, reason""",
        "quality": _hist_sql("selection", "quality_score", status),
        "duration": _hist_sql("selection", "duration_s", status),
        "tags": f"""SELECT tag, count(*) AS segments
FROM shards, unnest(event_tags) AS t(tag)
WHERE tag IS NOT NULL
GROUP BY 1
ORDER BY segments DESC, tag
LIMIT {TOP_TAGS}""",
        "speakers": """SELECT caption_speaker_count AS speaker_count,
       coalesce(content_type, '(none)') AS content_type, count(*) AS segments
FROM shards
GROUP BY ALL
ORDER BY speaker_count NULLS LAST, content_type""",
    }


# --- drawing ---------------------------------------------------------------------------------
def _colors(names: list[str]) -> dict[str, str]:
    out, spare = {}, iter(OTHER_COLORS * 10)
    for name in names:
        out[name] = CONTENT_COLORS.get(name) or next(spare)
    return out


def _ordered_types(types: set[str]) -> list[str]:
    """speech, music, sound first (in that order), then the rest alphabetically."""
    known = list(CONTENT_COLORS)
    return sorted(types, key=lambda t: (known.index(t) if t in known else len(known), t))


def _figure(ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _empty(ax, title: str, message: str = "no data") -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#555555",
            wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _message_png(path: Path, title: str, message: str) -> None:
    fig, (ax,) = _figure()
    _empty(ax, title, message)
    fig.savefig(path)


def _stacked(ax, x_labels: list[str], stacks: dict[str, list[float]], colors: dict[str, str],
             ylabel: str, title: str) -> None:
    if not x_labels or not any(v for vals in stacks.values() for v in vals):
        _empty(ax, title)
        return
    bottom = [0.0] * len(x_labels)
    positions = range(len(x_labels))
    for name, values in stacks.items():
        values = [float(v or 0.0) for v in values]  # DuckDB sums can be Decimal
        ax.bar(positions, values, bottom=bottom, label=name, color=colors[name],
               edgecolor="white", linewidth=0.5)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylim(0, max(bottom) * 1.08)  # the whole stack, not only its first layer
    ax.set_xticks(list(positions), x_labels, rotation=45 if len(x_labels) > 5 else 0,
                  ha="right" if len(x_labels) > 5 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _hbars(ax, labels: list[str], values: list[float], title: str, xlabel: str,
           color: str = "#4C72B0") -> None:
    if not labels:
        _empty(ax, title)
        return
    labels, values = labels[::-1], values[::-1]  # largest on top
    ax.barh(range(len(labels)), values, color=color)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:g}", va="center", fontsize=7)


def _draw_hours(rows: list[dict], kind: str, path: Path) -> None:
    part = "kept_hours" if kind == RUN else "selected_hours"
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["language"]] = totals.get(r["language"], 0.0) + r["hours"]
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    shown = ranked[:TOP_LANGUAGES]
    other = f"other ({len(ranked) - len(shown)})" if len(ranked) > len(shown) else None
    x_labels = shown + ([other] if other else [])
    types = _ordered_types({r["content_type"] for r in rows})
    colors = _colors(types)
    fig, axes = _figure(2)
    for ax, column, title in zip(axes, ["hours", part],
                                 ["all segments", "kept" if kind == RUN else "selected"]):
        stacks = {t: [0.0] * len(x_labels) for t in types}
        for r in rows:
            lang = r["language"] if r["language"] in shown else other
            stacks[r["content_type"]][x_labels.index(lang)] += r[column] or 0.0
        _stacked(ax, x_labels, stacks, colors, "hours", f"hours by language: {title}")
    fig.savefig(path)


def _draw_kept(rows: list[dict], kind: str, path: Path) -> None:
    parts = (["kept", "dropped"] if kind == RUN
             else ["selected", "eligible_not_selected", "not_eligible"])
    palette = {"kept": "#55A868", "dropped": "#C44E52", "selected": "#55A868",
               "eligible_not_selected": "#CCB974", "not_eligible": "#C44E52"}
    fig, (ax,) = _figure()
    title = ("kept vs dropped segments" if kind == RUN
             else "selected / eligible, not selected / not eligible")
    labels = [r["content_type"] for r in rows]
    totals = [sum(r[p] for p in parts) for r in rows]
    if not rows or not any(totals):
        _empty(ax, title)
        fig.savefig(path)
        return
    left = [0.0] * len(rows)
    for p in parts:
        fractions = [r[p] / t if t else 0.0 for r, t in zip(rows, totals)]
        ax.barh(range(len(rows)), fractions, left=left, color=palette[p],
                label=p.replace("_", " "), edgecolor="white")
        for i, (r, f) in enumerate(zip(rows, fractions)):
            if f >= 0.06:
                ax.text(left[i] + f / 2, i, f"{r[p]} ({100 * f:.0f}%)", ha="center",
                        va="center", fontsize=8, color="white")
        left = [a + b for a, b in zip(left, fractions)]
    ax.set_yticks(range(len(rows)), [f"{lab} (n={t})" for lab, t in zip(labels, totals)])
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of segments")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path)


def _draw_two_bars(left_rows, left_key, left_title, right_rows, right_key, right_title,
                   value_key_left, value_key_right, path: Path) -> None:
    fig, axes = _figure(2)
    _hbars(axes[0], [str(r[left_key]) for r in left_rows[:TOP_REASONS]],
           [r[value_key_left] for r in left_rows[:TOP_REASONS]], left_title, value_key_left)
    _hbars(axes[1], [str(r[right_key]) for r in right_rows[:TOP_REASONS]],
           [r[value_key_right] for r in right_rows[:TOP_REASONS]], right_title,
           value_key_right, color="#C44E52")
    fig.savefig(path)


def _draw_hist(rows: list[dict], title: str, xlabel: str, path: Path) -> None:
    fig, (ax,) = _figure()
    if not rows:
        _empty(ax, title)
        fig.savefig(path)
        return
    groups = sorted({r["grp"] for r in rows})
    palette = {"kept": "#55A868", "selected": "#55A868", "dropped": "#C44E52",
               "not selected": "#C44E52"}
    spare = iter(OTHER_COLORS)
    for g in groups:
        mine = [r for r in rows if r["grp"] == g]
        width = float(mine[0]["width"] or 0.0) or 1.0
        lo = float(mine[0]["lo"])
        xs = [lo + (r["bin"] + 0.5) * width for r in mine]
        ax.bar(xs, [r["n"] for r in mine], width=width * 0.95, alpha=0.6,
               label=f"{g} ({sum(r['n'] for r in mine)})",
               color=palette.get(g) or next(spare))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("segments")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)


def _draw_tags(rows: list[dict], title: str, path: Path) -> None:
    fig, (ax,) = _figure()
    _hbars(ax, [r["tag"] for r in rows], [r["segments"] for r in rows], title, "segments")
    fig.savefig(path)


def _draw_speakers(rows: list[dict], title: str, path: Path) -> None:
    counts = sorted({r["speaker_count"] for r in rows}, key=lambda v: (v is None, v or 0))
    x_labels = ["null" if c is None else str(c) for c in counts]
    types = _ordered_types({r["content_type"] for r in rows})
    stacks = {t: [0.0] * len(counts) for t in types}
    for r in rows:
        stacks[r["content_type"]][counts.index(r["speaker_count"])] += r["segments"]
    fig, (ax,) = _figure()
    _stacked(ax, x_labels, stacks, _colors(types), "segments", title)
    if x_labels:
        ax.set_xlabel("speakers in the segment")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path)


# --- the figures -------------------------------------------------------------------------------
def _plots(kind: str) -> list[tuple[Plot, list[str], object]]:
    """(plot, names of its queries, draw(results_by_name, path))."""
    run = kind == RUN
    table = "annotations" if run else "selection"
    kept = "kept (drop_reason is null)" if run else "selected"
    out = [
        (Plot("hours_by_language", "Hours by language and content type",
              f"Hours of {table} segments per language, stacked by content type: all segments "
              f"(left) and {kept} (right); the top {TOP_LANGUAGES} languages, the rest as "
              f"'other'; '(none)' = no language (music, sound)."),
         ["hours"], lambda q, p: _draw_hours(q["hours"], kind, p)),
        (Plot("kept_fraction",
              "Kept fraction" if run else "Selected vs eligible vs not eligible",
              ("Segments per content type that were kept (no drop_reason) or dropped."
               if run else
               "Segments of the dataset view per content type: selected, eligible but not "
               "selected (quality_eligible), and not eligible.")),
         ["kept"], lambda q, p: _draw_kept(q["kept"], kind, p)),
    ]
    if run:
        out.append((Plot("drop_reasons", "Drop and reject reasons",
                         "Left: segments by drop_reason (annotations). Right: recordings that "
                         "yielded no segment, by reject reason (rejects)."),
                    ["drops", "rejects"],
                    lambda q, p: _draw_two_bars(q["drops"], "drop_reason",
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
                    lambda q, p: _draw_two_bars(q["drops"], "drop_reason",
                                                "segments, by drop_reason",
                                                q["gates"], "reason",
                                                "not eligible: gates and duplicates",
                                                "segments", "segments", p)))
        out.append((Plot("quality_score", "Quality score",
                         f"Histogram of quality_score ({HIST_BINS} equal bins over its range), "
                         "selected vs not selected; null scores left out."),
                    ["quality"],
                    lambda q, p: _draw_hist(q["quality"], "quality_score", "quality_score", p)))
    out += [
        (Plot("duration", "Segment duration",
              f"Histogram of duration_s ({HIST_BINS} equal bins over its range), "
              + ("kept vs dropped." if run else "selected vs not selected.")),
         ["duration"], lambda q, p: _draw_hist(q["duration"], "segment duration",
                                               "duration_s (seconds)", p)),
        (Plot("event_tags", "Top event tags",
              (f"The {TOP_TAGS} AudioSet labels found most often among each segment's top-k "
               "event_labels (all segments of the run)." if run else
               f"The {TOP_TAGS} event_tags found most often in the release's shards (selected "
               "segments).")),
         ["tags"], lambda q, p: _draw_tags(q["tags"], "top event tags", p)),
        (Plot("speaker_counts", "Speaker counts",
              ("Segments by speaker_count (distinct speakers found by the speaker stage), "
               "stacked by content type; null = not measured." if run else
               "Shard segments by caption_speaker_count (speakers the captioner reported), "
               "stacked by content type; null = not reported.")),
         ["speakers"], lambda q, p: _draw_speakers(q["speakers"], "segments by speaker count", p)),
    ]
    return out


def _render_plot(con, plot: Plot, names: list[str], draw, sqls: dict, out_dir: Path) -> Path:
    import duckdb

    plot.queries = [(n, sqls[n]) for n in names]
    plot.png = f"{plot.name}.png"
    path = out_dir / plot.png
    try:
        results = {n: _fetch(con, sqls[n]) for n in names}
    except duckdb.Error as exc:
        from pipeline.audit import error_line

        plot.note = f"not available: {error_line(exc)}"
        _message_png(path, plot.title, "not available:\n" + error_line(exc)[:120])
        return path
    if not any(results.values()):
        plot.note = "no data: the queries returned no rows"
    draw(results, path)
    return path


# --- HTML ----------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bad { background: #fdd; font-weight: bold; }
figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; margin: 0.3em 0; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.note { color: #a33; } code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _e(value) -> str:
    return html.escape("NULL" if value is None else str(value))


def _table_html(rows: list[dict], bad: set[tuple[int, str]] | None = None) -> str:
    if not rows:
        return "<p>no rows</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for i, r in enumerate(rows):
        cells = []
        for c in cols:
            v = r[c]
            cls = ["num"] if isinstance(v, (int, float)) and not isinstance(v, bool) else []
            if bad and (i, c) in bad:
                cls.append("bad")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            text = f"{v:.4f}" if isinstance(v, float) else v
            cells.append(f"<td{attr}>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _details(queries: list[tuple[str, str]]) -> str:
    blocks = "".join(f"<p><code>{_e(label)}</code></p><pre>{_e(sql)}</pre>"
                     for label, sql in queries)
    return f"<details><summary>SQL</summary>{blocks}</details>"


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


# Where the kept captions' values came from (measured / heard / inferred / unknown, per field),
# whose descriptions the grounding check replaced, and why (schema 8; older runs lack them).
CAPTION_SQL = {
    "caption_provenance": """SELECT field, provenance, count(*) AS captions
FROM (UNPIVOT (SELECT caption_provenance.* FROM annotations
               WHERE drop_reason IS NULL AND caption_provenance IS NOT NULL)
      ON COLUMNS(*) INTO NAME field VALUE provenance)
GROUP BY 1, 2
ORDER BY 1, 2""",
    "caption_description_source": """SELECT caption_description_source AS description_source,
       count(*) AS captions
FROM annotations
WHERE drop_reason IS NULL AND caption_description IS NOT NULL
GROUP BY 1
ORDER BY captions DESC""",
    "caption_grounding": """SELECT split_part(problem, ':', 1) AS problem, count(*) AS captions,
       min(problem) AS example
FROM (SELECT unnest(caption_grounding) AS problem FROM annotations WHERE drop_reason IS NULL)
GROUP BY 1
ORDER BY captions DESC""",
}


def _caption_section(con) -> list[str]:
    """The run report's caption tables, or one line saying why there are none."""
    columns = {r[0] for r in con.execute("DESCRIBE annotations").fetchall()}
    if not {"caption_provenance", "caption_description_source"} <= columns:
        return ["<h2>Captions</h2>", "<p>This run's annotations predate caption provenance and "
                "the grounding check (schema 8).</p>"]
    parts = ["<h2>Captions</h2>",
             "<p>Kept segments: where each caption field came from, whether the description is "
             "the model's or the sentence composed from the facts (the grounding check replaced "
             "it), and what the check found.</p>"]
    for name, sql in CAPTION_SQL.items():
        parts += [f"<h3>{_e(name.replace('_', ' '))}</h3>", _table_html(_fetch(con, sql)),
                  _details([(name, sql)])]
    return parts


def write_report(con, src, out_dir: str | Path, view_definitions: dict[str, str] | None = None
                 ) -> list[Path]:
    """Compute, draw and write the report for `src` (pipeline.audit.AuditSource) into
    `out_dir`; returns the written files (the PNGs, then index.html)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = src.kind
    sqls = _sql(kind)
    written: list[Path] = []

    plots = []
    for plot, names, draw in _plots(kind):
        written.append(_render_plot(con, plot, names, draw, sqls, out_dir))
        plots.append(plot)

    summary = _fetch(con, sqls["summary"])
    detail_name = "by_type" if kind == RUN else "by_split"
    detail = _fetch(con, sqls[detail_name])
    files, bad_files = _files_check(con, src)
    bad_summary = set()
    if kind == RELEASE and summary and summary[0]["selected"] != summary[0]["shard_rows"]:
        bad_summary.add((0, "shard_rows"))

    what = "run" if kind == RUN else "release"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Audit of {what} {_e(src.ident)}</title><style>{CSS}</style></head><body>",
        f"<h1>Audit of {what} {_e(src.ident)}</h1>",
        f"<p><code>{_e(src.uri)}</code> ({_e(src.marker)}); generated "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}</p>",
        "<h2>Summary</h2>",
        _table_html(summary, bad_summary),
        _details([("summary", sqls["summary"])]),
        _table_html(detail),
        _details([(detail_name, sqls[detail_name])]),
        f"<h3>Files listed in {_e(src.marker)}</h3>",
        _table_html(files, bad_files),
    ]
    if bad_summary:
        parts.append("<p class='note'>selected segments in selection differ from the rows in "
                     "the shards.</p>")
    if bad_files:
        parts.append(f"<p class='note'>rows read differ from the rows {_e(src.marker)} "
                     "lists.</p>")
    meta = _meta_rows(src.meta)
    if meta:
        parts += [f"<details><summary>{_e(src.marker)} (top-level values)</summary>",
                  _table_html(meta), "</details>"]

    if kind == RUN:
        parts += _caption_section(con)
    parts.append("<h2>Figures</h2>")
    for plot in plots:
        parts.append(f"<figure id='{_e(plot.name)}'><h3>{_e(plot.title)}</h3>")
        if plot.png:
            parts.append(f"<img src='{_e(plot.png)}' alt='{_e(plot.title)}'>")
        parts.append(f"<figcaption>{_e(plot.caption)}</figcaption>")
        if plot.note:
            parts.append(f"<p class='note'>{_e(plot.note)}</p>")
        parts.append(_details(plot.queries) + "</figure>")
    if kind == RUN:
        parts += ["<figure id='quality_score'><h3>Quality score</h3>",
                  "<p>Not computed: a run has no quality scores. They are assigned when a "
                  "release is built; audit the release (its <code>selection</code> view has "
                  "<code>quality_score</code>).</p></figure>"]

    views = ("<code>annotations</code> and <code>rejects</code>" if kind == RUN
             else "<code>selection</code> and <code>shards</code> (without <code>codes</code>)")
    parts += [
        "<h2>Re-running a query</h2>",
        f"<p>Every query above runs over the views {views}:</p>",
        f"<pre>audioverse audit {_e(src.uri)} --sql \"SELECT ...\"</pre>",
    ]
    if view_definitions:
        parts.append(_details(sorted(view_definitions.items())).replace(
            "<summary>SQL</summary>", "<summary>view definitions</summary>", 1))
    parts.append("</body></html>")

    index = out_dir / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    written.append(index)
    return written


__all__ = ["Plot", "write_report"]
