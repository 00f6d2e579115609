"""Tokenization stage (release only): selected segments -> codec codes.

Each source is read again pinned to its ETag (the audio the annotations describe, or an error),
decoded once per batch straight at the codec's rate, and cut at the segment's sample offsets
(stored at 16 kHz, scaled): `operators.decode.read_segments`, shared with the caption stage. Segments are sorted by length and cut into codec batches of at most
`batch_seconds` of audio and `max_batch_segments` clips, so padding stays small. Runs on GPU
actors where `ray.resources.tokenize.num_gpus` is set (the cluster config), on CPU locally.

A source that cannot be read any more (deleted or replaced since the run) marks its segments
with `tokenize_error`; the release leaves them out and says so. A codec whose output breaks its
frame rule stops the release (CodecMismatch): every segment's codes would be cut wrong.
"""
from __future__ import annotations


import pyarrow as pa

from operators.base import ModelStage
from schemas.config import DecodeConfig, StageResources, StorageConfig, TokenizerConfig
from schemas.release import CODES_TYPE



def codec_batches(lengths: list[int], rate: int, batch_seconds: float,
                  max_segments: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), each within the
    audio and count limits (a clip longer than the limit is a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches:
            cur = batches[-1]
            # Padded cost: every clip in the batch is as long as its first (longest) clip.
            padded = lengths[cur[0]] * (len(cur) + 1) / rate
            if len(cur) < max_segments and padded <= batch_seconds:
                cur.append(i)
                continue
        batches.append([i])
    return batches


class TokenizeStage(ModelStage):
    name = "tokenize"
    requires = ("segment_id", "source_uri", "source_etag", "start_sample", "end_sample")
    adds = pa.schema([
        pa.field("codes", CODES_TYPE),
        pa.field("num_codebooks", pa.int32()),
        pa.field("num_frames", pa.int32()),
        pa.field("codec_version", pa.string()),
        pa.field("tokenize_error", pa.string()),
    ])
    resources = StageResources(num_cpus=1.0, concurrency=1, batch_size=64)

    cfg: TokenizerConfig

    def __init__(self, cfg: TokenizerConfig, models, model_cache_dir: str,
                 storage: StorageConfig | None = None, decode_cfg: DecodeConfig | None = None):
        super().__init__(cfg, models, model_cache_dir, storage)
        self.storage = storage
        self.decode_cfg = decode_cfg or DecodeConfig()

    def setup(self) -> None:
        from model_serving.codec import AudioCodec
        from operators.storage import ObjectStore

        self.codec = AudioCodec(self.registry.resolve(self.cfg.model), self.cfg.device,
                                self.cfg.threads)
        self.store = ObjectStore(self.storage or StorageConfig(), reached=True)

    def process(self, batch: pa.Table) -> pa.Table:
        from operators.decode import read_segments

        rows = batch.to_pylist()
        # Rows that came with codes (from the release's code cache) are not tokenized again.
        todo = [i for i, row in enumerate(rows) if row.get("codes") is None]
        waves, why = read_segments(self.store, rows, todo, self.decode_cfg,
                                   self.codec.info.sample_rate)
        errors = {i: f"source unreadable: {w}" for i, w in why.items()}
        ready = [i for i in todo if i in waves]
        rate = self.codec.info.sample_rate
        for group in codec_batches([waves[i].size for i in ready], rate,
                                   self.cfg.batch_seconds, self.cfg.max_batch_segments):
            idx = [ready[g] for g in group]
            for i, codes in zip(idx, self.codec.encode([waves[i] for i in idx])):
                rows[i].update(codes=codes.tolist(), num_codebooks=codes.shape[0],
                               num_frames=codes.shape[1])
        for i, row in enumerate(rows):
            row["codec_version"] = self.codec.info.version
            row["tokenize_error"] = errors.get(i)
        return self.to_table(rows, batch)
