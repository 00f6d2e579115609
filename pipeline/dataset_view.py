"""The current dataset view: the latest annotation of every live recording over all committed
runs (DESIGN.md section 2: selection is over a dataset, not a night).

- committed run: `runs/<run_id>/summary.json` exists (it is written last); its data files are
  the ones it lists, never a directory listing.
- latest: when several runs annotated the same recording (same key and ETag), the run that
  finished last wins (then the larger run id).
- live: the object is still in the input prefix with the same ETag. A deleted or replaced
  source drops out (a replaced one comes back under its new recording id once a run has
  annotated the new version).
- taken down: the source's latest ledger state is `takedown`, or it is in the takedown list
  (`input.takedown_uri`) now; it leaves the view even while the object is still there.
"""
from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.storage import ObjectStore
from pipeline.runs import committed_summaries
from schemas.layout import Layout
from pipeline.errors import ConfigError
from schemas.config import PipelineConfig
from schemas.tables import ANNOTATIONS_SCHEMA

log = logging.getLogger("audioverse.release")

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
    "caption_flags", "drop_reason",
]


@dataclass
class DatasetView:
    table: pa.Table                           # one row per segment, VIEW_COLUMNS
    runs: list[str] = field(default_factory=list)       # committed runs that contributed
    recordings: int = 0
    gone_recordings: int = 0                  # annotated, but the source is deleted/replaced
    superseded_recordings: int = 0            # annotated again by a later run
    run_models: dict = field(default_factory=dict)      # run id -> its summary's models
    committed_runs: int = 0                   # committed runs read (some may contribute nothing)
    takedown_recordings: int = 0              # annotated, but the source is taken down

    def frame(self) -> pd.DataFrame:
        """As pandas, index = row position in `table`."""
        return self.table.to_pandas()


def committed_runs(store: ObjectStore, output_uri: str) -> list[dict]:
    """Summaries of committed runs, oldest first."""
    return committed_summaries(store, Layout(output_uri))


def _read_annotations(store: ObjectStore, summary: dict) -> pa.Table:
    tables = []
    for entry in summary.get("files", {}).get("annotations", []):
        data = store.get(summary["_prefix"] + entry["path"])
        table = pq.read_table(io.BytesIO(data))
        # Older runs (an earlier schema version) lack newer columns: null there.
        cols = []
        for name in VIEW_COLUMNS:
            f = ANNOTATIONS_SCHEMA.field(name)
            cols.append(table.column(name).cast(f.type) if name in table.column_names
                        else pa.nulls(table.num_rows, f.type))
        tables.append(pa.Table.from_arrays(cols, names=VIEW_COLUMNS))
    if not tables:
        return pa.schema([ANNOTATIONS_SCHEMA.field(n) for n in VIEW_COLUMNS]).empty_table()
    return pa.concat_tables(tables)


def build_view(store: ObjectStore, cfg: PipelineConfig) -> DatasetView:
    live = {(o.uri, o.etag) for o in store.list(cfg.input.uri) if not o.key.endswith("/")}
    runs = committed_runs(store, cfg.output.uri)
    if not runs:
        raise ConfigError(f"no committed run under {cfg.output.uri.rstrip('/')}/runs/ (a run "
                          f"is committed once its summary.json exists): run `audioverse run` "
                          f"with this config first, or check output.uri")
    tables = [_read_annotations(store, summary) for summary in runs]
    owner: dict[str, int] = {}          # recording_id -> index of the latest run that has it
    source: dict[str, tuple] = {}
    runs_per_recording: Counter = Counter()
    for i, table in enumerate(tables):  # oldest first: a later run takes the recording over
        ids = table.column("recording_id").to_pylist()
        runs_per_recording.update(set(ids))
        for rid, uri, etag in zip(ids, table.column("source_uri").to_pylist(),
                                  table.column("source_etag").to_pylist()):
            owner[rid] = i
            source[rid] = (uri, etag)
    superseded = sum(1 for n in runs_per_recording.values() if n > 1)
    from pipeline.ledger import read_takedowns, sources_in_state

    taken_down = sources_in_state(store, Layout(cfg.output.uri), "takedown",
                                  cfg.run.ledger_buckets) | read_takedowns(store, cfg.input)
    listed_ids = {rid for rid, src in source.items() if src in live}
    live_ids = {rid for rid in listed_ids if source[rid][0] not in taken_down}
    parts = []
    for i, table in enumerate(tables):
        mine = [rid for rid in set(table.column("recording_id").to_pylist())
                if owner[rid] == i and rid in live_ids]
        if mine:
            parts.append(table.filter(pc.is_in(table.column("recording_id"),
                                               value_set=pa.array(sorted(mine)))))
    empty = pa.schema([ANNOTATIONS_SCHEMA.field(n) for n in VIEW_COLUMNS]).empty_table()
    table = pa.concat_tables(parts) if parts else empty
    table = table.sort_by([("recording_id", "ascending"), ("segment_index", "ascending")])
    contributing = sorted(set(table.column("run_id").to_pylist()))
    gone = len(source) - len(listed_ids)
    log.info("dataset view: %d segments of %d live recordings from %d committed runs "
             "(%d recordings gone from the source, %d taken down)", table.num_rows,
             len(live_ids), len(runs), gone, len(listed_ids) - len(live_ids))
    models = {s["run_id"]: s.get("models", {}) for s in runs if s["run_id"] in contributing}
    return DatasetView(table, contributing, len(live_ids), gone, superseded, models, len(runs),
                       len(listed_ids) - len(live_ids))
