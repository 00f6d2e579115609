"""The release's dataset view and selection, in plain Ray tasks: the exact top fraction of every
stratum over any number of segments, with no table on the driver.

The dataset view is the latest annotation of every source the ledger holds as `annotated` and
that is not taken down (in the ledger, or in the takedown list as it is now). A source deleted
or replaced in the input since the last run still counts until the next run sees it gone and
marks it `deleted` (releases follow the nightly run, so that is at most a night). Annotation
files written by an older version of the pipeline are read as they are: a column added since
(e.g. `audio_sha256` before schema 5) reads as null, so such segments have no duplicate check,
and every row carries the `schema_version` it was read from.

1. View and score: one task per ledger bucket (B) reads that bucket of the snapshot, keeps the
   annotated sources not taken down, reads exactly their rows from the files of that bucket's
   partitions of the runs that annotated them last (the view's columns only), scores them
   (operators/scoring.py, vectorized; split and stratum included) and splits them into B parts
   by a hash of their audio (`audio_sha256`, or the segment id where there is none).
2. Duplicates: one task per audio part takes that part from every view task (every copy of a
   sound is in one task) and keeps the copy with the smallest (source URI, segment id). It
   returns its eligible rows, the rest, and a histogram of the eligible rows' scores per
   stratum (bins: the top 20 bits of an order-preserving key of the float32 score).
3. Order: the driver adds up the histograms (bounded by the bins, not the rows), which gives
   every stratum's size and hours, hence its cut (`unit: segments`: ceil(fraction x n);
   `hours`: the shortest prefix reaching fraction x the hours), and cuts the global order
   (stratum, score descending) into ranges of about ROWS_PER_RANGE rows at bin edges (rows of
   one bin, e.g. tied scores, stay in one range), each with the rows and seconds of every
   stratum before it. A task per duplicates part splits its eligible rows by range; one task
   per range sorts its rows (stratum, score descending, segment id), and ranks and selects
   them from those offsets. One shuffle of the eligible rows in all; the result equals
   operators/selection.py `select`.
4. The range tasks hand the selected rows to the tokenizer split by code bucket (a hash of the
   segment id, so one task reads one bucket of the code cache); every block is written as a
   selection part by a worker once tokenization is done.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.parquet_io import parquet_file, write_parquet
from operators.scoring import score_table
from operators.storage import ObjectStore
from pipeline.ledger import Snapshot, read_bucket
from schemas.config import ReleaseConfig, StorageConfig
from schemas.layout import Layout
from schemas.captions import UNKNOWN
from schemas.provenance import INFERRED, RANK
from schemas.provenance import UNKNOWN as UNKNOWN_SOURCE
from schemas.release import SELECTION_SCHEMA
from schemas.tables import ANNOTATIONS_SCHEMA

# What a release needs from the annotations (not the raw caption replies, hypotheses, etc.).
VIEW_COLUMNS = [
    "run_id", "recording_id", "source_uri", "source_etag", "source_version_id",
    "segment_id", "segment_index", "content_type", "start_s", "end_s", "duration_s",
    "start_sample", "end_sample", "audio_sha256",
    "snr_db", "clipped_ratio", "speech_fraction", "music_fraction", "noise_fraction",
    "event_labels", "language", "transcript", "transcript_system", "asr_confidence",
    "asr_agreement", "speaker_count",
    "caption_source", "caption_model", "caption_scene", "caption_environment",
    "caption_emotion", "caption_speaker_count", "caption_speakers", "caption_description",
    "caption_flags", "caption_provenance", "drop_reason",
]
# The annotation schema version each row was read from (the file's Parquet metadata; null for a
# file without it): an auditor can tell which rows came from older runs, and a rule whose input
# changed meaning between versions can tell them apart.
SCHEMA_VERSION_FIELD = pa.field("schema_version", pa.int32())
# Every field nullable: blocks pass through Ray Data's shuffles, which concatenate blocks and
# refuse two that differ only in a field's nullability (an empty block, a sorted range).
VIEW_SCHEMA = pa.schema([*(ANNOTATIONS_SCHEMA.field(n).with_nullable(True) for n in VIEW_COLUMNS),
                         SCHEMA_VERSION_FIELD])
log = logging.getLogger("audioverse.release")
_BUCKET_FILE = re.compile(r"part-(\d{4})-\d{5}\.parquet$")


def hash_bucket(values: pa.Array | pa.ChunkedArray, buckets: int) -> pa.Array:
    """A stable bucket of each string (sha256), computed once per distinct value."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    encoded = pc.dictionary_encode(arr)
    keys = [int.from_bytes(hashlib.sha256((v or "").encode()).digest()[:8], "big") % buckets
            for v in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(keys, pa.int32()), encoded.indices)


