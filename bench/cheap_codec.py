"""A codec for the scale benchmark only: codes made from the segment's length with no audio read,
so the release's own costs (view, selection, code cache, shards, manifest) are what is measured.
Two codebooks at one frame a second; deterministic. The real codec's throughput has its own
benchmark (`make bench-tokenize`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Stage
from operators.tokenize import TokenizeStage
from schemas.config import StageResources

CODEBOOKS = 2
FRAME_RATE = 1.0


class CheapCodec(Stage):
    """Stands in for TokenizeStage in `run_release(..., tokenizer=CheapCodec)`: the same
    arguments, the same columns; rows that came with cached codes keep them."""

    name = "tokenize"
    requires = ("segment_id", "duration_s")
    adds = TokenizeStage.adds
    resources = StageResources(num_cpus=0.5, concurrency=2, batch_size=4096)

    def __init__(self, cfg=None, models=None, model_cache_dir=None, storage=None,
                 decode_cfg=None):
        super().__init__()
        self.version = cfg.model if cfg is not None else "cheap"

    def process(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        frames = np.maximum(1, np.ceil(pc.fill_null(batch.column("duration_s"), 0.0)
                                       .to_numpy(zero_copy_only=False) * FRAME_RATE)
                            ).astype(np.int32)
        inner = np.concatenate([[0], np.cumsum(np.repeat(frames, CODEBOOKS))]).astype(np.int32)
        outer = (np.arange(n + 1) * CODEBOOKS).astype(np.int32)
        values = (np.arange(inner[-1]) % 1024).astype(np.int16)
        made = pa.ListArray.from_arrays(pa.array(outer), pa.ListArray.from_arrays(
            pa.array(inner), pa.array(values, pa.int16())))
        cached = batch.column("codes") if "codes" in batch.column_names else None
        has = pc.is_valid(cached) if cached is not None else pa.array([False] * n)
        out = batch
        for name, fresh in (("codes", made), ("num_codebooks", pa.array([CODEBOOKS] * n,
                                                                         pa.int32())),
                            ("num_frames", pa.array(frames, pa.int32()))):
            value = pc.if_else(has, batch.column(name), fresh) if cached is not None else fresh
            out = _put(out, name, value)
        out = _put(out, "codec_version", pa.array([self.version] * n, pa.string()))
        return _put(out, "tokenize_error", pa.nulls(n, pa.string()))


def _put(table: pa.Table, name: str, values) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.schema.get_field_index(name), name, values)
    return table.append_column(name, values)
