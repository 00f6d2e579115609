"""Arrow schemas of the tables the pipeline publishes, and of the rows that flow between stages.

`annotations` has one row per segment (kept or dropped, with every score); `rejects` has one row
per recording that yielded no segment. Every listed input object is in exactly one of the two.
Bump SCHEMA_VERSION on any change a reader could notice; it is written into the Parquet metadata.
"""
from __future__ import annotations

import pyarrow as pa

from schemas.captions import PROVENANCE_KEYS

SCHEMA_VERSION = "9"  # 2: several ASR systems, agreement, hallucination flags;
                      # 3: signal measures, acoustic events, speakers; 4: captions;
                      # 5: audio_sha256 (exact duplicates across keys);
                      # 6: caption_provenance (measured / heard / inferred / unknown per field)
                      # 7: asr_agreement is independent support (asr_support, asr_dissent);
                      #    levels on the source channels, source_out_of_range_samples
                      # 8: speaker gender from pitch per speaker; scene/environment from the
                      #    evidence; grounding check of descriptions (caption_grounding)
                      # 9: drop_reason low_snr_speech; pitch of telephone-band speech from its
                      #    envelope (operators/pitch.py)
PIPELINE_RATE_HZ = 16000  # every stage sees mono float32 audio at this rate

# --- columns shared by every row that flows through the DAG: which object it came from --------
SOURCE_FIELDS = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("recording_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("source_etag", pa.string(), nullable=False),
    pa.field("source_version_id", pa.string()),
    pa.field("source_bytes", pa.int64(), nullable=False),
]
LISTING_SCHEMA = pa.schema(SOURCE_FIELDS)
# Internal: which partition of the run (schemas/layout.py) a row belongs to; never published.
PARTITION_FIELD = pa.field("partition", pa.string())

# --- what decoding learns about a recording ----------------------------------------------------
RECORDING_FIELDS = [
    pa.field("source_container", pa.string()),
    pa.field("source_codec", pa.string()),
    pa.field("source_sample_rate", pa.int32()),
    pa.field("source_channels", pa.int32()),
    pa.field("recording_duration_s", pa.float64()),
    pa.field("source_nonfinite_samples", pa.int64()),  # NaN/inf samples, decoded as 0
    # finite float samples beyond full scale (a float WAV can hold up to 3.4e38), clipped to it
    pa.field("source_out_of_range_samples", pa.int64()),
]
# Per 0.5 s window of the audio at its native rate: (edge_hz, level_db) float32 pairs. Bandwidth
# must be measured before resampling; this small track is what survives of the native audio.
# Internal: the measures stage consumes it.
NATIVE_TRACK_FIELD = pa.field("native_bandwidth_track", pa.large_binary())
# Internal: per 100 ms block, peak, clipped samples and BS.1770 power of the source channels
# (operators/levels.py); the segmenter cuts each segment's piece, the measures stage reads it.
LEVEL_TRACK_FIELD = pa.field("source_level_track", pa.large_binary())

# --- a recording's fate when it yields no segment ---------------------------------------------
REJECT_FIELDS = [
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
]

# --- one segment of a recording (VAD) ----------------------------------------------------------
SEGMENT_FIELDS = [
    pa.field("segment_id", pa.string()),
    pa.field("segment_index", pa.int32()),
    pa.field("content_type", pa.string()),  # speech | music | sound (VAD, refined by the tagger)
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("duration_s", pa.float64()),
    pa.field("start_sample", pa.int64()),  # at PIPELINE_RATE_HZ, end exclusive
    pa.field("end_sample", pa.int64()),
    pa.field("speech_prob_mean", pa.float32()),
    pa.field("rms_dbfs", pa.float32()),
    pa.field("vad_model", pa.string()),
    pa.field("audio_sha256", pa.string()),  # of the decoded 16 kHz float32 samples: exact copies
]

# --- signal measures (operators/measures.py) ----------------------------------------------------
MEASURE_FIELDS = [
    pa.field("snr_db", pa.float32()),           # loud frames vs. the quietest 10% of 20 ms frames
    pa.field("loudness_lufs", pa.float32()),    # ITU-R BS.1770 integrated; null under 0.4 s
    pa.field("peak_dbfs", pa.float32()),
    pa.field("clipped_ratio", pa.float32()),    # share of samples at or above measures.clip_level
    pa.field("dc_offset", pa.float32()),        # mean sample value (removed from the audio after)
    pa.field("bandwidth_hz", pa.float32()),     # effective bandwidth at the native sample rate
    pa.field("pitch_mean_hz", pa.float32()),    # WORLD (DIO) over voiced frames; speech only
    pa.field("pitch_std_hz", pa.float32()),
    pa.field("voiced_fraction", pa.float32()),
]