def file_schema_version(schema: pa.Schema) -> int | None:
    """The annotation schema version an annotation file was written with (schemas/tables.py
    SCHEMA_VERSION, in its Parquet metadata); None when the file does not say."""
    raw = (schema.metadata or {}).get(b"schema_version")
    try:
        return int(raw.decode()) if raw else None
    except ValueError:
        return None


def conform_view(table: pa.Table, schema_version: int | None = None) -> pa.Table:
    """An annotation file's view columns in today's types; a column added to the schema after
    the file was written (an older run's schema version, e.g. `audio_sha256` before 5) reads
    as null, and every row carries the version it was read from."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in VIEW_SCHEMA if f.name in VIEW_COLUMNS]
    cols.append(pa.array([schema_version] * table.num_rows, pa.int32()))
    return pa.Table.from_arrays(cols, schema=VIEW_SCHEMA)


def _annotation_files(store: ObjectStore, layout: Layout, run_id: str, bucket: int) -> list[str]:
    """The annotation files of a run that can hold rows of a ledger bucket: the files of that
    bucket's partitions (listed by their prefix), or, for a run written before files were
    named by partition, every file of the run."""
    run = layout.run(run_id)
    mine = [o.uri for page in store.list_pages(run + layout.bucket_parts_key("annotations",
                                                                            bucket))
            for o in page]
    if mine:
        return mine
    return [o.uri for page in store.list_pages(run + "annotations/") for o in page
            if o.key.endswith(".parquet") and not _BUCKET_FILE.search(o.key)]


def bucket_view(store: ObjectStore, layout: Layout, snapshot: Snapshot, bucket: int,
                takedowns: set[str]) -> tuple[pa.Table, dict]:
    """The view's rows of one ledger bucket, and its counts."""
    states = read_bucket(store, layout, snapshot, bucket)
    annotated = states.filter(pc.equal(states.column("state"), "annotated"))
    live = annotated.filter(pc.invert(pc.is_in(annotated.column("source_uri"),
                                               value_set=pa.array(sorted(takedowns),
                                                                  pa.string()))))
    stats = {"recordings": live.num_rows, "takedown_recordings": annotated.num_rows -
             live.num_rows, "runs": {}}
    parts = []
    for run_id in pc.unique(live.column("run_id")).to_pylist():
        wanted = live.filter(pc.equal(live.column("run_id"), run_id)).column("recording_id")
        for uri in _annotation_files(store, layout, run_id, bucket):
            file = parquet_file(store, uri)
            version = file_schema_version(file.schema_arrow)
            table = file.read(columns=[n for n in VIEW_COLUMNS if n in file.schema_arrow.names])
            mine = table.filter(pc.is_in(table.column("recording_id"), value_set=wanted))
            if mine.num_rows:
                parts.append(conform_view(mine, version))
                stats["runs"][run_id] = stats["runs"].get(run_id, 0) + mine.num_rows
    view = pa.concat_tables(parts) if parts else VIEW_SCHEMA.empty_table()
    return view, stats


def split_by(table: pa.Table, keys: np.ndarray, parts: int) -> list[pa.Table]:
    """The rows of `table` by `keys` (integers in [0, parts)), each part in table order."""
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(parts + 1))
    return [table.take(pa.array(order[bounds[i]:bounds[i + 1]], pa.int64()))
            for i in range(parts)]


# View columns only the score reads: dropped once scored, so the shuffles carry less.
SCORE_ONLY = ["start_s", "end_s", "segment_index", "snr_db", "clipped_ratio", "speech_fraction",
              "music_fraction", "noise_fraction", "asr_confidence", "asr_agreement",
              "speaker_count", "caption_model", "caption_flags"]


