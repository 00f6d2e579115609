"""Config dataclasses. YAML is parsed into these strictly (pipeline/config.py): an unknown or
mistyped key is an error that names it. Defaults are the embedded local setup's."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None,
            one_of: tuple | None = None) -> Any:
    """A field with the range or the set of values it must be in; pipeline/config.py checks
    every field at load (besides: every float finite, no bool where a number is declared), so
    a value that would crash or mislead a run is a config error that names its key."""
    rule = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("one_of", one_of))
            if v is not None}
    return field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class StorageConfig:
    """How to reach S3. Unset values come from the standard AWS environment variables
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), as on a cluster."""

    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    access_key_id: Optional[str] = None
    secret_access_key: Optional[str] = None
    max_attempts: int = bounded(5, ge=1)  # per request, with botocore's adaptive backoff
    connect_timeout_s: float = bounded(5.0, gt=0)
    read_timeout_s: float = bounded(60.0, gt=0)
    # On top of botocore's attempts: transient failures (503 SlowDown, 5xx, resets, a server
    # restarting) are retried with backoff for this long before the run gives up on a request.
    retry_window_s: float = bounded(120.0, ge=0)


SIDECAR_EXTENSIONS = (".txt", ".json", ".jsonl", ".csv", ".tsv", ".md", ".xml", ".yaml", ".yml",
                      ".srt", ".vtt", ".lab", ".pdf", ".html", ".jpg", ".jpeg", ".png", ".gif",
                      ".webp", ".bmp", ".svg", ".parquet", ".zip", ".gz", ".tar", ".md5",
                      ".sha256")


@dataclass(frozen=True)
class InputConfig:
    uri: str                       # s3://bucket/prefix/ holding the raw recordings
    # Whether an object is audio is decided by its content, not its name. Objects with these
    # extensions are read whole and decoded; any other object not skipped below is probed first
    # (its first probe_bytes must open as an audio container) and then decoded the same way.
    extensions: list[str] = field(
        default_factory=lambda: [".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a"]
    )
    # Sidecars that are never audio: rejected unread as unsupported_extension.
    skip_extensions: list[str] = field(default_factory=lambda: list(SIDECAR_EXTENSIONS))
    probe_bytes: int = bounded(256 * 1024, ge=1024)
    # larger objects are rejected without a download
    max_object_bytes: int = bounded(2 * 1024**3, ge=1)
    limit: Optional[int] = bounded(None, ge=1)  # process only the first N objects (sorted by key)
    # An S3 object listing sources to take down, one per line (s3:// URI, or a key relative to
    # `uri`; `#` starts a comment). Listed sources are not processed, and releases leave them out.
    takedown_uri: Optional[str] = None


@dataclass(frozen=True)
class OutputConfig:
    uri: str                       # s3://bucket/prefix/ under which runs/<run_id>/ is written
    rows_per_file: int = bounded(100_000, ge=1)


@dataclass(frozen=True)
class DecodeConfig:
    max_duration_s: float = bounded(4 * 3600.0, gt=0)
    # a recording whose peak is below this is digital silence
    silence_peak_dbfs: float = bounded(-90.0, ge=-200, le=0)
    # below this share of the declared duration: truncated
    min_decoded_fraction: float = bounded(0.9, gt=0, le=1)


@dataclass(frozen=True)
class SegmentConfig:
    vad_model: str = "vad/silero-v6"
    threshold: float = bounded(0.5, gt=0, lt=1)  # Silero speech probability that starts speech
    min_silence_s: float = bounded(0.3, ge=0)  # pause that ends a speech region
    speech_pad_s: float = bounded(0.2, ge=0)
    merge_gap_s: float = bounded(0.6, ge=0)  # neighbouring speech regions closer than this merge...
    target_s: float = bounded(12.0, gt=0)  # ...while the merged segment stays under this
    min_speech_s: float = bounded(1.0, ge=0)  # shorter speech segments get drop_reason too_short
    # longer regions are split (Whisper hears 30 s at most)
    max_speech_s: float = bounded(28.0, gt=0, le=30)
    min_sound_s: float = bounded(1.0, ge=0)  # non-speech regions shorter than this are discarded
    # non-speech regions quieter than this are near-silence
    sound_floor_dbfs: float = bounded(-45.0, ge=-200, le=0)
    max_sound_s: float = bounded(30.0, gt=0)


@dataclass(frozen=True)
class AsrSystemConfig:
    name: str                            # how the system is named in the tables
    model: str                           # registry entry; its `family` picks the adapter
    compute_type: str = "int8"
    device: str = bounded("cpu", one_of=("cpu", "cuda", "auto"))
    cpu_threads: int = bounded(1, ge=1)
    timeout_s: float = bounded(300.0, gt=0)  # one model call; past this its segments are marked


def _default_asr_systems() -> list[AsrSystemConfig]:
    return [
        AsrSystemConfig(name="whisper-base", model="asr/whisper-base", cpu_threads=2),
        AsrSystemConfig(name="whisper-tiny-en", model="asr/whisper-tiny-en", cpu_threads=2),
        AsrSystemConfig(name="moonshine-base-en", model="asr/moonshine-base-en"),
    ]


@dataclass(frozen=True)
class AsrConfig:
    """Several independent recognisers. The first system that detects language sets each
    segment's language; a system that does not support it is not run on that segment. The
    order is also the tie-break order when choosing the selected transcript."""

    systems: list[AsrSystemConfig] = field(default_factory=_default_asr_systems)
    batch_size: int = bounded(8, ge=1)  # segments per model call
    language: Optional[str] = None       # None: detect per segment


@dataclass(frozen=True)
class AgreementConfig:
    min_voters: int = bounded(2, ge=1)  # systems that must transcribe a segment to score it
    # Model families (registry `family`; Whisper sizes are one) that must write the selected
    # transcript within the threshold; a system of the same family never confirms it.
    min_families: int = bounded(2, ge=1)
    # drop: drop_reason unverified; penalize: keep it with unverified_score as its agreement
    unverified_policy: str = bounded("drop", one_of=("drop", "penalize"))
    unverified_score: float = bounded(0.5, ge=0, le=1)
    # agreement (1 - the error of the selected transcript's closest confirmation from another
    # family) below this: drop_reason asr_disagreement
    threshold: float = bounded(0.6, ge=0, le=1)
    # Compared by characters (CER), not words: languages written without spaces.
    no_space_languages: list[str] = field(
        default_factory=lambda: ["zh", "ja", "th", "lo", "km", "my", "yue", "bo"])


@dataclass(frozen=True)
class HallucinationConfig:
    max_ngram_repeats: int = bounded(4, ge=2)  # the same 1-3 word n-gram this many times in a row
    max_chars_per_s: float = bounded(25.0, gt=0)  # more text per second than anyone speaks
    min_chars_per_s: float = bounded(1.5, ge=0)  # ...or far too little, on segments of at least
    min_duration_for_rate_s: float = bounded(3.0, ge=0)  # this length
    max_word_chars: int = bounded(30, ge=1)  # a "word" longer than this is garbage
    max_words_per_s: float = bounded(6.5, gt=0)
    min_words_per_s: float = bounded(0.25, ge=0)
    # empty text on speech this clear is a failure
    clear_speech_prob: float = bounded(0.7, ge=0, le=1)


@dataclass(frozen=True)
class MeasuresConfig:
    clip_level: float = bounded(0.99, gt=0, le=1)  # |sample| at or above this counts as clipped
    # more clipped samples than this: drop_reason clipping
    max_clipped_ratio: float = bounded(0.01, ge=0, le=1)
    pitch: bool = True                   # WORLD pitch on speech segments (~140x real time)
    pitch_fmin_hz: float = bounded(60.0, gt=0)
    pitch_fmax_hz: float = bounded(500.0, gt=0, le=2000)
    # bands this far below the loudest band count as empty
    bandwidth_floor_db: float = bounded(60.0, gt=0)
    # Speech measured under this SNR is dropped as low_snr_speech before any model runs: under
    # that much noise the recognisers share their errors, which agreement cannot see (make
    # bench-labels). null: no gate.
    min_speech_snr_db: Optional[float] = bounded(15.0, ge=-10, le=100)


@dataclass(frozen=True)
class EventsConfig:
    model: str = "events/yamnet"         # registry entry of an AudioSet tagger
    top_k: int = bounded(5, ge=1)
    # a frame has speech (music) if a speech (music) class scores at least this
    frame_threshold: float = bounded(0.3, gt=0, lt=1)
    # music in this share of frames: content type music
    music_share: float = bounded(0.5, gt=0, le=1)
    cpu_threads: int = bounded(1, ge=1)
    device: str = bounded("cpu", one_of=("cpu", "cuda"))  # cuda: torch taggers (PANNs) on the GPU


@dataclass(frozen=True)
class SpeakersConfig:
    model: str = "speakers/resemblyzer"  # registry entry of a speaker encoder
    hop_s: float = bounded(0.4, ge=0.1, le=1.6)  # one embedding per model window (1.6 s) every hop
    min_segment_s: float = bounded(0.8, ge=0)  # shorter speech segments get no speaker (null)
    # average cosine distance that separates two speakers
    distance_threshold: float = bounded(0.38, gt=0, lt=2)
    # fewer windows than this, or under this share of the
    min_speaker_windows: int = bounded(2, ge=1)
    # recording's windows: not a speaker of its own
    min_speaker_share: float = bounded(0.1, ge=0, lt=1)
    cpu_threads: int = bounded(1, ge=1)


@dataclass(frozen=True)
class CaptionEndpointConfig:
    """An OpenAI-compatible chat-completions endpoint. With `url` unset, the run starts the
    embedded server (`caption.local_server`) on loopback and stops it at the end."""

    url: Optional[str] = None            # e.g. http://captioner:8000/v1 (vLLM, Ray Serve LLM)
    model: str = "smollm2-135m"          # the model id the endpoint serves
    api_key_env: Optional[str] = None    # environment variable holding the bearer token
    hears_audio: bool = False            # true for an audio-LLM: the segment audio is sent


@dataclass(frozen=True)
class LocalLlmConfig:
    model: str = "caption/smollm2-135m"  # registry entry of a GGUF file
    threads: int = bounded(2, ge=1)
    context_tokens: int = bounded(2048, ge=256)
    startup_timeout_s: float = bounded(60.0, gt=0)


@dataclass(frozen=True)
class CaptionConfig:
    enabled: bool = True
    endpoint: CaptionEndpointConfig = field(default_factory=CaptionEndpointConfig)
    local_server: LocalLlmConfig = field(default_factory=LocalLlmConfig)
    constrained: bool = True             # send the JSON schema as response_format
    max_tokens: int = bounded(320, ge=16)  # a caption is ~150 tokens; a looping model stops here
    seed: int = bounded(0, ge=0)  # decoding is greedy; the seed is for servers that sample
    concurrency: int = bounded(2, ge=1)  # requests in flight per caption worker
    timeout_s: float = bounded(60.0, gt=0)  # per socket operation of one request
    max_attempts: int = bounded(4, ge=1)  # per request, with exponential backoff and jitter
    backoff_base_s: float = bounded(0.5, ge=0)
    backoff_max_s: float = bounded(8.0, ge=0)
    breaker_failures: int = bounded(8, ge=1)  # failed attempts in a row that stop the run
    max_transcript_chars: int = bounded(1000, ge=1)


def _default_weights() -> dict[str, dict[str, float]]:
    return {
        "speech": {"agreement": 0.30, "confidence": 0.15, "snr": 0.20, "content": 0.10,
                   "clipping": 0.10, "duration": 0.10, "caption": 0.05},
        "music": {"snr": 0.35, "content": 0.30, "clipping": 0.15, "duration": 0.10,
                  "caption": 0.10},
        "sound": {"snr": 0.35, "content": 0.30, "clipping": 0.15, "duration": 0.10,
                  "caption": 0.10},
    }


def _default_durations() -> dict[str, list[float]]:
    # [hard min, ideal from, ideal to, hard max] seconds: 1 inside the ideal range, falling
    # linearly to 0 at the hard limits.
    return {"speech": [1.0, 3.0, 20.0, 30.0], "music": [1.0, 5.0, 30.0, 60.0],
            "sound": [0.5, 2.0, 15.0, 30.0]}


@dataclass(frozen=True)
class QualityConfig:
    """Quality score (operators/quality.py): weights per content type, ramps, hard gates.
    A release scores the dataset view with these; changing them needs no re-inference."""

    weights: dict[str, dict[str, float]] = field(default_factory=_default_weights)
    durations: dict[str, list[float]] = field(default_factory=_default_durations)
    snr_floor_db: float = 5.0            # snr component 0 here...
    snr_good_db: float = 30.0            # ...and 1 from here
    # clipped_ratio at which the clipping component is 0
    clip_tolerance: float = bounded(0.01, gt=0, le=1)
    # a valid caption the measurements had to correct
    corrected_caption: float = bounded(0.75, ge=0, le=1)
    # The caption component is also scaled by how its scene, environment and description were
    # obtained (schemas/provenance.py): measured or heard count 1, inferred (a text model that
    # never heard the audio) this much, unknown 0; their mean is the factor.
    inferred_caption_credit: float = bounded(0.6, ge=0, le=1)
    # Hard gates: below these a segment is not eligible, whatever its score.
    min_snr_db: Optional[float] = 3.0
    min_agreement: Optional[float] = bounded(0.6, ge=0, le=1)  # speech only
    min_duration_s: Optional[float] = bounded(1.0, ge=0)


@dataclass(frozen=True)
class SplitConfig:
    """Split by recording: a hash of the source key (not its ETag, so a re-upload stays in
    its split) against these shares; the rest is train."""

    validation: float = bounded(0.05, ge=0, lt=1)
    test: float = bounded(0.05, ge=0, lt=1)
    salt: str = "audioverse-split-v1"    # changing it reshuffles every recording: don't


@dataclass(frozen=True)
class TokenizerConfig:
    model: str = "tokenizer/mimi-seeded" # registry entry of a transformers audio codec
    # cuda on GPU workers (ray.resources.tokenize.num_gpus)
    device: str = bounded("cpu", one_of=("cpu", "cuda"))
    batch_seconds: float = bounded(60.0, gt=0)  # audio per codec call; segments batched by length
    max_batch_segments: int = bounded(16, ge=1)
    threads: int = bounded(1, ge=1)


@dataclass(frozen=True)
class ShardConfig:
    target_mb: float = bounded(128.0, gt=0)  # a shard is closed once its codes reach this size
    # small row groups: a reader streams without whole files
    row_group_rows: int = bounded(128, ge=1)


@dataclass(frozen=True)
class ReleaseConfig:
    """`audioverse release`: select the top fraction of the dataset view, tokenize, shard."""

    fraction: float = bounded(0.10, gt=0, le=1)  # of eligible segments per stratum
    # segments | hours: what the fraction counts
    unit: str = bounded("segments", one_of=("segments", "hours"))
    stratify_by: list[str] = field(default_factory=list)  # e.g. [language]; content type
                                                          # is always a stratum
    content_types: list[str] = field(default_factory=lambda: ["speech", "music", "sound"])
    dedupe: bool = True                  # keep one copy of exactly equal decoded audio
    # Caption fields whose provenance ranks below this (unknown < inferred < heard < measured)
    # ship as "unknown" (a description as null): `heard` keeps no text model's guess.
    caption_min_provenance: str = bounded("inferred", one_of=("unknown", "inferred", "heard",
                                                              "measured"))
    quality: QualityConfig = field(default_factory=QualityConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)


@dataclass(frozen=True)
class StageResources:
    num_cpus: float = bounded(1.0, ge=0)
    num_gpus: float = bounded(0.0, ge=0)
    concurrency: int = bounded(1, ge=1)  # actor pool size (or parallel tasks for stateless stages)
    # Rows per call of the release's tokenizer; a night's stages take a whole partition a call.
    batch_size: int = bounded(1, ge=1)
    # Custom Ray resources the stage's workers need, e.g. {worker_node: 0.01}: what steers a
    # stage onto a pool of nodes that declare that resource.
    resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StageResourcesOverride:
    """`ray.resources.<stage>` in the config: only the fields given replace the stage's own."""

    num_cpus: Optional[float] = bounded(None, ge=0)
    num_gpus: Optional[float] = bounded(None, ge=0)
    concurrency: Optional[int] = bounded(None, ge=1)
    batch_size: Optional[int] = bounded(None, ge=1)
    resources: Optional[dict[str, float]] = None

    def apply(self, base: StageResources) -> StageResources:
        given = {k: v for k, v in self.__dict__.items() if v is not None}
        return StageResources(**{**base.__dict__, **given})