# --- acoustic events over the AudioSet ontology (operators/events.py) -------------------------
EVENT_LABEL_TYPE = pa.struct([
    pa.field("mid", pa.string()),        # AudioSet id, e.g. /m/0bt9lr
    pa.field("name", pa.string()),       # e.g. Dog
    pa.field("score", pa.float32()),     # mean over the segment's frames
])
EVENT_FIELDS = [
    pa.field("vad_content_type", pa.string()),     # speech | sound, before the tagger refined it
    pa.field("event_labels", pa.list_(EVENT_LABEL_TYPE)),  # top-k, best first
    pa.field("speech_fraction", pa.float32()),     # share of tagger frames with speech
    pa.field("music_fraction", pa.float32()),      # ... with music
    pa.field("noise_fraction", pa.float32()),      # ... with neither (other sound)
    pa.field("speech_music_fraction", pa.float32()),  # ... with speech over music
    pa.field("event_frames", pa.int32()),
    pa.field("event_model", pa.string()),
]

# --- speakers (operators/speakers.py) ------------------------------------------------------------
SPEAKER_FIELDS = [
    pa.field("speaker_count", pa.int32()),             # distinct speakers in the segment
    pa.field("speaker_ids", pa.list_(pa.string())),    # ids consistent within the recording,
                                                       # most talk time first
    pa.field("recording_speaker_count", pa.int32()),
    # per speaker of speaker_ids: median f0 over that speaker's windows in the whole recording,
    # and the gender it gives (operators/voice.py; "unknown" below its confidence)
    pa.field("speaker_f0_hz", pa.list_(pa.float32())),
    pa.field("speaker_genders", pa.list_(pa.string())),
    pa.field("speaker_gender_confidence", pa.list_(pa.float32())),
    pa.field("speaker_model", pa.string()),
]
# Internal: one embedding per window, from the embedding stage to the clustering step.
SPEAKER_EMBEDDINGS_FIELD = pa.field("speaker_embeddings", pa.list_(pa.list_(pa.float32())))
# Internal, aligned with the embeddings: per window, median voiced f0 (null: none voiced), voiced
# frames and all frames.
SPEAKER_WINDOW_PITCH_FIELD = pa.field("speaker_window_pitch", pa.list_(pa.list_(pa.float32())))

# --- captions (operators/caption.py; the record itself is schemas/captions.py) ----------------
CAPTION_SPEAKER_TYPE = pa.struct([
    pa.field("gender", pa.string()),
    pa.field("age_group", pa.string()),
    pa.field("emotion", pa.string()),
    pa.field("speaking_style", pa.string()),
])
# Per caption field, where its value came from (schemas/provenance.py): one struct field per
# key of schemas/captions.py PROVENANCE_KEYS, e.g. caption_provenance.scene = 'inferred'.
CAPTION_PROVENANCE_TYPE = pa.struct([pa.field(k, pa.string()) for k in PROVENANCE_KEYS])
CAPTION_FIELDS = [
    pa.field("caption_source", pa.string()),     # audio_model (heard the clip) | text_features
    pa.field("caption_model", pa.string()),
    pa.field("caption_scene", pa.string()),
    pa.field("caption_environment", pa.string()),
    pa.field("caption_emotion", pa.string()),
    pa.field("caption_content_type", pa.string()),
    pa.field("caption_language", pa.string()),
    pa.field("caption_speaker_count", pa.int32()),
    pa.field("caption_speakers", pa.list_(CAPTION_SPEAKER_TYPE)),
    pa.field("caption_description", pa.string()),
    # model | template: the model's sentence, or the one composed from the facts when the
    # grounding check (operators/grounding.py) found what caption_grounding lists
    pa.field("caption_description_source", pa.string()),
    pa.field("caption_grounding", pa.list_(pa.string())),
    pa.field("caption_provenance", CAPTION_PROVENANCE_TYPE),
    pa.field("caption_unheard_fields", pa.list_(pa.string())),  # "unknown" because not heard
    pa.field("caption_flags", pa.list_(pa.string())),  # corrected:<field>, truncated, ...
    pa.field("caption_raw", pa.string()),        # the model's reply, as received
    pa.field("caption_repaired", pa.bool_()),    # the reply was not strict JSON
    pa.field("caption_errors", pa.list_(pa.string())),  # validation errors / endpoint errors
    pa.field("caption_attempts", pa.int32()),
    pa.field("caption_prompt_tokens", pa.int32()),
    pa.field("caption_completion_tokens", pa.int32()),
]