# caption column per provenance key, and what a field below the minimum becomes
_CAPTION_TEXT = {"scene": "caption_scene", "environment": "caption_environment",
                 "emotion": "caption_emotion", "description": "caption_description"}
_SPEAKER_KEYS = {"speaker_gender": "gender", "speaker_age_group": "age_group",
                 "speaker_emotion": "emotion", "speaker_speaking_style": "speaking_style"}


def hold_captions_to(table: pa.Table, minimum: str) -> pa.Table:
    """`release.caption_min_provenance`: every caption field whose provenance ranks below
    `minimum` becomes "unknown" (the description: null), vectorized. A row without provenance
    (written before schema 6, by the text captioner) counts as inferred. Runs after scoring, so
    the score still sees what the night wrote."""
    allowed = pa.array([p for p, r in RANK.items() if r >= RANK[minimum]])
    if RANK[minimum] <= RANK[INFERRED] or not table.num_rows:
        return table  # nothing a night writes ranks below inferred but "unknown" values

    prov = table.column("caption_provenance").combine_chunks()

    def provenance_of(key: str) -> pa.Array:
        return pc.struct_field(prov, key) if prov.null_count < len(prov) \
            else pa.nulls(len(prov), pa.string())

    # per held field: whether its provenance ranks below the minimum (computed once)
    weak = {key: pc.invert(pc.is_in(pc.fill_null(provenance_of(key), INFERRED),
                                    value_set=allowed))
            for key in [*_CAPTION_TEXT, *_SPEAKER_KEYS]}

    # The provenance the shards carry: a field held to "unknown" is unknown, not inferred (also
    # on rows written before provenance existed).
    held_prov = pa.StructArray.from_arrays(
        [pc.if_else(weak[f.name], pa.scalar(UNKNOWN_SOURCE), provenance_of(f.name))
         if f.name in weak else provenance_of(f.name)
         for f in prov.type], fields=list(prov.type))

    for key, column in _CAPTION_TEXT.items():
        values = table.column(column).combine_chunks()
        held = pa.nulls(len(values), values.type) if key == "description" \
            else pa.scalar(UNKNOWN, values.type)
        masked = pc.if_else(pc.and_(weak[key], pc.is_valid(values)), held, values)
        table = table.set_column(table.schema.get_field_index(column), column, masked)
    speakers = table.column("caption_speakers").combine_chunks()
    if len(speakers.flatten()):
        # flatten/list_parent_indices respect a slice, .values/.offsets do not: rebase them
        owner = pc.list_parent_indices(speakers)
        values = speakers.flatten()
        offsets = pc.subtract(speakers.offsets, speakers.offsets[0])
        children = []
        for field in values.type:
            child = pc.struct_field(values, field.name)
            key = next(k for k, v in _SPEAKER_KEYS.items() if v == field.name)
            hide = pc.take(weak[key], owner)
            children.append(pc.if_else(hide, pa.scalar(UNKNOWN, child.type), child))
        rebuilt = pa.StructArray.from_arrays(children, fields=list(values.type),
                                             mask=pc.is_null(values))
        speakers = pa.ListArray.from_arrays(offsets, rebuilt, mask=pc.is_null(speakers))
        table = table.set_column(table.schema.get_field_index("caption_speakers"),
                                 "caption_speakers", speakers.cast(table.schema.field(
                                     "caption_speakers").type))
    return table.set_column(table.schema.get_field_index("caption_provenance"),
                            "caption_provenance", held_prov)


