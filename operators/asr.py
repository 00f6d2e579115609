"""ASR stage: every configured system transcribes the batch's speech segments, batched.

The first system that detects language runs first and sets each segment's language; every other
system runs only on the segments whose language it supports, in that language. Per segment the
stage records every system's text and confidence (`asr_hypotheses`) and which systems voted.

A system that crashes on a batch, or runs past its `timeout_s`, is retried segment by segment,
so only the segment it fails on is marked (`asr_error`, naming the system) and the batch goes
on. Sound segments and rejects pass through.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging

import pyarrow as pa

from operators.audio import from_bytes
from operators.base import ModelStage, model_identity
from schemas import reasons
from schemas.config import AsrConfig, StageResources
from schemas.tables import ASR_FIELDS, DROP_FIELDS

log = logging.getLogger("audioverse.stage.asr")


class SystemFailed(Exception):
    pass


class _TimedSystem:
    """Runs one system's calls in a worker thread so a hung call can be abandoned."""

    def __init__(self, system, timeout_s: float):
        self.system = system
        self.timeout_s = timeout_s
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=system.name)

    def transcribe(self, audios, languages):
        future = self._pool.submit(self.system.transcribe, audios, languages)
        try:
            return future.result(timeout=self.timeout_s)
        except cf.TimeoutError:
            # The hung thread cannot be killed; leave it and give later calls a fresh one.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.system.name)
            raise SystemFailed(f"timed out after {self.timeout_s:.0f}s") from None


class AsrStage(ModelStage):
    name = "asr"
    config_section = "asr"
    requires = ("content_type", "audio", "drop_reason", "reject_reason", "segment_id")
    adds = pa.schema(ASR_FIELDS + DROP_FIELDS)
    # The costly stage; on a cluster, override with num_gpus and a larger pool.
    resources = StageResources(num_cpus=1.0, concurrency=1, batch_size=8)

    @classmethod
    def outcome_settings(cls, cfg):
        # Not cpu_threads or batch_size: they change how fast, not what is written.
        return {"language": cfg.asr.language, "systems": [
            {"name": s.name, "model": model_identity(cfg, s.model), "device": s.device,
             "compute_type": s.compute_type, "timeout_s": s.timeout_s}
            for s in cfg.asr.systems]}

    cfg: AsrConfig
    systems: list[_TimedSystem]

    def setup(self) -> None:
        from model_serving.asr_protocol import load_asr_system

        self.systems = []
        for spec in self.cfg.systems:
            system = load_asr_system(spec.name, self.registry.resolve(spec.model),
                                     device=spec.device, compute_type=spec.compute_type,
                                     cpu_threads=spec.cpu_threads)
            self.systems.append(_TimedSystem(system, spec.timeout_s))

    def process(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        todo = [i for i, r in enumerate(rows)
                if r["reject_reason"] is None and r["content_type"] == "speech"
                and r["drop_reason"] is None]
        for i in todo:
            rows[i].update(asr_hypotheses=[], asr_voters=[], language=self.cfg.language,
                           language_system="config" if self.cfg.language else None)
        detector = self._detector()
        order = [detector] + [s for s in self.systems if s is not detector]
        for timed in order:
            system = timed.system
            if timed is detector and self.cfg.language is None:
                targets = [i for i in todo if rows[i]["drop_reason"] is None]
            else:
                targets = [i for i in todo if rows[i]["drop_reason"] is None
                           and rows[i]["language"] and system.supports(rows[i]["language"])]
            for start in range(0, len(targets), self.cfg.batch_size):
                self._run(timed, rows, targets[start:start + self.cfg.batch_size],
                          detect=timed is detector and self.cfg.language is None)
        for i in todo:
            rows[i]["asr_voter_count"] = len(rows[i]["asr_voters"])
        return self.to_table(rows, batch)

    def _detector(self) -> _TimedSystem:
        for timed in self.systems:
            if timed.system.detects_language:
                return timed
        if self.cfg.language is None:
            raise ValueError("no configured ASR system detects language; set asr.language")
        return self.systems[0]

    def _run(self, timed: _TimedSystem, rows: list[dict], idx: list[int], detect: bool) -> None:
        system = timed.system
        audios = [from_bytes(rows[i]["audio"]) for i in idx]
        languages = [None if detect else rows[i]["language"] for i in idx]
        try:
            results = timed.transcribe(audios, languages)
        except Exception as exc:  # noqa: BLE001 - isolate the failing segment below
            # A crash or a timeout on a batch may be one segment's doing: retry one by one so
            # that only that segment is marked.
            if len(idx) > 1:
                log.warning("%s failed on a batch of %d (%s); retrying one by one",
                            system.name, len(idx), exc)
                for i in idx:
                    self._run(timed, rows, [i], detect)
                return
            for i in idx:
                log.warning("%s failed on %s: %s", system.name, rows[i]["segment_id"], exc)
                self.drop(rows[i], reasons.ASR_ERROR,
                          f"ASR system {system.name} ({system.model_label}) failed: "
                          f"{type(exc).__name__}: {exc}")
            return
        for i, hyp in zip(idx, results):
            row = rows[i]
            if detect:
                row.update(language=hyp.language, language_prob=hyp.language_prob,
                           language_system=system.name)
            if system.detects_language or detect:
                row["asr_no_speech_prob"] = hyp.no_speech_prob
            row["asr_hypotheses"].append({"system": system.name, "model": system.model_label,
                                          "text": hyp.text, "confidence": hyp.confidence})
            row["asr_voters"].append(system.name)