# --- transcription by several systems ---------------------------------------------------------
HYPOTHESIS_TYPE = pa.struct([
    pa.field("system", pa.string()),
    pa.field("model", pa.string()),       # registry name@version
    pa.field("text", pa.string()),
    pa.field("confidence", pa.float32()),
])
ASR_FIELDS = [
    pa.field("language", pa.string()),
    pa.field("language_prob", pa.float32()),
    pa.field("language_system", pa.string()),
    pa.field("asr_no_speech_prob", pa.float32()),
    pa.field("asr_hypotheses", pa.list_(HYPOTHESIS_TYPE)),  # every system that ran
    pa.field("asr_voters", pa.list_(pa.string())),          # systems whose text counts
    pa.field("asr_voter_count", pa.int32()),
]

# --- agreement between the systems, and the selected transcript -------------------------------
AGREEMENT_FIELDS = [
    pa.field("transcript", pa.string()),             # the selected hypothesis, as written
    pa.field("transcript_normalized", pa.string()),  # the form the systems were compared in
    pa.field("transcript_system", pa.string()),
    pa.field("asr_confidence", pa.float32()),        # the selected system's own confidence
    # [0, 1]: 1 - the error (WER, or CER) of the selected transcript's closest confirmation by
    # another model family (schema < 7: 1 - the mean pairwise error of all systems)
    pa.field("asr_agreement", pa.float32()),
    pa.field("asr_support", pa.list_(pa.string())),  # systems within the threshold of it
    pa.field("asr_dissent", pa.list_(pa.struct([     # systems further away: who, how far
        pa.field("system", pa.string()), pa.field("error", pa.float32())]))),
    pa.field("asr_pairwise_wer", pa.float32()),      # mean over pairs of voters
    pa.field("asr_pairwise_cer", pa.float32()),
    pa.field("agreement_unit", pa.string()),         # words | chars (no-space languages)
    pa.field("speaking_rate", pa.float32()),         # agreement_unit per second
]

# --- hallucination rules on the selected transcript --------------------------------------------
HALLUCINATION_FIELDS = [
    pa.field("transcript_flags", pa.list_(pa.string())),  # every rule that fired
]

# --- why a segment is not eligible for training (it keeps its row all the same) ----------------
DROP_FIELDS = [
    pa.field("drop_stage", pa.string()),
    pa.field("drop_reason", pa.string()),
    pa.field("drop_detail", pa.string()),
]

# Segment audio travels between stages as little-endian float32 PCM at PIPELINE_RATE_HZ; it is
# never published.
AUDIO_FIELD = pa.field("audio", pa.binary())
RECORDING_AUDIO_FIELD = pa.field("recording_audio", pa.large_binary())

ANNOTATIONS_SCHEMA = pa.schema(
    SOURCE_FIELDS + RECORDING_FIELDS + SEGMENT_FIELDS + MEASURE_FIELDS + EVENT_FIELDS
    + ASR_FIELDS + AGREEMENT_FIELDS + HALLUCINATION_FIELDS + SPEAKER_FIELDS + CAPTION_FIELDS
    + DROP_FIELDS
    + [pa.field("pipeline_version", pa.string(), nullable=False)]
)

# The ledger (pipeline/ledger.py): one row per source object a committed run dealt with. The
# state of a source is the row of the latest committed run that names it.
LEDGER_STATES = ("annotated", "rejected", "deleted", "takedown")
LEDGER_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("source_etag", pa.string()),           # null for a deleted source
    pa.field("source_version_id", pa.string()),
    pa.field("recording_id", pa.string()),
    pa.field("state", pa.string(), nullable=False),  # one of LEDGER_STATES
    pa.field("reason", pa.string()),                 # the reject reason, for rejected
    # What the outcome depended on (pipeline/fingerprint.py): the stage that decided it (the
    # reject stage, or the latest stage that dropped a segment; the last stage when nothing
    # was dropped) and the fingerprint of the settings up to it. Null in ledgers written before
    # they existed: such rows are not re-planned by a config change (use --reprocess).
    pa.field("settings_stage", pa.string()),
    pa.field("settings_fingerprint", pa.string()),
    pa.field("drop_reasons", pa.list_(pa.string())),  # distinct drop reasons of its segments
    pa.field("pipeline_version", pa.string()),
])

REJECTS_SCHEMA = pa.schema(
    SOURCE_FIELDS
    + [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("pipeline_version", pa.string(), nullable=False),
    ]
)


def with_metadata(schema: pa.Schema, table_name: str) -> pa.Schema:
    """The schema as published: schema_version and table name in the Parquet metadata."""
    return schema.with_metadata(
        {b"schema_version": SCHEMA_VERSION.encode(), b"table": table_name.encode()}
    )


def empty_column(field: pa.Field, length: int) -> pa.Array:
    return pa.nulls(length, type=field.type)