def event_tags(labels: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The names of each row's event labels (what a shard keeps; a third of a view row's bytes
    are the labels' ids and scores). No labels -> an empty list."""
    labels = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels
    # `values` and `offsets` are the whole child array and its raw offsets (a slice's too).
    tags = pa.ListArray.from_arrays(labels.offsets, pc.struct_field(labels.values, "name"))
    return pc.if_else(pc.is_valid(labels), tags, pa.scalar([], pa.list_(pa.string())))


def view_and_score(storage: StorageConfig, output_uri: str, snapshot: Snapshot, bucket: int,
                   takedowns: list[str], release: ReleaseConfig, dup_parts: int):
    """A Ray task (1 + dup_parts returns): one ledger bucket's view counts, then its view rows,
    scored, split by a hash of their audio (every copy of a sound, from whichever bucket, goes
    to the same part)."""
    store = ObjectStore(storage, reached=True)
    view, stats = bucket_view(store, Layout(output_uri), snapshot, bucket, set(takedowns))
    scored = hold_captions_to(score_table(view, release),
                              release.caption_min_provenance).drop_columns(SCORE_ONLY)
    scored = scored.set_column(scored.schema.get_field_index("event_labels"), "event_tags",
                               event_tags(scored.column("event_labels")))
    scored = scored.append_column("duplicate_of", pa.nulls(scored.num_rows, pa.string()))
    stats["rows"] = scored.num_rows
    sha = scored.column("audio_sha256")
    key = pc.if_else(pc.is_valid(sha), sha, scored.column("segment_id"))
    parts = split_by(scored, hash_bucket(key, dup_parts).to_numpy(zero_copy_only=False),
                     dup_parts)
    return (stats, *parts) if dup_parts > 1 else (stats, parts[0])


def mark_duplicates(group: pa.Table) -> pa.Table:
    """One group of the audio-hash buckets: every copy of a sound but the one with the smallest
    (source URI, segment id) gets `duplicate_of` and is not eligible (operators/selection.py
    `mark_duplicates`)."""
    if not group.num_rows:
        return group
    order = pc.sort_indices(group, sort_keys=[("audio_sha256", "ascending"),
                                              ("source_uri", "ascending"),
                                              ("segment_id", "ascending")])
    sha = pc.take(group.column("audio_sha256"), order).to_numpy(zero_copy_only=False)
    ids = pc.take(group.column("segment_id"), order).to_numpy(zero_copy_only=False)
    has = pc.is_valid(pc.take(group.column("audio_sha256"), order)).to_numpy(
        zero_copy_only=False)
    first = np.ones(len(sha), dtype=bool)
    if len(sha) > 1:
        first[1:] = sha[1:] != sha[:-1]
    starts = np.maximum.accumulate(np.where(first, np.arange(len(sha)), 0))
    dup = has & ~first
    kept = ids[starts]
    duplicate_of = np.where(dup, kept, None)
    position = np.empty(len(order), dtype=np.int64)
    position[order.to_numpy()] = np.arange(len(order))
    dup_in_place = dup[position]
    eligible = group.column("quality_eligible").to_numpy(zero_copy_only=False)
    gate = group.column("quality_gate").to_numpy(zero_copy_only=False).astype(object)
    gate[dup_in_place & eligible] = "duplicate"
    out = group.set_column(group.schema.get_field_index("duplicate_of"), "duplicate_of",
                           pa.array(duplicate_of[position], pa.string()))
    out = out.set_column(out.schema.get_field_index("quality_gate"), "quality_gate",
                         pa.array(gate, pa.string()))
    return out.set_column(out.schema.get_field_index("quality_eligible"), "quality_eligible",
                          pa.array(eligible & ~dup_in_place, pa.bool_()))


def _strata(block: pa.Table) -> list[tuple[str, np.ndarray]]:
    """(stratum, the row numbers of the block in it), without a loop over rows."""
    encoded = pc.dictionary_encode(block.column("stratum").combine_chunks())
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    return [(name, np.nonzero(codes == k)[0])
            for k, name in enumerate(encoded.dictionary.to_pylist())]


def assign(block: pa.Table, offsets: dict, cuts: dict, unit: str) -> pa.Table:
    """rank_in_stratum and selected for the rows of one sorted block of eligible rows.
    `offsets[stratum]`: rows and seconds of that stratum in the blocks before; `cuts[stratum]`:
    the number of rows kept (segments) or the seconds to reach (hours)."""
    durations = pc.fill_null(block.column("duration_s"), 0.0).to_numpy(zero_copy_only=False)
    rank = np.zeros(block.num_rows, dtype=np.int32)
    selected = np.zeros(block.num_rows, dtype=bool)
    for name, rows in _strata(block):
        before_rows, before_s = offsets.get(name, (0, 0.0))
        positions = before_rows + np.arange(len(rows))  # 0-based within the stratum
        rank[rows] = positions + 1
        if unit == "hours":
            # The shortest prefix whose cumulative seconds reach the target (selection.py:
            # searchsorted(cum, need - 1e-9) + 1): a row is in it when the seconds before it
            # fall short of the target, and the first row always is. The running sum starts
            # from the blocks before, added in the same order as one cumsum over the stratum.
            prior = np.cumsum(np.concatenate([[before_s], durations[rows]]))[:-1]
            selected[rows] = (positions == 0) | (prior < cuts[name] - 1e-9)
        else:
            selected[rows] = positions < cuts[name]
    out = block.append_column("rank_in_stratum", pa.array(rank, pa.int32()))
    return out.append_column("selected", pa.array(selected, pa.bool_()))


def cuts_for(totals: dict, fraction: float, unit: str) -> dict:
    """Per stratum: rows kept (segments) or the seconds the kept prefix must reach (hours)."""
    out = {}
    for name, (n, seconds) in totals.items():
        out[name] = fraction * seconds if unit == "hours" else \
            max(0, min(n, math.ceil(fraction * n - 1e-9)))
    return out


def selection_rows(block: pa.Table) -> pa.Table:
    """A block as SELECTION_SCHEMA (rank null and not selected where not eligible)."""
    n = block.num_rows
    cols = {}
    for f in SELECTION_SCHEMA:
        if f.name in block.column_names:
            cols[f.name] = block.column(f.name).cast(f.type)
        elif f.name == "selected":
            cols[f.name] = pa.array([False] * n, pa.bool_())
        else:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=SELECTION_SCHEMA)