@dataclass(frozen=True)
class RayConfig:
    address: Optional[str] = None        # None: start a local runtime; "auto": join a cluster
    # logical CPUs of a local runtime (above the physical count, so actor pools cannot starve
    # the read tasks)
    num_cpus: Optional[int] = bounded(6, ge=1)
    object_store_mb: int = bounded(1024, ge=75)
    progress_bars: bool = False
    # Per-stage overrides of the resources each stage class declares (operators/*.py).
    resources: dict[str, StageResourcesOverride] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    # more rejected inputs than this share: exit code 4
    max_failed_fraction: float = bounded(0.5, ge=0, le=1)
    log_level: str = bounded("INFO", one_of=("DEBUG", "INFO", "WARNING", "ERROR"))
    progress_interval_s: float = bounded(10.0, gt=0)
    # The run lock (<output.uri>/_lock/run.json): renewed every lock_ttl_s / 3 by a live run; a
    # lock not renewed for lock_ttl_s belongs to a dead run and is taken over.
    lock_ttl_s: float = bounded(600.0, ge=10)
    # A night's objects go through the DAG in partitions: each goes through every stage as one
    # block and is written, and marked done, by itself, so a run that dies resumes (same
    # --run-id) without its finished partitions. A partition holds at most this many objects
    # and this many bytes of them (its decoded audio sits in memory while it is processed).
    partition_objects: int = bounded(8, ge=1)
    partition_bytes: int = bounded(256 * 1024**2, ge=1)
    # The ledger snapshot's bucket count (by hash of the source URI); fixed for a dataset by its
    # first run (ledger/current.json). Planning and merging run one task per bucket.
    ledger_buckets: int = bounded(16, ge=1, le=65536)
    # A Ray worker that dies (killed, out of memory, its node lost) fails the execution; it is
    # run again for the partitions not yet done, up to this many attempts in all.
    worker_failure_attempts: int = bounded(3, ge=1)


@dataclass(frozen=True)
class ModelFile:
    sha256: str
    # For `packaged` models: where the file lies inside installed packages, as
    # "<import name>/<path>"; several parts are joined in order (weights split across packages).
    parts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelEntry:
    """A model is a name -> where its weights are + the sha256 of every file. Never a hub."""

    source: str                          # packaged | path | s3 | seeded
    version: str
    files: dict[str, ModelFile]
    location: Optional[str] = None       # the directory (path) or s3://bucket/prefix/ (s3)
    family: str = ""                     # e.g. whisper-ct2, silero-onnx; adapters dispatch on it
    # packaged models `make install` does not install: the command that does (said when missing)
    install: Optional[str] = None


@dataclass(frozen=True)
class PipelineConfig:
    input: InputConfig
    output: OutputConfig
    models: dict[str, ModelEntry]
    storage: StorageConfig = field(default_factory=StorageConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    measures: MeasuresConfig = field(default_factory=MeasuresConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    agreement: AgreementConfig = field(default_factory=AgreementConfig)
    hallucination: HallucinationConfig = field(default_factory=HallucinationConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    run: RunConfig = field(default_factory=RunConfig)
    model_cache_dir: str = "~/.cache/audioverse/models"
