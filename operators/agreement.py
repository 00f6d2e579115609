"""Agreement stage: compares the systems' hypotheses of each speech segment in text space.

For a segment with at least `agreement.min_voters` hypotheses: pairwise WER and CER of the
normalised texts, an agreement score (1 - mean pairwise error; CER for languages written without
spaces), the selected transcript (the hypothesis closest to all others), and the speaking rate.
Below `agreement.threshold` the segment gets drop_reason `asr_disagreement`; with too few voters,
`unverified` (or, with unverified_policy: penalize, it is kept with `unverified_score`).
Filtering never deletes: every segment keeps its row.
"""
from __future__ import annotations

import pyarrow as pa

from operators.base import Stage, rows_to_table, section
from operators.transcripts import agree, normalise, speaking_rate
from schemas import reasons
from schemas.config import AgreementConfig, StageResources
from schemas.tables import AGREEMENT_FIELDS, DROP_FIELDS


class AgreementStage(Stage):
    name = "agreement"
    requires = ("asr_hypotheses", "language", "duration_s", "drop_reason")
    adds = pa.schema(AGREEMENT_FIELDS + DROP_FIELDS)
    resources = StageResources(num_cpus=0.25, concurrency=1, batch_size=64)

    @classmethod
    def outcome_settings(cls, cfg):
        return section(cfg.agreement)

    def __init__(self, cfg: AgreementConfig):
        super().__init__()
        self.cfg = cfg
        self.no_space = set(cfg.no_space_languages)

    def process(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            if row["asr_hypotheses"]:
                self._one(row)
        return rows_to_table(rows, self.output_schema(batch.schema))

    def _one(self, row: dict) -> None:
        language = row["language"] or "en"
        no_space = language in self.no_space
        hyps = row["asr_hypotheses"]
        normalised = [normalise(h["text"], language, no_space) for h in hyps]
        unit = "chars" if no_space else "words"
        if len(hyps) >= 2:
            result = agree(normalised, no_space)
            chosen = result.selected
            row.update(asr_agreement=result.agreement, asr_pairwise_wer=result.mean_wer,
                       asr_pairwise_cer=result.mean_cer)
        else:
            chosen = 0
        if len(hyps) < self.cfg.min_voters:
            voters = ", ".join(h["system"] for h in hyps) or "none"
            if self.cfg.unverified_policy == "penalize":
                row["asr_agreement"] = self.cfg.unverified_score
            elif row["drop_reason"] is None:
                row["asr_agreement"] = None
                row.update(drop_stage=self.name, drop_reason=reasons.UNVERIFIED,
                           drop_detail=f"{len(hyps)} system(s) could vote ({voters}) on "
                                       f"language '{language}'; agreement.min_voters="
                                       f"{self.cfg.min_voters}")
        elif row["asr_agreement"] < self.cfg.threshold and row["drop_reason"] is None:
            row.update(drop_stage=self.name, drop_reason=reasons.ASR_DISAGREEMENT,
                       drop_detail=f"agreement {row['asr_agreement']:.2f} < "
                                   f"{self.cfg.threshold} (mean pairwise "
                                   f"{'CER' if no_space else 'WER'} between "
                                   f"{', '.join(h['system'] for h in hyps)})")
        selected = hyps[chosen]
        row.update(
            transcript=selected["text"],
            transcript_normalized=normalised[chosen],
            transcript_system=selected["system"],
            asr_confidence=selected["confidence"],
            agreement_unit=unit,
            speaking_rate=speaking_rate(normalised[chosen], row["duration_s"], no_space),
        )
