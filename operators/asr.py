"""ASR stage: transcribes the batch's speech segments with Whisper, many segments per model call.

Only speech segments without a drop reason are transcribed; sound segments and rejects pass
through. If a batched call fails, each segment is retried alone so that one bad segment is
marked (`asr_error`, naming the model) and the rest still get their text.
"""
from __future__ import annotations

import logging

import pyarrow as pa

from model_serving.registry import ModelRegistry
from operators.audio import from_bytes
from operators.base import Stage, rows_to_table
from schemas import reasons
from schemas.config import AsrConfig, ModelEntry, StageResources, StorageConfig
from schemas.tables import ASR_FIELDS, DROP_FIELDS

log = logging.getLogger("audioverse.stage.asr")


class AsrStage(Stage):
    name = "asr"
    uses_model = True
    requires = ("content_type", "audio", "drop_reason", "reject_reason")
    adds = pa.schema(ASR_FIELDS + DROP_FIELDS)
    # The costly stage; on a cluster, override with num_gpus and a larger pool.
    resources = StageResources(num_cpus=1.0, concurrency=1, batch_size=8)

    def __init__(self, cfg: AsrConfig, models: dict[str, ModelEntry], model_cache_dir: str,
                 storage: StorageConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.registry = ModelRegistry(models, model_cache_dir, storage)
        self.transcriber = None
        self.model_label = None

    def setup(self) -> None:
        from model_serving.whisper_ct2 import WhisperBatchTranscriber

        resolved = self.registry.resolve(self.cfg.model)
        self.transcriber = WhisperBatchTranscriber(
            resolved, device=self.cfg.device, compute_type=self.cfg.compute_type,
            cpu_threads=self.cfg.cpu_threads, language=self.cfg.language,
        )
        self.model_label = resolved.label

    def process(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        todo = [i for i, r in enumerate(rows)
                if r["reject_reason"] is None and r["content_type"] == "speech"
                and r["drop_reason"] is None]
        for start in range(0, len(todo), self.cfg.batch_size):
            chunk = todo[start:start + self.cfg.batch_size]
            self._transcribe(rows, chunk)
        return rows_to_table(rows, self.output_schema(batch.schema))

    def _transcribe(self, rows: list[dict], idx: list[int]) -> None:
        audios = [from_bytes(rows[i]["audio"]) for i in idx]
        try:
            results = self.transcriber.transcribe(audios)
        except Exception as exc:  # noqa: BLE001 - isolate the bad segment below
            if len(idx) > 1:
                log.warning("batched transcription failed (%s); retrying segments one by one", exc)
                for i in idx:
                    self._transcribe(rows, [i])
                return
            rows[idx[0]].update(asr_model=self.model_label, drop_stage=self.name,
                                drop_reason=reasons.ASR_ERROR,
                                drop_detail=f"{self.model_label} failed: {type(exc).__name__}: {exc}")
            return
        for i, result in zip(idx, results):
            row = rows[i]
            row.update(language=result.language, language_prob=result.language_prob,
                       transcript=result.text, asr_avg_logprob=result.avg_logprob,
                       asr_no_speech_prob=result.no_speech_prob, asr_model=self.model_label)
            if not result.text:
                row.update(drop_stage=self.name, drop_reason=reasons.EMPTY_TRANSCRIPT,
                           drop_detail=f"{self.model_label} heard no words in a speech segment")
