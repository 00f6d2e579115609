"""Every SQL query of the audit report, by name, beside the template that shows them.

Each query runs over the views of pipeline/audit.py (a run: `annotations`, `rejects`; a release:
`selection`, `shards`) and is printed under its figure or table, so an auditor can re-run it with
`audioverse audit URI --sql "..."`. Durations are in seconds (columns named `..._s`); the report
formats them as s / min / h. Example rows are picked with window functions and LIMITs in SQL
(the report never loads a whole table), deterministically: by md5 of the segment id.
"""
from __future__ import annotations

RUN, RELEASE = "run", "release"
TOP_LANGUAGES = 12
TOP_REASONS = 25
TOP_TAGS = 25
HIST_BINS = 30
EXAMPLES_PER_GROUP = 3
MAX_GROUPS = 25          # groups (reasons, languages, ...) with examples, per section


def hist_sql(view: str, column: str, group: str) -> str:
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


def language_quality_sql(view: str, kept: str, agreement: str, snr: str) -> str:
    """Per language (the top TOP_LANGUAGES by segments, the rest as 'other'): segments, the kept
    share and the 10/25/50/75/90th percentiles of the agreement and SNR columns."""
    def pct(col: str, name: str) -> str:
        return ",\n       ".join(
            f"quantile_cont({col}, {q}) AS {name}_p{int(q * 100)}"
            for q in (0.1, 0.25, 0.5, 0.75, 0.9))

    return f"""WITH seg AS (
    SELECT coalesce(language, '(none)') AS language, {kept} AS kept,
           {agreement} AS agreement, {snr} AS snr
    FROM {view}
), top AS (
    SELECT language FROM seg GROUP BY 1 ORDER BY count(*) DESC, language LIMIT {TOP_LANGUAGES}
), grouped AS (
    SELECT CASE WHEN language IN (SELECT language FROM top) THEN language ELSE 'other' END
               AS language_group, kept, agreement, snr
    FROM seg
)
SELECT language_group AS language,
       count(*) AS segments,
       count(*) FILTER (WHERE kept) AS kept,
       count(*) FILTER (WHERE kept) / count(*) AS kept_share,
       count(agreement) AS agreement_n,
       {pct('agreement', 'agreement')},
       count(snr) AS snr_n,
       {pct('snr', 'snr')}
FROM grouped
GROUP BY 1
ORDER BY language_group = 'other', segments DESC, language_group"""


def drops_sql(view: str) -> str:
    """Segments and audio per drop reason of a run's annotations or a release's selection."""
    return f"""SELECT drop_reason, count(*) AS segments,
       coalesce(sum(duration_s), 0) AS audio_s
FROM {view}
WHERE drop_reason IS NOT NULL
GROUP BY 1
ORDER BY segments DESC, drop_reason"""


