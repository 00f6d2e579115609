"""The tables and files of a release (issue 6): what the trainer, the auditors and the next
release read. One place, so the writer, the reader and the audit agree.

Layout under `<output.uri>/releases/<release_id>/`:

    selection/part-*.parquet      every segment of the dataset view with its quality columns,
                                  eligibility, duplicate link, stratum, split and `selected`
                                  (one part per block of the distributed selection)
    train/shard-*.parquet         the selected segments of each split with their codes (each
    validation/shard-*.parquet    worker writes the shards of the rows it holds)
    test/shard-*.parquet
    manifest.json                 written last: lists every shard (rows, hours, bytes, sha256),
                                  the config, model and code versions and the runs used

and codes are cached across releases under `<output.uri>/codes/<codec key>/bucket-<b>/`.
"""
from __future__ import annotations

import pyarrow as pa

from schemas.tables import CAPTION_PROVENANCE_TYPE, CAPTION_SPEAKER_TYPE

RELEASE_FORMAT = "audioverse-release/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "validation", "test")
CODE_PAD = -1  # the reader pads codes of shorter segments in a batch with this

QUALITY_FIELDS = [
    pa.field("q_agreement", pa.float32()),
    pa.field("q_confidence", pa.float32()),
    pa.field("q_snr", pa.float32()),
    pa.field("q_content", pa.float32()),
    pa.field("q_clipping", pa.float32()),
    pa.field("q_duration", pa.float32()),
    pa.field("q_caption", pa.float32()),
    pa.field("quality_score", pa.float32()),
    pa.field("quality_gate", pa.string()),       # first hard gate failed, e.g. min_snr_db
    pa.field("quality_eligible", pa.bool_()),
]

# One row per segment of the dataset view (kept or not), so an auditor can see why a segment
# was or was not selected, and re-selection can be checked against it.
SELECTION_FIELDS = [
    pa.field("run_id", pa.string()),             # the committed run whose annotation is current
    pa.field("recording_id", pa.string()),
    pa.field("segment_id", pa.string()),
    pa.field("source_uri", pa.string()),
    pa.field("source_etag", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("language", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("drop_reason", pa.string()),
    pa.field("audio_sha256", pa.string()),
    # The annotation schema version the row was read from (schemas/tables.py SCHEMA_VERSION):
    # a column added after it reads as null (e.g. audio_sha256 before 5: no duplicate check).
    pa.field("schema_version", pa.int32()),
    *QUALITY_FIELDS,
    pa.field("duplicate_of", pa.string()),       # segment id of the copy that was kept
    pa.field("stratum", pa.string()),            # e.g. "speech" or "speech/en" (stratified)
    pa.field("rank_in_stratum", pa.int32()),     # 1 = best; null when not eligible
    pa.field("split", pa.string()),              # train | validation | test (by recording)
    pa.field("selected", pa.bool_()),
]
SELECTION_SCHEMA = pa.schema(SELECTION_FIELDS)

CODES_TYPE = pa.list_(pa.list_(pa.int16()))     # [codebooks][frames]

# The code cache: one row per (segment, codec version); a release tokenizes only the rest.
CODES_CACHE_SCHEMA = pa.schema([
    pa.field("segment_id", pa.string()),
    pa.field("codec_version", pa.string()),
    pa.field("codes", CODES_TYPE),
    pa.field("num_codebooks", pa.int32()),
    pa.field("num_frames", pa.int32()),
])

SHARD_SCHEMA = pa.schema([
    pa.field("segment_id", pa.string()),
    pa.field("recording_id", pa.string()),
    pa.field("split", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("language", pa.string()),
    pa.field("transcript", pa.string()),         # the selected ASR hypothesis (speech only)
    pa.field("transcript_system", pa.string()),
    pa.field("caption_source", pa.string()),     # audio_model | text_features
    pa.field("caption_scene", pa.string()),
    pa.field("caption_environment", pa.string()),
    pa.field("caption_emotion", pa.string()),
    pa.field("caption_speaker_count", pa.int32()),
    pa.field("caption_speakers", pa.list_(CAPTION_SPEAKER_TYPE)),
    pa.field("caption_description", pa.string()),
    # where each caption field came from (measured / heard / inferred / unknown), after
    # release.caption_min_provenance: a field the release held to "unknown" says "unknown"
    pa.field("caption_provenance", CAPTION_PROVENANCE_TYPE),
    pa.field("event_tags", pa.list_(pa.string())),
    pa.field("quality_score", pa.float32()),
    pa.field("duration_s", pa.float64()),
    pa.field("codes", CODES_TYPE),               # int16 [codebooks x frames]
    pa.field("num_codebooks", pa.int32()),
    pa.field("num_frames", pa.int32()),
    pa.field("codec_name", pa.string()),
    pa.field("codec_version", pa.string()),
    pa.field("source_uri", pa.string()),
    pa.field("source_etag", pa.string()),
    pa.field("source_version_id", pa.string()),
    pa.field("start_sample", pa.int64()),        # at sample_rate; end exclusive
    pa.field("end_sample", pa.int64()),
    pa.field("sample_rate", pa.int32()),         # the rate the offsets count in (16000)
    pa.field("run_id", pa.string()),
])