def write_selection_part(store: ObjectStore, prefix: str, block: pa.Table, name: str) -> dict:
    key = f"selection/part-{name}.parquet"
    return write_parquet(store, prefix + key, selection_rows(block), SELECTION_SCHEMA,
                         "selection", path=key).as_dict()




# --- the order: a histogram of the scores, then ranges of it ------------------------------------
BIN_SHIFT = 12  # a histogram bin is the top 20 bits of a score's order key


def order_key(scores: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint32 per float32 score whose ascending order is the scores' descending order
    (the IEEE bits made monotonic; -0.0 as 0.0)."""
    values = pc.fill_null(scores, 0.0).to_numpy(zero_copy_only=False).astype(np.float32) + \
        np.float32(0.0)
    bits = values.view(np.uint32)
    rising = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    return (np.uint32(0xFFFFFFFF) - rising).astype(np.uint32)


def histogram(eligible: pa.Table) -> dict:
    """Per stratum: the occupied score bins, rows and seconds in each (sorted by bin)."""
    bins = order_key(eligible.column("quality_score")) >> BIN_SHIFT
    durations = pc.fill_null(eligible.column("duration_s"), 0.0).to_numpy(zero_copy_only=False)
    out = {}
    for name, rows in _strata(eligible):
        occupied, where = np.unique(bins[rows], return_inverse=True)
        out[name] = (occupied.astype(np.int64), np.bincount(where).astype(np.int64),
                     np.bincount(where, weights=durations[rows]))
    return out


def dedupe_part(dedupe: bool, *parts: pa.Table):
    """A Ray task (3 returns) over one audio-hash part from every view task: duplicates marked;
    its counts and the score histogram of its eligible rows; the eligible rows; the rest."""
    table = pa.concat_tables(parts)
    if dedupe:
        table = mark_duplicates(table)
    mask = pc.fill_null(table.column("quality_eligible"), False)
    eligible, other = table.filter(mask), table.filter(pc.invert(mask))
    gates = pc.value_counts(pc.fill_null(other.column("quality_gate"), "no_score")).to_pylist()
    stats = {"eligible": eligible.num_rows, "other": other.num_rows,
             "duplicates": table.num_rows - table.column("duplicate_of").null_count,
             "gates": {c["values"]: c["counts"] for c in gates},
             "histogram": histogram(eligible)}
    return stats, eligible, other


def split_ranges(eligible: pa.Table, strata: list[str], starts: np.ndarray):
    """A Ray task (len(starts) returns): eligible rows by range of the global order, a range
    being the (stratum, score bin) keys from starts[r] to starts[r + 1]."""
    index = pc.index_in(eligible.column("stratum"), value_set=pa.array(strata, pa.string()))
    composite = index.to_numpy(zero_copy_only=False).astype(np.int64) << 32 | \
        (order_key(eligible.column("quality_score")) >> BIN_SHIFT).astype(np.int64)
    ranges = np.searchsorted(starts, composite, side="right") - 1
    parts = split_by(eligible, ranges, len(starts))
    return tuple(parts) if len(parts) > 1 else parts[0]


def rank_range(offsets: dict, cuts: dict, unit: str, code_parts: int, *parts: pa.Table):
    """A Ray task (2 + code_parts returns) over one range of the order: its rows sorted
    (stratum, score descending, segment id), ranked and selected from the offsets (rows and
    seconds of each stratum before the range); its counts; its selected rows by code bucket
    (a hash of the segment id) for the tokenizer."""
    table = pa.concat_tables(parts)
    table = table.take(pc.sort_indices(table, sort_keys=[
        ("stratum", "ascending"), ("quality_score", "descending"), ("segment_id", "ascending")]))
    out = assign(table, offsets, cuts, unit)
    chosen = out.filter(out.column("selected"))
    stats: dict = {"strata": {}, "by_split": {}}
    for name, rows in _strata(chosen):
        part = chosen.take(pa.array(rows, pa.int64()))
        stats["strata"][name] = [
            part.num_rows, float(np.sum(pc.fill_null(part.column("duration_s"), 0.0)
                                        .to_numpy(zero_copy_only=False))),
            float(pc.min(part.column("quality_score")).as_py())]
    for split in pc.unique(chosen.column("split")).to_pylist():
        stats["by_split"][split] = int(pc.sum(pc.equal(chosen.column("split"), split)).as_py())
    buckets = hash_bucket(chosen.column("segment_id"), code_parts)
    chosen = chosen.append_column("code_bucket", buckets)
    by_code = split_by(chosen, buckets.to_numpy(zero_copy_only=False), code_parts)
    stats["code_rows"] = [t.num_rows for t in by_code]
    return (out, stats, *by_code)


def plan_ranges(hist: dict[str, tuple], parts: int) -> tuple[list[str], np.ndarray, list[dict]]:
    """From the merged histogram: the strata (sorted), the first (stratum, bin) key of each of
    up to `parts` ranges of about equal rows (whole bins: rows tied on a bin stay together),
    and each range's offsets (rows and seconds of every stratum before it)."""
    strata = sorted(hist)
    keys = np.concatenate([np.int64(i) << 32 | hist[s][0] for i, s in enumerate(strata)]) \
        if strata else np.zeros(0, np.int64)
    counts = np.concatenate([hist[s][1] for s in strata]) if strata else np.zeros(0, np.int64)
    seconds = np.concatenate([hist[s][2] for s in strata]) if strata else np.zeros(0)
    owner = np.concatenate([np.full(len(hist[s][0]), i) for i, s in enumerate(strata)]) \
        if strata else np.zeros(0, np.int64)
    total = int(counts.sum())
    if not total:
        return strata, np.zeros(1, np.int64), [{}]
    before = np.concatenate([[0], np.cumsum(counts)[:-1]])
    which = np.minimum(parts - 1, before * parts // total)  # the range each bin falls in
    first = np.nonzero(np.concatenate([[True], which[1:] != which[:-1]]))[0]
    starts = keys[first]
    starts[0] = np.iinfo(np.int64).min  # the first range takes everything before it
    cum_n = np.concatenate([[0], np.cumsum(counts)])
    cum_s = np.concatenate([[0.0], np.cumsum(seconds)])
    lo = np.searchsorted(owner, np.arange(len(strata)), side="left")
    hi = np.searchsorted(owner, np.arange(len(strata)), side="right")
    offsets = []
    for start in first:  # the bins of a stratum are contiguous: [lo, hi)
        mine = {}
        for i, name in enumerate(strata):
            end = min(max(start, lo[i]), hi[i])
            if end > lo[i]:
                mine[name] = (int(cum_n[end] - cum_n[lo[i]]), float(cum_s[end] - cum_s[lo[i]]))
        offsets.append(mine)
    return strata, starts, offsets


def merge_histograms(histograms: list[dict]) -> dict[str, tuple]:
    """Per stratum, the bins of every part added up (bins sorted)."""
    out = {}
    for name in sorted({n for h in histograms for n in h}):
        bins = np.concatenate([h[name][0] for h in histograms if name in h])
        counts = np.concatenate([h[name][1] for h in histograms if name in h])
        seconds = np.concatenate([h[name][2] for h in histograms if name in h])
        occupied, where = np.unique(bins, return_inverse=True)
        out[name] = (occupied, np.bincount(where, weights=counts).astype(np.int64),
                     np.bincount(where, weights=seconds))
    return out


# --- the driver's side: start the tasks, add up their counts --------------------------------------
ROWS_PER_RANGE = 200_000  # rows a rank task sorts, about (each is one block of the selection)


@dataclass
class Chosen:
    """What the selection left in the object store: the selected rows (block refs by code
    bucket, for the tokenizer), the blocks to write as the selection table, and the counts."""

    summary: dict
    view: dict
    selected: list  # [code bucket] -> refs of blocks of selected rows
    eligible_blocks: list
    other_blocks: list
    storage: StorageConfig
    prefix: str

    def write(self, failed: dict[str, str]) -> list[dict]:
        """Write every block as a selection part (a segment whose tokenization failed is not
        selected after all) by the workers holding them; returns their manifest entries (path,
        rows, bytes, sha256), by path."""
        import ray

        from pipeline.ray_session import TASK_CPUS

        task = ray.remote(num_cpus=TASK_CPUS, max_retries=3)(_write_part)
        failed_ids = sorted(failed)
        entries = ray.get(
            [task.remote(self.storage, self.prefix, ref, f"e{i:05d}", failed_ids)
             for i, ref in enumerate(self.eligible_blocks)]
            + [task.remote(self.storage, self.prefix, ref, f"o{i:05d}", failed_ids)
               for i, ref in enumerate(self.other_blocks)])
        return sorted(entries, key=lambda e: e["path"])


def _write_part(storage: StorageConfig, prefix: str, block: pa.Table, name: str,
                failed: list[str]) -> dict:
    if failed and "selected" in block.column_names:
        off = pc.is_in(block.column("segment_id"), value_set=pa.array(failed, pa.string()))
        block = block.set_column(block.schema.get_field_index("selected"), "selected",
                                 pc.and_(block.column("selected"), pc.invert(off)))
    return write_selection_part(ObjectStore(storage, reached=True), prefix, block, name)


def _takedowns_by_bucket(store: ObjectStore, cfg, buckets: int) -> dict[int, list[str]]:
    from pipeline.ledger import read_takedowns
    from schemas.layout import source_bucket

    out: dict[int, list[str]] = {b: [] for b in range(buckets)}
    for uri in read_takedowns(store, cfg.input):
        out[source_bucket(uri, buckets)].append(uri)
    return out


def select_release(cfg, store: ObjectStore, layout: Layout, release_id: str,
                   snapshot: Snapshot) -> Chosen:
    """View, score, dedupe, order and select in tasks; the driver keeps block refs, counts
    and the score histogram (bounded by the bins, not the rows)."""
    import ray

    from pipeline.ray_session import TASK_CPUS

    rcfg: ReleaseConfig = cfg.release
    t0 = time.monotonic()
    buckets = snapshot.buckets
    parts = buckets  # audio-hash parts, and code buckets of the selected rows
    takedowns = _takedowns_by_bucket(store, cfg, buckets)
    remote = ray.remote(num_cpus=TASK_CPUS, max_retries=3)

    # 1. view and score, one task per ledger bucket; rows split by audio hash
    views = [remote(view_and_score).options(num_returns=1 + parts).remote(
        cfg.storage, layout.root, snapshot, b, takedowns[b], rcfg, parts)
        for b in range(buckets)]
    view_stats = ray.get([v[0] for v in views])
    view = {"recordings": sum(s["recordings"] for s in view_stats),
            "takedown_recordings": sum(s["takedown_recordings"] for s in view_stats),
            "runs": sorted({r for s in view_stats for r in s["runs"]})}
    rows = sum(s["rows"] for s in view_stats)
    log.info("view: %d segments of %d recordings, scored in %.1fs", rows, view["recordings"],
             time.monotonic() - t0)

    # 2. duplicates: one task per audio-hash part (every copy of a sound in one task)
    deduped = [remote(dedupe_part).options(num_returns=3).remote(
        rcfg.dedupe, *[v[1 + p] for v in views]) for p in range(parts)]
    dedupe_stats = ray.get([d[0] for d in deduped])
    del views
    eligible = sum(s["eligible"] for s in dedupe_stats)

    # 3. the order: ranges of the merged score histogram, each sorted and ranked by one task
    hist = merge_histograms([s["histogram"] for s in dedupe_stats])
    totals = {name: (int(h[1].sum()), float(np.cumsum(h[2])[-1])) for name, h in hist.items()}
    cuts = cuts_for(totals, rcfg.fraction, rcfg.unit)
    ranges = max(1, min(4 * parts, math.ceil(eligible / ROWS_PER_RANGE)))
    strata, starts, offsets = plan_ranges(hist, ranges)
    with_rows = [(d, s) for d, s in zip(deduped, dedupe_stats) if s["eligible"]]
    split = [remote(split_ranges).options(num_returns=len(starts)).remote(d[1], strata, starts)
             for d, _ in with_rows]
    if len(starts) == 1:
        split = [[s] for s in split]
    ranked = [remote(rank_range).options(num_returns=2 + parts).remote(
        offsets[r], cuts, rcfg.unit, parts, *[s[r] for s in split])
        for r in range(len(starts))] if split else []
    chosen_stats = ray.get([r[1] for r in ranked])
    log.info("%d eligible segments ranked in %d ranges: %.1fs", eligible, len(ranked),
             time.monotonic() - t0)
    selected = [[r[2 + c] for r, s in zip(ranked, chosen_stats) if s["code_rows"][c]]
                for c in range(parts)]

    strata_summary = {}
    for name in sorted(totals):
        n, seconds = totals[name]
        picked = [s["strata"][name] for s in chosen_stats if name in s["strata"]]
        strata_summary[name] = {
            "eligible": n, "selected": sum(p[0] for p in picked),
            "threshold_score": min(p[2] for p in picked) if picked else None,
            "eligible_hours": round(seconds / 3600, 6),
            "selected_hours": round(sum(p[1] for p in picked) / 3600, 6)}
    gates: dict[str, int] = {}
    for s in dedupe_stats:
        for gate, n in s["gates"].items():
            gates[gate] = gates.get(gate, 0) + n
    summary = {
        "fraction": rcfg.fraction, "unit": rcfg.unit,
        "stratify_by": ["content_type", *rcfg.stratify_by],
        "segments_in_view": rows,
        "eligible": eligible,
        "duplicates": sum(s["duplicates"] for s in dedupe_stats),
        "not_eligible_by_gate": dict(sorted(gates.items())),
        "selected": sum(s["selected"] for s in strata_summary.values()),
        "selected_hours": round(sum(p[1] for s in chosen_stats for p in s["strata"].values())
                                / 3600, 6),
        "selected_by_split": {split: sum(s["by_split"].get(split, 0) for s in chosen_stats)
                              for split in ("train", "validation", "test")},
        "strata": strata_summary,
    }
    others = [d[2] for d, s in zip(deduped, dedupe_stats) if s["other"]]
    return Chosen(summary, view, selected, [r[0] for r in ranked], others, cfg.storage,
                  layout.release(release_id))


def collect_view(cfg, store: ObjectStore, layout: Layout) -> pa.Table:
    """The whole dataset view (VIEW_SCHEMA, not scored) in one table: for tests and the scale
    benchmark's reference check only (a release never gathers it)."""
    import ray

    from pipeline.ledger import read_snapshot

    snapshot = read_snapshot(store, layout, cfg.run.ledger_buckets)
    takedowns = _takedowns_by_bucket(store, cfg, snapshot.buckets)
    task = ray.remote(_view_of_bucket)
    return pa.concat_tables(ray.get([task.remote(cfg.storage, layout.root, snapshot, b,
                                                 takedowns[b])
                                     for b in range(snapshot.buckets)]))


def _view_of_bucket(storage: StorageConfig, output_uri: str, snapshot: Snapshot, bucket: int,
                    takedowns: list[str]) -> pa.Table:
    return bucket_view(ObjectStore(storage, reached=True), Layout(output_uri), snapshot, bucket,
                       set(takedowns))[0]