def run_sql() -> dict[str, str]:
    status = "CASE WHEN drop_reason IS NULL THEN 'kept' ELSE 'dropped' END"
    return {
        "summary": """SELECT count(*) AS segments,
       count(*) FILTER (WHERE drop_reason IS NULL) AS segments_kept,
       count(*) FILTER (WHERE drop_reason IS NOT NULL) AS segments_dropped,
       count(*) FILTER (WHERE drop_reason IS NULL) / nullif(count(*), 0) AS kept_share,
       count(DISTINCT recording_id) AS recordings_annotated,
       (SELECT count(*) FROM rejects) AS recordings_rejected,
       coalesce(sum(duration_s), 0) AS audio_s,
       coalesce(sum(duration_s) FILTER (WHERE drop_reason IS NULL), 0) AS kept_audio_s
FROM annotations""",
        "by_type": """SELECT content_type,
       count(*) AS segments,
       count(*) FILTER (WHERE drop_reason IS NULL) AS kept,
       coalesce(sum(duration_s), 0) AS audio_s,
       coalesce(sum(duration_s) FILTER (WHERE drop_reason IS NULL), 0) AS kept_audio_s
FROM annotations
GROUP BY 1
ORDER BY 1""",
        "hours": """SELECT coalesce(language, '(none)') AS language,
       coalesce(content_type, '(none)') AS content_type,
       coalesce(sum(duration_s), 0) AS audio_s,
       coalesce(sum(duration_s) FILTER (WHERE drop_reason IS NULL), 0) AS kept_audio_s
FROM annotations
GROUP BY ALL
ORDER BY audio_s DESC, language, content_type""",
        "kept": """SELECT coalesce(content_type, '(none)') AS content_type,
       count(*) FILTER (WHERE drop_reason IS NULL) AS kept,
       count(*) FILTER (WHERE drop_reason IS NOT NULL) AS dropped
FROM annotations
GROUP BY 1
ORDER BY 1""",
        "drops": drops_sql("annotations"),
        "rejects": """SELECT reason, count(*) AS recordings
FROM rejects
GROUP BY 1
ORDER BY recordings DESC, reason""",
        "language_quality": language_quality_sql(
            "annotations", "drop_reason IS NULL", "asr_agreement", "snr_db"),
        "duration": hist_sql("annotations", "duration_s", status),
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


def release_sql() -> dict[str, str]:
    status = "CASE WHEN selected THEN 'selected' ELSE 'not selected' END"
    return {
        "summary": """SELECT count(*) AS segments,
       count(*) FILTER (WHERE quality_eligible) AS eligible,
       count(*) FILTER (WHERE selected) AS selected,
       count(*) FILTER (WHERE selected) / nullif(count(*), 0) AS selected_share,
       count(DISTINCT recording_id) AS recordings,
       coalesce(sum(duration_s), 0) AS audio_s,
       coalesce(sum(duration_s) FILTER (WHERE selected), 0) AS selected_audio_s,
       (SELECT count(*) FROM shards) AS shard_rows
FROM selection""",
        "by_split": """SELECT split, count(*) AS segments,
       count(DISTINCT recording_id) AS recordings,
       coalesce(sum(duration_s), 0) AS audio_s
FROM shards
GROUP BY 1
ORDER BY 1""",
        "hours": """SELECT coalesce(language, '(none)') AS language,
       coalesce(content_type, '(none)') AS content_type,
       coalesce(sum(duration_s), 0) AS audio_s,
       coalesce(sum(duration_s) FILTER (WHERE selected), 0) AS selected_audio_s
FROM selection
GROUP BY ALL
ORDER BY audio_s DESC, language, content_type""",
        "kept": """SELECT coalesce(content_type, '(none)') AS content_type,
       count(*) FILTER (WHERE selected) AS selected,
       count(*) FILTER (WHERE NOT coalesce(selected, false) AND quality_eligible)
           AS eligible_not_selected,
       count(*) FILTER (WHERE NOT coalesce(selected, false)
                        AND NOT coalesce(quality_eligible, false)) AS not_eligible
FROM selection
GROUP BY 1
ORDER BY 1""",
        "drops": drops_sql("selection"),
        "gates": """SELECT reason, segments FROM (
    SELECT 'gate: ' || quality_gate AS reason, count(*) AS segments
    FROM selection WHERE quality_gate IS NOT NULL GROUP BY 1
    UNION ALL
    SELECT 'duplicate', count(*) FROM selection WHERE duplicate_of IS NOT NULL
) WHERE segments > 0
ORDER BY segments DESC, reason""",
        "language_quality": language_quality_sql(
            "selection", "coalesce(selected, false)", "q_agreement", "q_snr"),
        "quality": hist_sql("selection", "quality_score", status),
        "duration": hist_sql("selection", "duration_s", status),
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


def report_sql(kind: str) -> dict[str, str]:
    """Every query of the report's figures and tables, by name, for a run or a release."""
    return run_sql() if kind == RUN else release_sql()


# Night-over-night: these queries run on this run / release and on the previous one.
DELTA_QUERIES = {RUN: ("summary", "drops", "rejects"), RELEASE: ("summary", "drops", "gates")}

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


# --- example rows (drill-down) ---------------------------------------------------------------
# The columns an example shows, per view; a column an old run lacks is selected as NULL (the
# section says which). `snippet_*` columns say where the audio is: offsets at 16 kHz.
RUN_EXAMPLE_COLUMNS = [
    "segment_id", "recording_id", "source_uri", "start_s", "end_s", "duration_s",
    "content_type", "language", "transcript", "caption_description", "caption_scene",
    "asr_agreement", "snr_db", "drop_stage", "drop_reason", "drop_detail",
]
RUN_SNIPPET_COLUMNS = {"snippet_etag": "source_etag", "snippet_start": "start_sample",
                       "snippet_end": "end_sample", "snippet_bytes": "source_bytes"}
REJECT_EXAMPLE_COLUMNS = ["recording_id", "source_uri", "stage", "reason", "detail"]
SHARD_EXAMPLE_COLUMNS = [
    "segment_id", "recording_id", "source_uri", "split", "duration_s", "content_type",
    "language", "transcript", "caption_description", "caption_scene", "quality_score",
]
SHARD_SNIPPET_COLUMNS = {
    "snippet_etag": "source_etag",
    "snippet_start": "CAST(start_sample * 16000 // coalesce(sample_rate, 16000) AS BIGINT)",
    "snippet_end": "CAST(end_sample * 16000 // coalesce(sample_rate, 16000) AS BIGINT)",
    "snippet_bytes": "NULL",
}
SELECTION_EXAMPLE_COLUMNS = [
    "segment_id", "recording_id", "source_uri", "duration_s", "content_type", "language",
    "drop_reason", "quality_gate", "quality_score", "duplicate_of", "selected",
]


def examples_sql(view: str, group: str, columns: list[str], present: set[str], where: str,
                 order_key: str, snippet: dict[str, str] | None = None
                 ) -> tuple[str, list[str]]:
    """A few example rows per group (EXAMPLES_PER_GROUP, picked by md5 of `order_key`, among the
    MAX_GROUPS largest groups); returns (SQL, the columns the view lacks)."""
    missing = [c for c in columns if c not in present]
    select = [c if c in present else f"NULL AS {c}" for c in columns]
    if snippet:
        # the offsets come from columns that may be missing too: then no audio
        needed = {"source_etag", "start_sample", "end_sample", "source_bytes", "sample_rate"}
        for name, expr in snippet.items():
            cols = {c for c in needed if c in expr}
            select.append(f"{expr} AS {name}" if cols <= present else f"NULL AS {name}")
    # Pick by (group, id, md5) only, then read the picked rows' columns: the sort is narrow.
    sql = f"""WITH keyed AS (
    SELECT {group} AS grp, {order_key} AS pick_id FROM {view} WHERE {where}
), top_groups AS (
    SELECT grp FROM keyed GROUP BY 1 ORDER BY count(*) DESC, grp LIMIT {MAX_GROUPS}
), picked AS (
    SELECT grp, pick_id,
           row_number() OVER (PARTITION BY grp ORDER BY md5(pick_id)) AS example,
           count(*) OVER (PARTITION BY grp) AS group_rows
    FROM keyed
    WHERE grp IN (SELECT grp FROM top_groups)
    QUALIFY example <= {EXAMPLES_PER_GROUP}
)
SELECT p.grp, {', '.join(select)}, p.example, p.group_rows
FROM picked p JOIN {view} ON {view}.{order_key} = p.pick_id AND {where}
ORDER BY p.group_rows DESC, p.grp, p.example"""
    return sql, missing


def language_group(view: str) -> str:
    """The language group of the per-language chart: top TOP_LANGUAGES, the rest 'other'."""
    return (f"CASE WHEN coalesce(language, '(none)') IN (SELECT coalesce(language, '(none)') "
            f"FROM {view} GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT {TOP_LANGUAGES}) "
            f"THEN coalesce(language, '(none)') ELSE 'other' END")


def example_sections(kind: str, present: dict[str, set[str]]) -> list[dict]:
    """The drill-down sections: id, title, caption, SQL and the columns the view lacks.
    `present`: the columns of each view."""
    out = []

    def add(ident, title, caption, view, group, columns, where, key, snippet=None):
        sql, missing = examples_sql(view, group, columns, present[view], where, key, snippet)
        out.append({"id": ident, "title": title, "caption": caption, "sql": sql,
                    "missing": missing, "view": view})

    if kind == RUN:
        add("examples_drop_reason", "Examples by drop reason",
            "Dropped segments, a few per drop_reason (drop_stage and drop_detail say why).",
            "annotations", "drop_reason", RUN_EXAMPLE_COLUMNS, "drop_reason IS NOT NULL",
            "segment_id", RUN_SNIPPET_COLUMNS)
        add("examples_reject_reason", "Examples by reject reason",
            "Recordings that yielded no segment, a few per reject reason, with the stage that "
            "rejected them and its detail (no audio: nothing was decoded into a segment).",
            "rejects", "reason", REJECT_EXAMPLE_COLUMNS, "true", "source_uri")
        add("examples_language", "Examples by language",
            f"Segments of each language of the per-language chart (the top {TOP_LANGUAGES}; "
            "'other' for the rest, '(none)' for no language), kept or dropped.",
            "annotations", language_group("annotations"), RUN_EXAMPLE_COLUMNS, "true",
            "segment_id", RUN_SNIPPET_COLUMNS)
        add("examples_content_type", "Examples by content type",
            "Kept segments of each content type.",
            "annotations", "coalesce(content_type, '(none)')", RUN_EXAMPLE_COLUMNS,
            "drop_reason IS NULL", "segment_id", RUN_SNIPPET_COLUMNS)
    else:
        add("examples_drop_reason", "Examples by drop reason or quality gate",
            "Segments of the dataset view that were not eligible: by the run's drop_reason, "
            "else the first quality gate failed (no audio here: the selection table holds no "
            "offsets; audit the run for the clip).",
            "selection",
            "coalesce('drop: ' || drop_reason, 'gate: ' || quality_gate, 'duplicate')",
            SELECTION_EXAMPLE_COLUMNS,
            "NOT coalesce(quality_eligible, false)", "segment_id")
        add("examples_language", "Examples by language",
            f"Selected segments (shards) of each language (the top {TOP_LANGUAGES}; 'other' "
            "for the rest).",
            "shards", language_group("shards"), SHARD_EXAMPLE_COLUMNS, "true", "segment_id",
            SHARD_SNIPPET_COLUMNS)
        add("examples_content_type", "Examples by content type",
            "Selected segments (shards) of each content type.",
            "shards", "coalesce(content_type, '(none)')", SHARD_EXAMPLE_COLUMNS, "true",
            "segment_id", SHARD_SNIPPET_COLUMNS)
    return out
